#!/usr/bin/env bash
# Apache Airflow 3 in a venv of its own, for the DAG in examples/airflow/. Airflow's requirements
# (pandas >= 2.1, pyarrow >= 14, protobuf 7, SQLAlchemy 2, ...) clash with dataprep's pinned stack,
# so it never shares dataprep's .venv: the DAG calls dataprep's own venv instead.
#
#   scripts/airflow.sh install   build the venv (idempotent: cached, rebuilt only when the pins change)
#   scripts/airflow.sh python    print the venv's python (exit 1 when it is not built)
#
# The venv: $DATAPREP_AIRFLOW_VENV, default $HOME/.cache/dataprep/airflow-venv (so CI's second run
# reuses it). It holds apache-airflow 3.3.2 and apache-airflow-providers-openlineage 2.20.3 (so
# Airflow's own task events go to the same OpenLineage transport as dataprep's), every package
# pinned by scripts/airflow-constraints.txt: Airflow's published constraints files are not
# reachable from here, so that file is pip's resolution of the two, frozen.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AIRFLOW_VERSION="3.3.2"
OPENLINEAGE_PROVIDER_VERSION="2.20.3"
CONSTRAINTS="${SCRIPT_DIR}/airflow-constraints.txt"
VENV="${DATAPREP_AIRFLOW_VENV:-${HOME}/.cache/dataprep/airflow-venv}"
STAMP="${VENV}/.dataprep-stamp"
PYTHON="${PYTHON:-python3.11}"

log() { echo "[airflow.sh] $*" >&2; }

wanted_stamp() {
  echo "airflow=${AIRFLOW_VERSION} openlineage-provider=${OPENLINEAGE_PROVIDER_VERSION} constraints=$(sha256sum "$CONSTRAINTS" | cut -c1-16)"
}

install() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(wanted_stamp)" && -x "${VENV}/bin/python" ]]; then
    log "cached: ${VENV} ($(cat "$STAMP"))"
    return 0
  fi
  local start=$SECONDS
  log "building ${VENV}: apache-airflow==${AIRFLOW_VERSION}, apache-airflow-providers-openlineage==${OPENLINEAGE_PROVIDER_VERSION}"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check "pip==24.2"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check -c "$CONSTRAINTS" \
    "apache-airflow==${AIRFLOW_VERSION}" "apache-airflow-providers-openlineage==${OPENLINEAGE_PROVIDER_VERSION}"
  "${VENV}/bin/pip" check >&2
  wanted_stamp > "$STAMP"   # written last: a venv without it is rebuilt
  log "built in $(( SECONDS - start )) s"
}

case "${1:-}" in
  install) install ;;
  python)
    if [[ ! -f "$STAMP" || ! -x "${VENV}/bin/python" ]]; then
      log "not built (scripts/airflow.sh install)"
      exit 1
    fi
    echo "${VENV}/bin/python"
    ;;
  *)
    echo "usage: scripts/airflow.sh install|python" >&2
    exit 2
    ;;
esac
