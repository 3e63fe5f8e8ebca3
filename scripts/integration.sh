#!/usr/bin/env bash
# `make test-integration`: the tests that need real services. Starts MariaDB (the shared
# metadata store) and a local Flink cluster with the Beam job server, runs the tests
# against them, and stops both at the end, even on failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

cleanup() {
  bash scripts/flink.sh stop >/dev/null 2>&1 || true
  bash scripts/mariadb.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

status=0

echo "== MariaDB: the end-to-end tests against a MySQL metadata store"
export DATAPREP_MYSQL_PASSWORD="${DATAPREP_MYSQL_PASSWORD:-dataprep-test}"
if bash scripts/mariadb.sh start >/tmp/dataprep-mariadb.facts; then
  url="$(grep '^MYSQL_STORE_URL=' /tmp/dataprep-mariadb.facts | cut -d= -f2-)"
  DATAPREP_TEST_STORE="$url" "$PY" -m pytest -q -p no:randomly \
    tests/test_e2e_adult.py tests/test_metadata.py::test_plain_mlmd_every_train_shard_upstream_and_input_downstream \
    tests/integration/test_mysql.py || status=1
else
  echo "MariaDB did not start"; status=1
fi
bash scripts/mariadb.sh stop >/dev/null 2>&1 || true

echo "== Flink: the example on a real Flink 1.19 session cluster"
# The Beam 2.61.0 Flink job-server jar must come from Maven Central. Where Maven refuses it,
# this part is blocked (reported, not faked); DATAPREP_FLINK_STANDIN=1 opts in to a stand-in
# built from the Beam 2.62.0 runner (see scripts/flink.sh), which is not the pinned stack.
if [ "${DATAPREP_FLINK_STANDIN:-0}" = 1 ]; then export FLINK_JOB_SERVER_FALLBACK=1; fi
if setup_log="$(bash scripts/flink.sh setup 2>&1)"; then
  if bash scripts/flink.sh start; then
    DATAPREP_FLINK_JAR="$(bash scripts/flink.sh jar)" "$PY" -m pytest -q -s tests/integration/test_flink.py || status=1
  else
    echo "Flink did not start"; status=1
  fi
else
  echo "Flink: BLOCKED, not run: the job-server jar could not be fetched. Maven said:"
  printf '%s\n' "$setup_log" | grep -E "ERROR|Could not|refus" | head -5
fi
exit $status
