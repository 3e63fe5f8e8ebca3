#!/usr/bin/env bash
# TFX 1.16 in a venv of its own, for tests/integration/test_tfx.py: dataprep never imports TFX,
# the test drives this venv's python over a dataprep run's output.
#
#   scripts/tfx.sh setup    build the venv unless it is built from these pins already; print its python
#   scripts/tfx.sh python   print the venv's python (exit 1 when it is not built)
#   scripts/tfx.sh freeze   print the built venv's packages (to refresh scripts/tfx-constraints.txt)
#
# tfx==1.16.0 declares Requires-Python <3.11, so `tfx` and `ml-pipelines-sdk` (which holds the
# `tfx` package's __init__, types, dsl and utils: both wheels are needed) are installed with
# --no-deps --ignore-requires-python, after their dependencies were installed normally with every
# version pinned by scripts/tfx-constraints.txt (the same 1.16 stack as dataprep's constraints.txt:
# apache-beam 2.62.0, tensorflow 2.16.2, tfx-bsl 1.16.1, TFT 1.16.0, ml-metadata 1.16.0, pyarrow 10).
# The recipe is ../shared/peers/tfx/setup.sh's. About 3 minutes from a warm pip cache.
#
# The venv lives in $DATAPREP_TFX_VENV, default $HOME/.cache/dataprep/tfx-venv, so a second CI
# run on the machine reuses it; it is rebuilt when this script or the pins change.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DATAPREP_TFX_VENV:-${HOME}/.cache/dataprep/tfx-venv}"
PINS="${SCRIPT_DIR}/tfx-constraints.txt"
PYTHON="${PYTHON:-python3.11}"
TFX_VERSION="1.16.0"
STAMP="${VENV}/.dataprep-built"

log() { echo "[tfx.sh] $*" >&2; }

fingerprint() {
  cat "${BASH_SOURCE[0]}" "$PINS" | sha256sum | cut -d' ' -f1
}

built() {
  [[ -x "${VENV}/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" ]]
}

setup() {
  if built; then
    echo "${VENV}/bin/python"
    return
  fi
  log "building the TFX ${TFX_VERSION} venv in ${VENV}"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  local pip="${VENV}/bin/pip"
  "$pip" install --quiet --upgrade "pip==24.2"
  # 1) tfx 1.16.0's declared requirements (its METADATA, less ml-pipelines-sdk) and tf-keras (Keras 2,
  #    which TFT and the test's Trainer module use), every version pinned
  "$pip" install --quiet -c "$PINS" \
    "apache-beam[gcp]==2.62.0" "tensorflow==2.16.2" "tensorflow-transform==1.16.0" "tfx-bsl==1.16.1" \
    "ml-metadata==1.16.0" "pyarrow==10.0.1" "tensorflow-data-validation==1.16.1" \
    "tensorflow-model-analysis==0.47.0" "tensorflow-serving-api>=2.16,<2.17" "tensorflow-hub>=0.15,<0.16" \
    "tf-keras" "absl-py>=0.9,<2" "packaging>=22" "portpicker>=1.3.1,<2" "protobuf>=3.20.3,<5" "docker>=7,<8" \
    "google-apitools>=0.5,<1" "google-api-python-client>=1.8,<2" "jinja2>=2.7.3,<4" "typing-extensions<5" \
    "attrs>=19.3,<24" "click>=7,<9" "google-api-core<3" "google-cloud-aiplatform>=1.6.2,<2" \
    "google-cloud-bigquery>=3,<4" "grpcio>=1.28.1,<2" "keras-tuner>=1.0.4,<2,!=1.4.0,!=1.4.1" \
    "kubernetes>=10.0.1,<27" "numpy>=1.16,<2" "orjson!=3.10.7" "scipy<1.13" "scikit-learn==1.5.1" \
    "pyyaml>=6,<7"
  # 2) tfx itself and ml-pipelines-sdk, without their declared requirements (Python < 3.11)
  local dl
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' RETURN
  "$pip" download --quiet --no-deps --ignore-requires-python -d "$dl" \
    "tfx==${TFX_VERSION}" "ml-pipelines-sdk==${TFX_VERSION}"
  "$pip" install --quiet --no-deps --ignore-requires-python "$dl"/*.whl
  "$pip" check >&2 || { log "pip check failed in the TFX venv"; exit 1; }
  "${VENV}/bin/python" -c "from tfx import v1 as tfx; import tfx.version as v; assert v.__version__ == '${TFX_VERSION}', v.__version__" \
    >/dev/null 2>&1 || { log "the venv does not import tfx ${TFX_VERSION}"; exit 1; }
  fingerprint > "$STAMP"
  log "built: $("${VENV}/bin/python" -c 'import tfx.version as v; print("tfx", v.__version__)')"
  echo "${VENV}/bin/python"
}

case "${1:-}" in
  setup)
    setup
    ;;
  python)
    built || { echo "tfx.sh: the TFX venv is not built (scripts/tfx.sh setup)" >&2; exit 1; }
    echo "${VENV}/bin/python"
    ;;
  freeze)
    built || { echo "tfx.sh: the TFX venv is not built (scripts/tfx.sh setup)" >&2; exit 1; }
    "${VENV}/bin/pip" freeze --exclude tfx --exclude ml-pipelines-sdk
    ;;
  *)
    echo "usage: scripts/tfx.sh setup|python|freeze" >&2
    exit 2
    ;;
esac
