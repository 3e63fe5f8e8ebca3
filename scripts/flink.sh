#!/usr/bin/env bash
# Local Apache Flink 1.19 session cluster + Beam Flink job-server jar, for integration tests.
#
#   scripts/flink.sh setup    download + assemble Flink and the Beam job server (idempotent, cached)
#   scripts/flink.sh start    setup if needed, start the cluster, wait until the REST API reports slots
#   scripts/flink.sh stop     stop the cluster; safe to call when nothing runs
#   scripts/flink.sh jar      print the absolute path of the Beam job-server jar
#   scripts/flink.sh status   print the REST /overview, or "not running" (exit 1)
#
# Everything lives under <repo>/.cache/flink/. Flink is assembled from two PyPI packages
# (apache-flink wheel: bin/conf/log; apache-flink-libraries sdist: lib/opt/plugins), which are
# downloaded with pip but never installed (they pin an older Beam).
#
# Pipelines then use e.g.:
#   --runner FlinkRunner --flink_master localhost:8081 \
#   --flink_job_server_jar "$(scripts/flink.sh jar)" --environment_type LOOPBACK --parallelism 2
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"

FLINK_VERSION="1.19.3"
BEAM_VERSION="2.61.0"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JOB_SERVER_ARTIFACT="org.apache.beam:beam-runners-flink-1.19-job-server:${BEAM_VERSION}"

CACHE_DIR="${REPO_ROOT}/.cache/flink"
DL_DIR="${CACHE_DIR}/downloads"
PID_DIR="${CACHE_DIR}/pids"
FLINK_HOME_DIR="${CACHE_DIR}/flink-${FLINK_VERSION}"
FLINK_CONF="${FLINK_HOME_DIR}/conf"
STAMP="${FLINK_HOME_DIR}/.assembled"
OFFICIAL_JOB_SERVER_JAR="${CACHE_DIR}/beam-runners-flink-1.19-job-server-${BEAM_VERSION}.jar"
# The official job-server jar only, by default: if Maven Central does not serve it, setup prints
# Maven's refusal and fails. FLINK_JOB_SERVER_FALLBACK=1 opts in to a stand-in launched from the
# plain runner artifact of FLINK_FALLBACK_BEAM_VERSION (2.62.0: a newer Java runner than the 2.61.0
# Python SDK, so not the pinned stack; for experiments only, never used by CI).
JOB_SERVER_FALLBACK="${FLINK_JOB_SERVER_FALLBACK:-0}"
FALLBACK_BEAM_VERSION="${FLINK_FALLBACK_BEAM_VERSION:-2.62.0}"
FALLBACK_DIR="${CACHE_DIR}/beam-flink-1.19-job-server-${FALLBACK_BEAM_VERSION}"
FALLBACK_LAUNCHER_JAR="${FALLBACK_DIR}/beam-flink-1.19-job-server-${FALLBACK_BEAM_VERSION}-launcher.jar"

REST_PORT=8081
REST_URL="http://localhost:${REST_PORT}"
START_TIMEOUT="${FLINK_START_TIMEOUT:-90}"
WANT_TASKMANAGERS=1
WANT_SLOTS=2

log() { echo "[flink.sh] $*" >&2; }
die() { echo "[flink.sh] ERROR: $*" >&2; exit 1; }

pip_cmd() {
  if [[ -x "${REPO_ROOT}/.venv/bin/pip" ]]; then
    "${REPO_ROOT}/.venv/bin/pip" "$@"
  else
    python3 -m pip "$@"
  fi
}

python_cmd() {
  if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then
    "${REPO_ROOT}/.venv/bin/python" "$@"
  else
    python3 "$@"
  fi
}

# ---------------------------------------------------------------- setup

download_flink_packages() {
  mkdir -p "$DL_DIR"
  local wheel sdist
  wheel="$(compgen -G "${DL_DIR}/apache_flink-${FLINK_VERSION}-*.whl" | head -n1 || true)"
  if [[ -z "$wheel" ]]; then
    log "downloading apache-flink==${FLINK_VERSION} (wheel) ..."
    pip_cmd download --no-deps --no-cache-dir --disable-pip-version-check \
      --only-binary=:all: -d "$DL_DIR" "apache-flink==${FLINK_VERSION}" >&2 \
      || die "pip download apache-flink==${FLINK_VERSION} failed"
  fi
  sdist="$(compgen -G "${DL_DIR}/apache[-_]flink[-_]libraries-${FLINK_VERSION}.tar.gz" | head -n1 || true)"
  if [[ -z "$sdist" ]]; then
    log "downloading apache-flink-libraries==${FLINK_VERSION} (sdist, ~220 MB) ..."
    pip_cmd download --no-deps --no-cache-dir --disable-pip-version-check \
      --no-binary=:all: -d "$DL_DIR" "apache-flink-libraries==${FLINK_VERSION}" >&2 \
      || die "pip download apache-flink-libraries==${FLINK_VERSION} failed"
  fi
}

assemble_flink_home() {
  if [[ -f "$STAMP" ]]; then
    return 0
  fi
  download_flink_packages
  local wheel sdist work
  wheel="$(compgen -G "${DL_DIR}/apache_flink-${FLINK_VERSION}-*.whl" | head -n1 || true)"
  sdist="$(compgen -G "${DL_DIR}/apache[-_]flink[-_]libraries-${FLINK_VERSION}.tar.gz" | head -n1 || true)"
  [[ -n "$wheel" ]] || die "apache-flink wheel not found in ${DL_DIR}"
  [[ -n "$sdist" ]] || die "apache-flink-libraries sdist not found in ${DL_DIR}"

  log "assembling ${FLINK_HOME_DIR} ..."
  work="${CACHE_DIR}/assemble.tmp"
  rm -rf "$work" "$FLINK_HOME_DIR"
  mkdir -p "$work/wheel" "$work/sdist" "$work/home"

  python_cmd -m zipfile -e "$wheel" "$work/wheel"
  tar -xzf "$sdist" -C "$work/sdist"
  local pyflink deps
  pyflink="$work/wheel/pyflink"
  deps="$(find "$work/sdist" -mindepth 2 -maxdepth 2 -type d -name deps | head -n1)"
  [[ -d "$pyflink/bin" && -d "$pyflink/conf" ]] || die "wheel has no pyflink/bin or pyflink/conf"
  [[ -n "$deps" && -d "$deps/lib" ]] || die "sdist has no deps/lib"
  [[ -f "$deps/bin/bash-java-utils.jar" ]] || die "sdist has no deps/bin/bash-java-utils.jar"

  mv "$pyflink/bin" "$pyflink/conf" "$work/home/"
  if [[ -d "$pyflink/log" ]]; then mv "$pyflink/log" "$work/home/"; else mkdir -p "$work/home/log"; fi
  local d
  for d in lib opt plugins; do
    if [[ -d "$deps/$d" ]]; then mv "$deps/$d" "$work/home/"; else mkdir -p "$work/home/$d"; fi
  done
  cp "$deps/bin/bash-java-utils.jar" "$work/home/bin/"
  chmod +x "$work/home"/bin/*.sh "$work/home/bin/flink"
  cp "$work/home/conf/config.yaml" "$work/home/conf/config.yaml.orig"
  ls "$work/home/lib"/flink-dist*.jar >/dev/null 2>&1 || die "no flink-dist jar in assembled lib/"

  mv "$work/home" "$FLINK_HOME_DIR"
  rm -rf "$work"
  touch "$STAMP"
}

write_config() {
  # Flink 1.19 reads conf/config.yaml (standard YAML; flat keys are allowed). We regenerate it
  # from the pristine copy each time, keeping only the JVM --add-opens/--add-exports line
  # (needed on Java 17) from the shipped file.
  local java_opts
  java_opts="$(sed -n 's/^[[:space:]]*all:[[:space:]]*\(--add-.*\)$/\1/p' "${FLINK_CONF}/config.yaml.orig" | head -n1)"
  [[ -n "$java_opts" ]] || die "could not find env.java.opts.all in ${FLINK_CONF}/config.yaml.orig"
  mkdir -p "$PID_DIR"
  local tmp="${FLINK_CONF}/config.yaml.tmp"
  cat > "$tmp" <<EOF
# Generated by scripts/flink.sh (original: config.yaml.orig). Loopback-only local session cluster.
env.java.opts.all: ${java_opts}
env.pid.dir: ${PID_DIR}
jobmanager.bind-host: localhost
jobmanager.rpc.address: localhost
jobmanager.rpc.port: 6123
jobmanager.memory.process.size: 1024m
jobmanager.execution.failover-strategy: region
taskmanager.bind-host: localhost
taskmanager.host: localhost
taskmanager.numberOfTaskSlots: ${WANT_SLOTS}
taskmanager.memory.process.size: 3072m
# A Beam job with many shuffles needs more network buffers than the default 10% gives
# ("Insufficient number of network buffers: required 512, but only 319 available").
taskmanager.memory.network.fraction: 0.25
taskmanager.memory.network.min: 256mb
taskmanager.memory.network.max: 768mb
parallelism.default: 2
rest.address: localhost
rest.port: ${REST_PORT}
rest.bind-address: 127.0.0.1
EOF
  mv "$tmp" "${FLINK_CONF}/config.yaml"
  printf 'localhost:%s\n' "$REST_PORT" > "${FLINK_CONF}/masters"
  printf 'localhost\n' > "${FLINK_CONF}/workers"
}

official_jar_present() { [[ -s "$OFFICIAL_JOB_SERVER_JAR" ]]; }
# The stand-in counts only when opted in, even if an earlier opted-in run left it in the cache.
fallback_jar_present()  { [[ "$JOB_SERVER_FALLBACK" == 1 && -s "$FALLBACK_LAUNCHER_JAR" && -f "${FALLBACK_DIR}/.complete" ]]; }

# Path of the job-server jar in use: the official shaded jar if we have it, else the fallback.
job_server_jar() {
  if official_jar_present; then echo "$OFFICIAL_JOB_SERVER_JAR"
  elif fallback_jar_present; then echo "$FALLBACK_LAUNCHER_JAR"
  fi
}

fetch_official_job_server_jar() {
  log "fetching ${JOB_SERVER_ARTIFACT} from Maven Central ..."
  mkdir -p "$CACHE_DIR"
  local out rc=0
  # -U: do not trust a 'not found' cached in ~/.m2 by an earlier attempt.
  out="$(mvn -B -q -U "${DEP_PLUGIN}:copy" \
           -Dartifact="${JOB_SERVER_ARTIFACT}" \
           -DoutputDirectory="${CACHE_DIR}" 2>&1)" || rc=$?
  if [[ $rc -ne 0 || ! -s "$OFFICIAL_JOB_SERVER_JAR" ]]; then
    log "maven could not fetch ${JOB_SERVER_ARTIFACT} (exit ${rc}); maven said:"
    echo "$out" >&2
    return 1
  fi
}

# Fallback: the registry serves beam-runners-flink-1.19 (which contains FlinkJobServerDriver)
# but not the shaded *-job-server jar. Resolve the runner's dependencies into lib/ and write a
# small launcher jar whose manifest has Main-Class + Class-Path, so `java -jar launcher.jar`
# (what Beam's Python FlinkRunner runs) behaves like the official job-server jar.
build_fallback_job_server() {
  log "building fallback job server from org.apache.beam:beam-runners-flink-1.19:${FALLBACK_BEAM_VERSION} ..."
  rm -rf "$FALLBACK_DIR"
  mkdir -p "$FALLBACK_DIR"
  cat > "${FALLBACK_DIR}/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.flinksh</groupId>
  <artifactId>beam-flink-job-server-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-1.19</artifactId>
      <version>${FALLBACK_BEAM_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.30</version>
    </dependency>
  </dependencies>
</project>
EOF
  local out rc=0
  out="$(cd "$FALLBACK_DIR" && mvn -B -q "${DEP_PLUGIN}:copy-dependencies" \
           -DincludeScope=runtime -DoutputDirectory="${FALLBACK_DIR}/lib" 2>&1)" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "$out" >&2
    die "maven could not resolve org.apache.beam:beam-runners-flink-1.19:${FALLBACK_BEAM_VERSION} (exit ${rc})"
  fi
  python_cmd - "$FALLBACK_DIR/lib" "$FALLBACK_LAUNCHER_JAR" <<'EOF'
import os, sys, zipfile
lib, out = sys.argv[1], sys.argv[2]
jars = sorted(j for j in os.listdir(lib) if j.endswith(".jar"))
def attr(name, value):  # manifest lines are at most 72 bytes; continuation lines start with a space
    data = (name + ": " + value).encode()
    lines, first = [], True
    while data:
        n = 72 if first else 71
        lines.append((b"" if first else b" ") + data[:n])
        data, first = data[n:], False
    return b"\r\n".join(lines) + b"\r\n"
opens = " ".join("java.base/" + p for p in (
    "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.text", "java.time",
    "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks",
    "sun.nio.ch"))
mf = (attr("Manifest-Version", "1.0")
      + attr("Main-Class", "org.apache.beam.runners.flink.FlinkJobServerDriver")
      + attr("Class-Path", " ".join("lib/" + j for j in jars))
      + attr("Add-Opens", opens)
      + b"\r\n")
with zipfile.ZipFile(out + ".tmp", "w") as z:
    z.writestr("META-INF/MANIFEST.MF", mf)
os.replace(out + ".tmp", out)
EOF
  [[ -s "$FALLBACK_LAUNCHER_JAR" ]] || die "could not write ${FALLBACK_LAUNCHER_JAR}"
  touch "${FALLBACK_DIR}/.complete"
}

fetch_job_server_jar() {
  if official_jar_present; then
    return 0
  fi
  if fallback_jar_present; then
    log "note: using fallback job server (Beam ${FALLBACK_BEAM_VERSION} runner): ${FALLBACK_LAUNCHER_JAR}"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (needed to fetch ${JOB_SERVER_ARTIFACT})"
  if fetch_official_job_server_jar; then
    return 0
  fi
  if [[ "$JOB_SERVER_FALLBACK" != 1 ]]; then
    die "no job-server jar (FLINK_JOB_SERVER_FALLBACK=${JOB_SERVER_FALLBACK}, fallback disabled)"
  fi
  build_fallback_job_server
  log "WARNING: ${JOB_SERVER_ARTIFACT} is not available; using a job server built from" \
      "beam-runners-flink-1.19:${FALLBACK_BEAM_VERSION} (Java runner ${FALLBACK_BEAM_VERSION}, Python SDK ${BEAM_VERSION})"
}

is_set_up() {
  [[ -f "$STAMP" && -n "$(job_server_jar)" ]]
}

cmd_setup() {
  command -v java >/dev/null 2>&1 || [[ -n "${JAVA_HOME:-}" ]] || die "java not found (Flink 1.19 needs Java 11 or 17)"
  # The jar first: without it there is nothing to run, so don't download Flink for nothing.
  mkdir -p "$CACHE_DIR"
  fetch_job_server_jar
  assemble_flink_home
  write_config
  log "setup done: FLINK_HOME=${FLINK_HOME_DIR}"
  log "job server jar: $(job_server_jar)"
}

# ---------------------------------------------------------------- runtime

overview() {
  curl -sf --max-time 3 "${REST_URL}/overview"
}

json_int() {  # json_int KEY JSON -> integer value of "KEY":N (first match)
  sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" <<<"$2" | head -n1
}

port_in_use() {  # port_in_use PORT: something accepts TCP connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

our_pids() {
  # Java processes whose command line references our Flink home (classpath / log file).
  pgrep -f -- "java.*${FLINK_HOME_DIR}/" 2>/dev/null | grep -vx "$$" || true
}

job_server_pids() {  # leftover Beam job servers started (by a pipeline) from our cache
  pgrep -f -- "java.*-jar ${CACHE_DIR}/.*job-server" 2>/dev/null | grep -vx "$$" || true
}

pidfile_pids() {
  local f
  for f in "$PID_DIR"/flink-*.pid; do
    [[ -f "$f" ]] && cat "$f"
  done
  return 0
}

print_log_tail() {
  local f
  for f in "${FLINK_HOME_DIR}"/log/*.log "${FLINK_HOME_DIR}"/log/*.out; do
    [[ -s "$f" ]] || continue
    echo "----- tail -n 40 $f" >&2
    tail -n 40 "$f" >&2
  done
}

cmd_start() {
  if ! is_set_up; then
    cmd_setup
  else
    write_config
  fi
  local ov
  if ov="$(overview)"; then
    if [[ -n "$(our_pids)" ]]; then
      log "cluster already running: $ov"
      return 0
    fi
    die "something else already answers on ${REST_URL} (port ${REST_PORT} busy); not starting"
  fi
  if [[ -n "$(our_pids)" ]]; then
    log "stale Flink processes found (REST not answering); stopping them first"
    cmd_stop
  fi
  local port
  for port in "$REST_PORT" 6123; do
    if port_in_use "$port"; then
      die "port ${port} on localhost is already in use by another process; not starting"
    fi
  done

  log "starting Flink ${FLINK_VERSION} session cluster ..."
  rm -f "${FLINK_HOME_DIR}"/log/*
  FLINK_CONF_DIR="$FLINK_CONF" FLINK_PID_DIR="$PID_DIR" "${FLINK_HOME_DIR}/bin/start-cluster.sh" >&2

  local deadline=$(( SECONDS + START_TIMEOUT )) tms slots
  while (( SECONDS < deadline )); do
    if ov="$(overview)"; then
      tms="$(json_int taskmanagers "$ov")"
      slots="$(json_int slots-total "$ov")"
      if [[ -n "$tms" && -n "$slots" ]] && (( tms >= WANT_TASKMANAGERS && slots >= WANT_SLOTS )); then
        log "cluster up at ${REST_URL} (${tms} taskmanager(s), ${slots} slots)"
        echo "$ov"
        return 0
      fi
    fi
    if [[ -z "$(our_pids)" ]]; then
      print_log_tail
      die "Flink processes exited during startup"
    fi
    sleep 1
  done
  log "last /overview answer: ${ov:-<none>}"
  print_log_tail
  log "timeout; stopping what was started"
  cmd_stop || true
  die "cluster did not report ${WANT_TASKMANAGERS} taskmanager / ${WANT_SLOTS} slots within ${START_TIMEOUT}s"
}

wait_gone() {  # wait_gone SECONDS PID...
  local limit=$1; shift
  local deadline=$(( SECONDS + limit )) p alive
  while (( SECONDS < deadline )); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.5
  done
  return 1
}

cmd_stop() {
  if [[ -x "${FLINK_HOME_DIR}/bin/stop-cluster.sh" && -n "$(our_pids)" ]]; then
    log "stopping Flink session cluster ..."
    FLINK_CONF_DIR="$FLINK_CONF" FLINK_PID_DIR="$PID_DIR" "${FLINK_HOME_DIR}/bin/stop-cluster.sh" >&2 || true
  fi
  local pids js
  # Beam job servers left behind by an interrupted pipeline do not exit by themselves.
  js="$(job_server_pids)"
  if [[ -n "$js" ]]; then
    log "stopping leftover Beam job server(s): $(tr '\n' ' ' <<<"$js")"
    kill -TERM $js 2>/dev/null || true
  fi
  pids="$( { pidfile_pids; our_pids; echo "$js"; } | sort -u | grep -E '^[0-9]+$' || true)"
  # keep only live processes that really are ours
  local p live=()
  for p in $pids; do
    [[ "$p" == "$$" ]] && continue
    if kill -0 "$p" 2>/dev/null && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$CACHE_DIR/"; then
      live+=("$p")
    fi
  done
  if (( ${#live[@]} )); then
    wait_gone 15 "${live[@]}" || {
      log "sending TERM to ${live[*]}"
      kill -TERM "${live[@]}" 2>/dev/null || true
      wait_gone 10 "${live[@]}" || {
        log "sending KILL to ${live[*]}"
        kill -KILL "${live[@]}" 2>/dev/null || true
        wait_gone 5 "${live[@]}" || true
      }
    }
  fi
  rm -f "$PID_DIR"/flink-*.pid
  if [[ -n "$(our_pids)" ]]; then
    die "Flink processes still alive: $(our_pids | tr '\n' ' ')"
  fi
  log "stopped (no Flink process from ${FLINK_HOME_DIR} left)"
}

cmd_jar() {
  local jar
  jar="$(job_server_jar)"
  [[ -n "$jar" ]] || die "job-server jar not present yet; run: scripts/flink.sh setup"
  echo "$jar"
}

cmd_status() {
  local ov
  if ov="$(overview)"; then
    echo "$ov"
  else
    echo "not running"
    return 1
  fi
}

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  setup)  cmd_setup ;;
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  jar)    cmd_jar ;;
  status) cmd_status ;;
  -h|--help|help|"") usage ;;
  *) log "unknown command: $1"; usage ;;
esac
