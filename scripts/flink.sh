#!/usr/bin/env bash
# Local Apache Flink 1.19 session cluster, Beam Flink job server and Python SDK worker pool.
#
#   scripts/flink.sh setup      download + assemble Flink and the Beam job server (idempotent, cached)
#   scripts/flink.sh jobserver  only fetch the Beam job server; print its path (for a remote cluster)
#   scripts/flink.sh start      setup if needed, start the cluster and the worker pool, wait for both
#   scripts/flink.sh stop       stop them; safe to call when nothing runs
#   scripts/flink.sh jar        print the absolute path of the Beam job-server jar
#   scripts/flink.sh status     print the REST /overview, or "not running" (exit 1)
#
# A second cluster beside the first (a test's small one): DATAPREP_FLINK_INSTANCE=NAME gives it a
# config, pid and log folder of its own under .cache/flink/instances/NAME; its ports come from
# DATAPREP_FLINK_REST_PORT (8081), DATAPREP_FLINK_RPC_PORT (6123) and DATAPREP_WORKER_POOL_PORT
# (50000), its memory from DATAPREP_FLINK_TM_MEMORY (10240m) and DATAPREP_FLINK_TM_OFFHEAP (1536m).
#
# Everything lives under <repo>/.cache/flink/ (or $DATAPREP_FLINK_CACHE). Flink is assembled from
# two PyPI packages (apache-flink wheel: bin/conf/log; apache-flink-libraries sdist:
# lib/opt/plugins), which are downloaded with pip but never installed (they pin an older Beam).
# The job server is Beam's own for Flink 1.19 at the SDK's version, from Maven.
#
# Pipelines then use (dataprep finds the job server by itself):
#   --runner FlinkRunner --flink_master localhost:8081 --parallelism 2                 (LOOPBACK)
#   ... --environment_type EXTERNAL --environment_config localhost:50000              (worker pool)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"

FLINK_VERSION="1.19.3"
# The Beam version of the job server: the same as the Python SDK pinned in constraints.txt.
BEAM_VERSION="2.62.0"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JOB_SERVER_ARTIFACT="org.apache.beam:beam-runners-flink-1.19-job-server:${BEAM_VERSION}"
RUNNER_ARTIFACT="org.apache.beam:beam-runners-flink-1.19:${BEAM_VERSION}"

CACHE_DIR="${DATAPREP_FLINK_CACHE:-${REPO_ROOT}/.cache/flink}"
DL_DIR="${CACHE_DIR}/downloads"
FLINK_HOME_DIR="${CACHE_DIR}/flink-${FLINK_VERSION}"
INSTANCE="${DATAPREP_FLINK_INSTANCE:-}"
if [[ -z "$INSTANCE" ]]; then
  PID_DIR="${CACHE_DIR}/pids"
  FLINK_CONF="${FLINK_HOME_DIR}/conf"
  LOG_DIR="${FLINK_HOME_DIR}/log"
else
  [[ "$INSTANCE" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "[flink.sh] ERROR: DATAPREP_FLINK_INSTANCE: letters, digits, - and _ only" >&2; exit 2; }
  PID_DIR="${CACHE_DIR}/instances/${INSTANCE}/pids"
  FLINK_CONF="${CACHE_DIR}/instances/${INSTANCE}/conf"
  LOG_DIR="${CACHE_DIR}/instances/${INSTANCE}/log"
fi
STAMP="${FLINK_HOME_DIR}/.assembled"
# The shaded job-server jar, where Maven serves it; else the same Beam version's runner artifact
# with its dependency closure in lib/ and a launcher jar whose manifest names them (the shaded jar
# is only a repackaging of that classpath). Either way a job server of Beam ${BEAM_VERSION}.
SHADED_JOB_SERVER_JAR="${CACHE_DIR}/beam-runners-flink-1.19-job-server-${BEAM_VERSION}.jar"
CLASSPATH_DIR="${CACHE_DIR}/beam-flink-1.19-job-server-${BEAM_VERSION}"
LAUNCHER_JAR="${CLASSPATH_DIR}/beam-flink-1.19-job-server-${BEAM_VERSION}-launcher.jar"

# The Python SDK worker pool (EXTERNAL environment): Flink's task manager hands each Python
# stage to it, one worker process per task slot.
WORKER_POOL_PORT="${DATAPREP_WORKER_POOL_PORT:-50000}"

REST_PORT="${DATAPREP_FLINK_REST_PORT:-8081}"
RPC_PORT="${DATAPREP_FLINK_RPC_PORT:-6123}"
REST_URL="http://localhost:${REST_PORT}"
START_TIMEOUT="${FLINK_START_TIMEOUT:-90}"
WANT_TASKMANAGERS=1
WANT_SLOTS=2
# the task manager's process memory; the 60M-row benchmark run sets more (bench/RESULTS.md)
TASKMANAGER_MEMORY="${DATAPREP_FLINK_TM_MEMORY:-10240m}"
TASK_OFFHEAP="${DATAPREP_FLINK_TM_OFFHEAP:-1536m}"

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
  if [[ -n "$INSTANCE" && ! -f "${FLINK_CONF}/config.yaml.orig" ]]; then   # log4j files and the shipped config
    mkdir -p "$FLINK_CONF"
    cp -r "${FLINK_HOME_DIR}/conf/." "$FLINK_CONF/"
  fi
  local java_opts
  java_opts="$(sed -n 's/^[[:space:]]*all:[[:space:]]*\(--add-.*\)$/\1/p' "${FLINK_CONF}/config.yaml.orig" | head -n1)"
  [[ -n "$java_opts" ]] || die "could not find env.java.opts.all in ${FLINK_CONF}/config.yaml.orig"
  mkdir -p "$PID_DIR" "$LOG_DIR"
  local tmp="${FLINK_CONF}/config.yaml.tmp"
  cat > "$tmp" <<EOF
# Generated by scripts/flink.sh (original: config.yaml.orig). Loopback-only local session cluster.
env.java.opts.all: ${java_opts}
env.pid.dir: ${PID_DIR}
env.log.dir: ${LOG_DIR}
# An OutOfMemoryError anywhere in the task manager ends its JVM: the job fails at once (the
# cluster sees its task manager gone) instead of hanging on a thread that died (issue 34).
env.java.opts.taskmanager: -XX:+ExitOnOutOfMemoryError
jobmanager.bind-host: localhost
jobmanager.rpc.address: localhost
jobmanager.rpc.port: ${RPC_PORT}
jobmanager.memory.process.size: 1024m
jobmanager.execution.failover-strategy: region
taskmanager.bind-host: localhost
taskmanager.host: localhost
taskmanager.numberOfTaskSlots: ${WANT_SLOTS}
# 10 GB, of it 5.6 GB task heap and 1.5 GB task off-heap. The Java side of the data plane keeps
# up to 100 messages (~10 MB each, the Python workers' flush size) per bundle on the heap until
# the bundle's end (Beam 2.62, BeamFnDataInboundObserver): 2 slots x ~1.2 GB. Each of these was
# a failed run: 4 GB with Flink's default split (0.5 GB task heap) died at 10M rows, and 7 GB
# (2.4 GB heap) at 60M, with "OutOfMemoryError: Java heap space" in grpc-default-executor threads;
# 512 MB of task off-heap gave "OutOfMemoryError: Direct buffer memory" at 60M rows. Managed
# memory (Flink's sorts; they spill) 0.1. A fatal error in any thread of the task manager fails
# the job: an OOM in a gRPC thread otherwise left the job hanging with every process idle.
taskmanager.memory.process.size: ${TASKMANAGER_MEMORY}
taskmanager.memory.managed.fraction: 0.1
cluster.uncaught-exception-handling: FAIL
# The Beam data plane to the Python workers is gRPC (Netty), which buffers elements (record
# batches of a few MB) in direct memory that Flink does not manage: the default of 0 for task
# off-heap gave "OutOfMemoryError: Direct buffer memory" at a million rows.
taskmanager.memory.task.off-heap.size: ${TASK_OFFHEAP}
taskmanager.memory.framework.off-heap.size: 256m
# A Beam job with many shuffles needs more network buffers than the default 10% gives
# ("Insufficient number of network buffers: required 512, but only 319 available").
taskmanager.memory.network.fraction: 0.25
taskmanager.memory.network.min: 256mb
taskmanager.memory.network.max: 768mb
# Blocking exchanges (dataprep's BATCH_FORCED) use Flink's sort-merge shuffle, which reserves
# taskmanager.network.sort-shuffle.min-buffers (512 by default) per result partition: a Beam job
# has hundreds of partitions, and at a million rows enough of them are open at once to exhaust
# the pool ("Insufficient number of network buffers: required 512"). 64 buffers (2 MB) each is
# plenty at parallelism 2.
taskmanager.network.sort-shuffle.min-buffers: 64
parallelism.default: 2
rest.address: localhost
rest.port: ${REST_PORT}
rest.bind-address: 127.0.0.1
classloader.resolve-order: parent-first
EOF
  mv "$tmp" "${FLINK_CONF}/config.yaml"
  printf 'localhost:%s\n' "$REST_PORT" > "${FLINK_CONF}/masters"
  printf 'localhost\n' > "${FLINK_CONF}/workers"
}

shaded_jar_present()    { [[ -s "$SHADED_JOB_SERVER_JAR" ]]; }
classpath_jar_present() { [[ -s "$LAUNCHER_JAR" && -f "${CLASSPATH_DIR}/.complete" ]]; }

# Path of the job-server jar in use: the shaded jar if Maven served it, else the launcher.
job_server_jar() {
  if shaded_jar_present; then echo "$SHADED_JOB_SERVER_JAR"
  elif classpath_jar_present; then echo "$LAUNCHER_JAR"
  fi
}

fetch_shaded_job_server_jar() {
  mkdir -p "$CACHE_DIR"
  # -U: do not trust a 'not found' cached in ~/.m2 by an earlier attempt.
  mvn -B -q -U "${DEP_PLUGIN}:copy" -Dartifact="${JOB_SERVER_ARTIFACT}" \
      -DoutputDirectory="${CACHE_DIR}" >/dev/null 2>&1 && [[ -s "$SHADED_JOB_SERVER_JAR" ]]
}

# The registry here serves beam-runners-flink-1.19 (which holds FlinkJobServerDriver) but not
# the shaded *-job-server jar. Resolve the runner's dependencies into lib/ and write a small
# launcher jar whose manifest has Main-Class + Class-Path, so `java -jar launcher.jar` (what
# Beam's Python FlinkRunner runs) behaves like the shaded jar.
build_classpath_job_server() {
  log "assembling the job server from ${RUNNER_ARTIFACT} and its dependencies ..."
  rm -rf "$CLASSPATH_DIR"
  mkdir -p "$CLASSPATH_DIR"
  cat > "${CLASSPATH_DIR}/pom.xml" <<POM
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
      <version>${BEAM_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.30</version>
    </dependency>
  </dependencies>
</project>
POM
  local out rc=0
  out="$(cd "$CLASSPATH_DIR" && mvn -B -q "${DEP_PLUGIN}:copy-dependencies" \
           -DincludeScope=runtime -DoutputDirectory="${CLASSPATH_DIR}/lib" 2>&1)" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "$out" >&2
    die "maven could not resolve ${RUNNER_ARTIFACT} (exit ${rc})"
  fi
  python_cmd - "$CLASSPATH_DIR/lib" "$LAUNCHER_JAR" <<'PY'
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
PY
  [[ -s "$LAUNCHER_JAR" ]] || die "could not write ${LAUNCHER_JAR}"
  touch "${CLASSPATH_DIR}/.complete"
}

fetch_job_server_jar() {
  if [[ -n "$(job_server_jar)" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (needed to fetch ${RUNNER_ARTIFACT})"
  log "fetching the Beam ${BEAM_VERSION} Flink job server from Maven ..."
  fetch_shaded_job_server_jar || build_classpath_job_server
}

is_set_up() {
  [[ -f "$STAMP" && -n "$(job_server_jar)" ]]
}

# Beam's Flink runner keeps an SDK environment (the worker processes) alive between the stages
# of a job (--environment_cache_millis) only when its classes come from Flink's own classloader;
# loaded from the job's jars, every stage starts new workers. So the job server's jars go into
# lib/beam/ of the cluster, without Flink's own and without what flink-dist already bundles
# (kryo, chill, commons-*, lz4, snappy, slf4j, ...), and job classes resolve parent-first (the
# same classes then come from one classloader).
BEAM_IN_LIB="${FLINK_HOME_DIR}/lib/beam"
BUNDLED_IN_FLINK_DIST='^(flink-|slf4j-|kryo-|chill-java-|minlog-|objenesis-|javassist-|lz4-java-|snappy-java-|snakeyaml-engine-|jsr305-|commons-(lang3|text|collections|compress|math3|io|cli)-)'

link_beam_into_flink_lib() {
  local lib="${CLASSPATH_DIR}/lib"
  [[ -d "$lib" ]] || return 0          # a shaded jar only: nothing to split, stages start workers
  [[ -f "${BEAM_IN_LIB}/.complete" ]] && return 0
  rm -rf "$BEAM_IN_LIB"
  mkdir -p "$BEAM_IN_LIB"
  local jar
  for jar in "$lib"/*.jar; do
    [[ "$(basename "$jar")" =~ $BUNDLED_IN_FLINK_DIST ]] && continue
    ln "$jar" "$BEAM_IN_LIB/" 2>/dev/null || cp "$jar" "$BEAM_IN_LIB/"
  done
  touch "${BEAM_IN_LIB}/.complete"
}

cmd_setup() {
  command -v java >/dev/null 2>&1 || [[ -n "${JAVA_HOME:-}" ]] || die "java not found (Flink 1.19 needs Java 11 or 17)"
  # The jar first: without it there is nothing to run, so don't download Flink for nothing.
  mkdir -p "$CACHE_DIR"
  fetch_job_server_jar
  assemble_flink_home
  link_beam_into_flink_lib
  write_config
  log "setup done: FLINK_HOME=${FLINK_HOME_DIR}"
  log "job server jar: $(job_server_jar)"
}

cmd_jobserver() {
  mkdir -p "$CACHE_DIR"
  fetch_job_server_jar
  job_server_jar
}

# ---------------------------------------------------------------- Python SDK worker pool

POOL_PID="${PID_DIR}/worker-pool.pid"
POOL_LOG="${CACHE_DIR}/log/worker-pool.log"
[[ -z "$INSTANCE" ]] || POOL_LOG="${LOG_DIR}/worker-pool.log"

pool_pid() {  # the pool's pid if it is alive and ours
  local p
  [[ -f "$POOL_PID" ]] || return 1
  p="$(cat "$POOL_PID")"
  kill -0 "$p" 2>/dev/null && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q worker_pool_main && echo "$p"
}

start_worker_pool() {
  if pool_pid >/dev/null; then
    log "worker pool already running (pid $(pool_pid))"
    return 0
  fi
  port_in_use "$WORKER_POOL_PORT" && die "port ${WORKER_POOL_PORT} is in use; set DATAPREP_WORKER_POOL_PORT"
  mkdir -p "$PID_DIR" "$(dirname "$POOL_LOG")"
  # The pool starts each worker as `python -c ...` from PATH: the project's venv must come first,
  # and the working folder is the repo, so modules named in a config (tests.faults) import there.
  local venv_bin="${REPO_ROOT}/.venv/bin"
  [[ -x "${venv_bin}/python" ]] || die "no ${venv_bin}/python (run make install first)"
  ( cd "$REPO_ROOT" && PATH="${venv_bin}:${PATH}" exec setsid "${venv_bin}/python" \
      -m apache_beam.runners.worker.worker_pool_main --service_port="$WORKER_POOL_PORT" \
      >"$POOL_LOG" 2>&1 ) &
  echo $! > "$POOL_PID"
  local deadline=$(( SECONDS + 30 ))
  while (( SECONDS < deadline )); do
    if port_in_use "$WORKER_POOL_PORT"; then
      log "SDK worker pool up on localhost:${WORKER_POOL_PORT} (pid $(cat "$POOL_PID"))"
      return 0
    fi
    kill -0 "$(cat "$POOL_PID")" 2>/dev/null || { tail -n 20 "$POOL_LOG" >&2; die "the worker pool exited during startup"; }
    sleep 0.5
  done
  die "the worker pool did not listen on ${WORKER_POOL_PORT} within 30 s"
}

stop_worker_pool() {
  local p
  p="$(pool_pid || true)"
  if [[ -n "$p" ]]; then
    # setsid made it a process group leader: TERM the group, so its workers go too.
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    wait_gone 10 "$p" || kill -KILL -- "-$p" 2>/dev/null || true
    log "stopped the SDK worker pool"
  fi
  rm -f "$POOL_PID"
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
  # Java processes of this cluster: Flink's scripts start each with --configDir <its conf folder>.
  pgrep -f -- "java.*--configDir ${FLINK_CONF}( |$)" 2>/dev/null | grep -vx "$$" || true
}

job_server_pids() {  # leftover Beam job servers started (by a pipeline) from our cache, for this cluster
  if [[ -z "$INSTANCE" ]]; then
    pgrep -f -- "java.*-jar ${CACHE_DIR}/.*job-server" 2>/dev/null | grep -vx "$$" || true
  else
    pgrep -f -- "java.*-jar ${CACHE_DIR}/.*job-server.*localhost:${REST_PORT}( |$)" 2>/dev/null | grep -vx "$$" || true
  fi
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
  for f in "${LOG_DIR}"/*.log "${LOG_DIR}"/*.out; do
    [[ -s "$f" ]] || continue
    echo "----- tail -n 40 $f" >&2
    tail -n 40 "$f" >&2
  done
}

cmd_start() {
  if ! is_set_up; then
    cmd_setup
  else
    link_beam_into_flink_lib
    write_config
  fi
  local ov
  if ov="$(overview)"; then
    if [[ -n "$(our_pids)" ]]; then
      log "cluster already running: $ov"
      start_worker_pool
      return 0
    fi
    die "something else already answers on ${REST_URL} (port ${REST_PORT} busy); not starting"
  fi
  if [[ -n "$(our_pids)" ]]; then
    log "stale Flink processes found (REST not answering); stopping them first"
    cmd_stop
  fi
  local port
  for port in "$REST_PORT" "$RPC_PORT"; do
    if port_in_use "$port"; then
      die "port ${port} on localhost is already in use by another process; not starting"
    fi
  done

  log "starting Flink ${FLINK_VERSION} session cluster ..."
  rm -f "${LOG_DIR}"/*
  FLINK_CONF_DIR="$FLINK_CONF" FLINK_PID_DIR="$PID_DIR" "${FLINK_HOME_DIR}/bin/start-cluster.sh" >&2

  local deadline=$(( SECONDS + START_TIMEOUT )) tms slots
  while (( SECONDS < deadline )); do
    if ov="$(overview)"; then
      tms="$(json_int taskmanagers "$ov")"
      slots="$(json_int slots-total "$ov")"
      if [[ -n "$tms" && -n "$slots" ]] && (( tms >= WANT_TASKMANAGERS && slots >= WANT_SLOTS )); then
        log "cluster up at ${REST_URL} (${tms} taskmanager(s), ${slots} slots)"
        start_worker_pool
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
  stop_worker_pool
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
  log "stopped (no Flink process of ${FLINK_CONF} left)"
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
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  setup)  cmd_setup ;;
  jobserver) cmd_jobserver ;;
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  jar)    cmd_jar ;;
  status) cmd_status ;;
  -h|--help|help|"") usage ;;
  *) log "unknown command: $1"; usage ;;
esac
