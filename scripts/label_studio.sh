#!/usr/bin/env bash
# A throwaway Label Studio 1.23.2 on loopback, for the labelling round trip
# (tests/integration/test_label_studio.py). It cannot share dataprep's venv (it needs
# Django 5.2, numpy >= 2.2, pandas >= 2.2, pyarrow >= 24), so it gets a venv of its own,
# cached across runs; its data (SQLite database, media) lives in a fresh temp folder that
# `stop` removes.
#
#   scripts/label_studio.sh install   the venv, unless the cached one has this version (~3 min once)
#   scripts/label_studio.sh start     install, start on 127.0.0.1 with SQLite and a fixed token, wait
#                                     for the API (migrations first: ~90 s), print facts (KEY=VALUE)
#   scripts/label_studio.sh stop      stop it (its process group), remove its data folder (safe if not running)
#   scripts/label_studio.sh status    exit 0 and print facts if running, exit 3 if not
#
# Environment: DATAPREP_LABEL_STUDIO_VENV (default $HOME/.cache/dataprep/label-studio-venv),
#              DATAPREP_LABEL_STUDIO_PORT (default 18890),
#              DATAPREP_LABEL_STUDIO_TOKEN (default a fixed 40-hex test token: the server is loopback-only
#              and thrown away), DATAPREP_LABEL_STUDIO_START_TIMEOUT (seconds, default 300),
#              PYTHON (default python3.11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=1.23.2
VENV="${DATAPREP_LABEL_STUDIO_VENV:-$HOME/.cache/dataprep/label-studio-venv}"
RUN_DIR="$ROOT/.cache/label-studio"          # pid, port, data folder and log of the running server
PID_FILE="$RUN_DIR/server.pid"
DATA_FILE="$RUN_DIR/data_dir"
PORT_FILE="$RUN_DIR/port"
LOG="$RUN_DIR/server.log"
HOST=127.0.0.1
PORT="${DATAPREP_LABEL_STUDIO_PORT:-18890}"
TOKEN="${DATAPREP_LABEL_STUDIO_TOKEN:-5e1f0c2d9a7b4e3f8c6d1a2b3c4d5e6f7a8b9c0d}"
USERNAME=admin@example.com
PASSWORD=dataprep-test
START_TIMEOUT="${DATAPREP_LABEL_STUDIO_START_TIMEOUT:-300}"
STOP_TIMEOUT=30
PYTHON="${PYTHON:-python3.11}"

log() { echo "label_studio.sh: $*" >&2; }
die() { log "$*"; exit 1; }

facts() {
  [[ -s "$PORT_FILE" ]] && PORT="$(cat "$PORT_FILE")"
  cat <<FACTS
LABEL_STUDIO_URL=http://$HOST:$PORT
LABEL_STUDIO_API_KEY=$TOKEN
LABEL_STUDIO_USERNAME=$USERNAME
LABEL_STUDIO_DATA_DIR=$(cat "$DATA_FILE" 2>/dev/null || true)
LABEL_STUDIO_VERSION=$VERSION
FACTS
}

installed() {
  [[ -x "$VENV/bin/label-studio" ]] && [[ "$(cat "$VENV/.dataprep-version" 2>/dev/null)" == "$VERSION" ]]
}

cmd_install() {
  if installed; then
    log "cached: $VENV (label-studio $VERSION)"
    return
  fi
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON)"
  local t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "label-studio==$VERSION" \
    || { rm -rf "$VENV"; die "pip install label-studio==$VERSION failed"; }
  echo "$VERSION" > "$VENV/.dataprep-version"
  log "installed label-studio $VERSION in $VENV in $(( SECONDS - t0 )) s"
}

pid_alive() {
  [[ -s "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

api_up() {   # the API answers our token (not merely the port): 200 on the project list
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Token $TOKEN" \
        "http://$HOST:$PORT/api/projects/" 2>/dev/null)" == 200 ]]
}

cmd_start() {
  if pid_alive; then
    [[ -s "$PORT_FILE" ]] && PORT="$(cat "$PORT_FILE")"
    api_up || die "a server (pid $(cat "$PID_FILE")) is running but its API does not answer; stop it first"
    log "already running"; facts; return
  fi
  cmd_install
  if curl -s -o /dev/null --max-time 2 "http://$HOST:$PORT/" 2>/dev/null; then
    die "port $PORT is taken by another process (set DATAPREP_LABEL_STUDIO_PORT)"
  fi
  mkdir -p "$RUN_DIR"
  local data
  data="$(mktemp -d "${TMPDIR:-/tmp}/dataprep-label-studio.XXXXXX")"
  echo "$data" > "$DATA_FILE"
  echo "$PORT" > "$PORT_FILE"
  local t0=$SECONDS
  # Offline and quiet: no version check, no analytics, no Sentry; the legacy token so that
  # `Authorization: Token ...` works with the fixed --user-token. setsid: its own process
  # group, so that `stop` ends it and every child it started, and nothing else.
  LABEL_STUDIO_BASE_DATA_DIR="$data" LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=0 SENTRY_DSN= \
  FRONTEND_SENTRY_DSN= LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
    setsid "$VENV/bin/label-studio" start --no-browser --internal-host "$HOST" --port "$PORT" \
      --username "$USERNAME" --password "$PASSWORD" --user-token "$TOKEN" \
      >"$LOG" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  while ! api_up; do
    if ! pid_alive; then
      tail -n 20 "$LOG" >&2 || true
      die "label-studio exited before its API answered (log: $LOG)"
    fi
    if (( SECONDS - t0 > START_TIMEOUT )); then
      tail -n 20 "$LOG" >&2 || true
      cmd_stop || true
      die "the API did not answer within $START_TIMEOUT s (log: $LOG)"
    fi
    sleep 2
  done
  log "API up on http://$HOST:$PORT after $(( SECONDS - t0 )) s"
  facts
}

cmd_stop() {
  if pid_alive; then
    local pid
    pid="$(cat "$PID_FILE")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null && (( SECONDS - t0 < STOP_TIMEOUT )); do sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped (pid $pid)"
  fi
  local data
  data="$(cat "$DATA_FILE" 2>/dev/null || true)"
  if [[ -n "$data" && "$data" == */dataprep-label-studio.* && -d "$data" ]]; then
    rm -rf "$data"
  fi
  rm -f "$PID_FILE" "$DATA_FILE" "$PORT_FILE"
}

cmd_status() {
  if pid_alive && { [[ -s "$PORT_FILE" ]] && PORT="$(cat "$PORT_FILE")"; api_up; }; then
    facts
  else
    exit 3
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
