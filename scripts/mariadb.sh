#!/usr/bin/env bash
# Run a throwaway MariaDB server on loopback for the ML Metadata (MySQL backend)
# integration tests. No service manager: mariadbd runs as a plain background
# process whose data, socket, pid file and log live under .cache/mariadb/.
#
#   scripts/mariadb.sh start    install mariadb-server if missing, fresh data dir,
#                               start, create database + user, print facts (KEY=VALUE)
#   scripts/mariadb.sh stop     shut down, wait for exit, remove the data dir (safe if not running)
#   scripts/mariadb.sh status   exit 0 and print facts if running, exit 3 if not
#
# Environment: DATAPREP_MYSQL_PORT (default 33306),
#              DATAPREP_MYSQL_PASSWORD (default dataprep-test),
#              DATAPREP_MYSQL_COLLATION (default utf8mb4_nopad_bin; e.g. utf8mb4_general_ci
#              to mimic a stock MySQL/MariaDB install's case-insensitive names).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.cache/mariadb"
DATA_DIR="$RUN_DIR/data"
SOCK="$RUN_DIR/mysqld.sock"
# A unix socket path must fit in 107 bytes; a deep checkout gets one under /tmp.
if (( ${#SOCK} > 100 )); then
  SOCK="/tmp/dataprep-mariadb-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).sock"
fi
PORT_FILE="$RUN_DIR/port"
PID_FILE="$RUN_DIR/mysqld.pid"
LOG="$RUN_DIR/mysqld.log"

HOST=127.0.0.1
PORT="${DATAPREP_MYSQL_PORT:-33306}"
DB=mlmd
DB_USER=dataprep
PASSWORD="${DATAPREP_MYSQL_PASSWORD:-dataprep-test}"
# See the server flags in cmd_start for why these matter to ml_metadata.
COLLATION="${DATAPREP_MYSQL_COLLATION:-utf8mb4_nopad_bin}"
START_TIMEOUT=60
STOP_TIMEOUT=60

# mariadbd lives in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "mariadb.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --no-defaults everywhere: ignore /etc/mysql/*.cnf so the server is the same
# on every machine (Debian's config would otherwise set the socket/pid under /run).
admin() { mariadb-admin --no-defaults --socket="$SOCK" --user=root "$@"; }
client() { mariadb --no-defaults --socket="$SOCK" --user=root --batch; }

pid_alive() {
  local pid
  [[ -s "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE")"
  is_mariadbd "$pid"
}

# A pid from the pid file counts only if it is still a mariadbd (pids get reused).
is_mariadbd() { [[ "$1" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == mariadbd ]]; }

pinging() { [[ -S "$SOCK" ]] && admin --connect-timeout=2 ping >/dev/null 2>&1; }

facts() {
  [[ -s "$PORT_FILE" ]] && PORT="$(cat "$PORT_FILE")"  # the port it was started on
  cat <<FACTS
MYSQL_HOST=$HOST
MYSQL_PORT=$PORT
MYSQL_DATABASE=$DB
MYSQL_USER=$DB_USER
MYSQL_PASSWORD_ENV=DATAPREP_MYSQL_PASSWORD
MYSQL_SOCKET=$SOCK
MYSQL_STORE_URL=mysql://$DB_USER@$HOST:$PORT/$DB
FACTS
}

ensure_installed() {
  if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null \
     && command -v mariadb-admin >/dev/null && command -v mariadb >/dev/null; then
    return
  fi
  [[ "$(id -u)" == 0 ]] || die "mariadb-server is not installed and we are not root to apt-get it"
  log "installing mariadb-server (apt-get)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >&2
  command -v mariadbd >/dev/null || die "mariadbd still missing after apt-get install"
}

sql_quote() { # escape for a single-quoted SQL string literal
  local s="${1//\\/\\\\}"
  printf "'%s'" "${s//\'/\'\'}"
}

provision() {
  local pw; pw="$(sql_quote "$PASSWORD")"
  client <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE $COLLATION;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY $pw;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY $pw;
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY $pw;
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY $pw;
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

cmd_start() {
  ensure_installed
  mkdir -p "$RUN_DIR"
  if pinging; then
    log "already running (pid $(cat "$PID_FILE" 2>/dev/null || echo '?')); re-applying database/user"
    provision
    facts
    return
  fi
  if pid_alive; then
    die "pid $(cat "$PID_FILE") from $PID_FILE is alive but does not answer on $SOCK; run '$0 stop' first"
  fi

  rm -rf "$DATA_DIR" "$SOCK" "$SOCK.lock" "$PID_FILE" "$PORT_FILE"
  mkdir -p "$DATA_DIR"
  : >"$LOG"
  if ! mariadb-install-db --no-defaults --user=root --datadir="$DATA_DIR" \
        --auth-root-authentication-method=normal --skip-test-db >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    die "mariadb-install-db failed (log: $LOG)"
  fi

  # ml_metadata 1.16's bundled client library always connects with latin1 and has
  # no charset option, so by default every non-ASCII string is stored double-encoded
  # (mojibake to any other reader; a 100-CJK-character name overflows VARCHAR(255):
  # "Data too long for column 'name'"). --skip-character-set-client-handshake makes
  # the server ignore the client's latin1 and use utf8mb4 for the session.
  # The collation decides name uniqueness: with a stock *_ci collation MLMD names
  # 'a' and 'A' (or 'x' and 'x ') collide with AlreadyExistsError ("Duplicate entry
  # ... for key 'UniqueArtifactTypeName'") and get_artifact_type('image') returns
  # 'Image'; utf8mb4_nopad_bin compares exact bytes, as MLMD's SQLite backend does.
  # setsid + all fds redirected: the server must not hold the caller's
  # terminal or stdout pipe (e.g. facts=$(scripts/mariadb.sh start) would hang).
  setsid mariadbd --no-defaults --user=root --datadir="$DATA_DIR" \
    --socket="$SOCK" --port="$PORT" --bind-address=127.0.0.1 \
    --pid-file="$PID_FILE" --skip-name-resolve --log-error="$LOG" \
    --character-set-server=utf8mb4 --collation-server="$COLLATION" \
    --skip-character-set-client-handshake \
    </dev/null >>"$LOG" 2>&1 &
  local launcher=$!

  local deadline=$((SECONDS + START_TIMEOUT))
  until pinging; do
    if ! kill -0 "$launcher" 2>/dev/null; then
      tail -n 30 "$LOG" >&2
      die "mariadbd exited during startup (log: $LOG); is port $PORT already taken?"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 30 "$LOG" >&2
      kill "$launcher" 2>/dev/null || true
      die "mariadbd did not accept connections within ${START_TIMEOUT}s (log: $LOG)"
    fi
    sleep 0.2
  done
  echo "$PORT" >"$PORT_FILE"
  provision
  log "running: pid $(cat "$PID_FILE"), port $PORT, log $LOG"
  facts
}

wait_gone() { # pid seconds -> 0 once the process is gone
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

cmd_stop() {
  local pid=""
  [[ -s "$PID_FILE" ]] && pid="$(cat "$PID_FILE")"
  is_mariadbd "$pid" || pid=""
  local asked=0
  if pinging && admin shutdown >/dev/null 2>&1; then asked=1; fi
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    # mariadb-admin shutdown may return before the process is gone: wait for it.
    if (( ! asked )) || ! wait_gone "$pid" 30; then
      log "sending SIGTERM to pid $pid"
      kill -TERM "$pid" 2>/dev/null || true
      if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "could not stop pid $pid"
      fi
    fi
  fi
  rm -rf "$DATA_DIR" "$SOCK" "$SOCK.lock" "$PID_FILE" "$PORT_FILE"
  log "stopped"
}

cmd_status() {
  if pinging; then
    echo "running pid=$(cat "$PID_FILE" 2>/dev/null || echo '?')"
    facts
  elif pid_alive; then
    echo "unresponsive pid=$(cat "$PID_FILE") (no answer on $SOCK)"
    return 1
  else
    echo "stopped"
    return 3
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
