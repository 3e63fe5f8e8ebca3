#!/usr/bin/env bash
# `make test-integration`: the tests that need real services. Starts MariaDB (the shared
# metadata store) and a local Flink 1.19 cluster with the Beam 2.62.0 job server and the Python
# SDK worker pool, runs the tests against them, and stops them all at the end, even on failure;
# then report.html in headless Chromium (installed from Debian's packages), the labelling
# round trip against a Label Studio 1.23.2 of its own venv (scripts/label_studio.sh), the
# example Airflow DAG with dag.test() in Airflow's own venv (scripts/airflow.sh), its OpenLineage
# events and dataprep's in one file, dataprep's validated against ../shared/openlineage-spec,
# and a TFX 1.16 pipeline (in a venv of its own, scripts/tfx.sh) over a dataprep run's output.
# Nothing here is optional: a service that does not start fails the run.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

cleanup() {
  bash scripts/label_studio.sh stop >/dev/null 2>&1 || true
  bash scripts/flink.sh stop >/dev/null 2>&1 || true
  # the small second cluster of tests/integration/test_flink.py (SMALL), were its test killed
  DATAPREP_FLINK_INSTANCE=tm-loss DATAPREP_FLINK_REST_PORT=8091 bash scripts/flink.sh stop >/dev/null 2>&1 || true
  bash scripts/mariadb.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0

echo "== MariaDB: the end-to-end tests against a MySQL metadata store"
export DATAPREP_MYSQL_PASSWORD="${DATAPREP_MYSQL_PASSWORD:-dataprep-test}"
url=""
if bash scripts/mariadb.sh start >/tmp/dataprep-mariadb.facts; then
  url="$(grep '^MYSQL_STORE_URL=' /tmp/dataprep-mariadb.facts | cut -d= -f2-)"
  DATAPREP_TEST_STORE="$url" "$PY" -m pytest -q -p no:randomly \
    tests/test_e2e_adult.py tests/test_metadata.py::test_plain_mlmd_every_train_shard_upstream_and_input_downstream \
    tests/integration/test_mysql.py || status=1
else
  echo "MariaDB did not start"; status=1
fi

echo "== Flink: a Flink 1.19 session cluster, the Beam job server and the Python SDK worker pool"
start=$SECONDS
if bash scripts/flink.sh start; then
  # The Dawid-Skene run on Flink records into the MariaDB store started above.
  DATAPREP_TEST_STORE="$url" "$PY" -m pytest -q -p no:randomly tests/integration/test_flink.py || status=1
else
  echo "Flink did not start"; status=1
fi
echo "== Flink part: $(( SECONDS - start )) s"

echo "== Browser: report.html in headless Chromium"
if bash scripts/chromium.sh install; then
  "$PY" -m pytest -q -p no:randomly tests/integration/test_report_browser.py || status=1
else
  echo "Chromium could not be installed"; status=1
fi

echo "== Label Studio: the labelling round trip (review push, three reviewers, review pull, the next run)"
start=$SECONDS
if bash scripts/label_studio.sh start; then
  echo "== Label Studio up after $(( SECONDS - start )) s (install included, when not cached)"
  # -s: the round trip's numbers (tasks, annotations, HLP per class before/after, queue sizes) in the log
  "$PY" -m pytest -q -s -p no:randomly tests/integration/test_label_studio.py || status=1
else
  echo "Label Studio did not start"; status=1
fi
bash scripts/label_studio.sh stop || true
echo "== Label Studio part: $(( SECONDS - start )) s"

echo "== Airflow: the example DAG (examples/airflow/) with dag.test(); OpenLineage events of Airflow and dataprep, linked"
start=$SECONDS
if bash scripts/airflow.sh install; then
  "$PY" -m pytest -v -p no:randomly tests/integration/test_airflow.py || status=1
else
  echo "Airflow could not be installed"; status=1
fi
echo "== Airflow part: $(( SECONDS - start )) s"
echo "== TFX: a TFX 1.16 pipeline on LocalDagRunner (its own venv) over a dataprep run's output"
start=$SECONDS
if bash scripts/tfx.sh setup >/dev/null; then
  "$PY" -m pytest -q -p no:randomly tests/integration/test_tfx.py || status=1
else
  echo "The TFX venv could not be built (scripts/tfx.sh setup)"; status=1
fi
echo "== TFX part: $(( SECONDS - start )) s"
exit $status
