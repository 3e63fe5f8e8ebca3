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

if [ -f tests/integration/test_flink.py ]; then
  echo "== Flink: the example on a real Flink 1.19 session cluster"
  if bash scripts/flink.sh start; then
    DATAPREP_FLINK_JAR="$(bash scripts/flink.sh jar)" "$PY" -m pytest -q -s tests/integration/test_flink.py || status=1
  else
    echo "Flink did not start"; status=1
  fi
fi
exit $status
