"""Apache Flink: what `--runner FlinkRunner --flink_master HOST:PORT` needs besides that flag.

Filled in when the user left them out:
- `--flink_job_server_jar`: the Beam job server for Flink, of the SDK's own Beam version. Found in
  `$DATAPREP_FLINK_JOB_SERVER_JAR`, else where `scripts/flink.sh jobserver` puts it
  (`$DATAPREP_FLINK_CACHE` or `<repo>/.cache/flink/`).
- `--environment_type LOOPBACK`: Beam's default for a remote master is DOCKER, which needs an
  SDK container image on every task manager. LOOPBACK runs the Python work in this process.
  For every core, start the SDK worker pool beside each task manager (`scripts/flink.sh start`
  does) and pass `--environment_type EXTERNAL --environment_config localhost:50000`: then
  `--sdk_worker_parallelism` defaults to `--parallelism`, one Python worker process per slot,
  kept from one stage to the next (`--environment_cache_millis`).
- `--flink_version`: the cluster's, read from its REST API.
- `--execution_mode_for_batch BATCH_FORCED`: blocking exchanges. Pipelined ones (Flink's default)
  keep every stage of the job alive at once, each holding network buffers; at a million rows the
  task manager runs out of them.

The cluster (and the worker pool, for EXTERNAL) are checked before anything is recorded, so a
wrong address is one line and exit 2, not a job-server traceback.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions

from runners import RunnerOptionsError, has_flag

JAR_ENV = "DATAPREP_FLINK_JOB_SERVER_JAR"
CACHE_ENV = "DATAPREP_FLINK_CACHE"
REPO_CACHE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "flink"))
MAGIC_MASTERS = ("[auto]", "[local]")   # Beam starts an embedded Flink: no REST API
ENVIRONMENT_CACHE_MILLIS = 30_000


class FlinkBatchOptions(PipelineOptions):
    """Flink runner options Beam's Python SDK does not declare (it sends the Java side only the
    options some PipelineOptions class declares)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--execution_mode_for_batch", default=None, choices=["PIPELINED", "BATCH", "BATCH_FORCED"],
            help="Flink's exchange mode for batch jobs (Beam's executionModeForBatch). dataprep's default "
                 "for Flink is BATCH_FORCED: every exchange is blocking, so stages run one after another "
                 "and their results spill to the task managers' disks instead of holding network buffers.")


def is_flink(runner: str) -> bool:
    return runner.split(".")[-1] in ("FlinkRunner", "flink")


def job_server_jar_candidates(beam_version: str = apache_beam.__version__) -> List[str]:
    """Where a job server of `beam_version` may be, best first: the shaded jar Maven serves
    upstream, then the launcher jar `scripts/flink.sh` assembles from the runner's classpath."""
    roots = [r for r in (os.environ.get(CACHE_ENV), REPO_CACHE) if r]
    names = [f"beam-runners-flink-*-job-server-{beam_version}.jar",
             f"beam-flink-*-job-server-{beam_version}/beam-flink-*-job-server-{beam_version}-launcher.jar"]
    found = []
    for root in roots:
        for name in names:
            found += sorted(glob.glob(os.path.join(root, name)))
    return [f for f in dict.fromkeys(found) if os.path.getsize(f) > 0]


def find_job_server_jar() -> str:
    """The job-server jar to use when `--flink_job_server_jar` is not given.

    Raises:
      RunnerOptionsError: none is configured or cached.
    """
    configured = os.environ.get(JAR_ENV)
    if configured:
        if not os.path.isfile(configured):
            raise RunnerOptionsError(f"{JAR_ENV}: no file at {configured}")
        return configured
    candidates = job_server_jar_candidates()
    if not candidates:
        raise RunnerOptionsError(
            f"--flink_job_server_jar: no Beam {apache_beam.__version__} Flink job server found; get one with "
            f"`scripts/flink.sh jobserver` (or set {JAR_ENV}, or pass --flink_job_server_jar)")
    return candidates[0]


def rest_url(master: str) -> str:
    """The REST API's base URL of the cluster at `--flink_master` (HOST:PORT or a URL)."""
    return (master if "://" in master else f"http://{master}").rstrip("/")


def cluster_config(master: str, timeout: float = 5.0) -> Dict:
    """The cluster's `/config` (it holds `flink-version`), from its REST API.

    Raises:
      RunnerOptionsError: nothing answers at `master`.
    """
    url = rest_url(master)
    try:
        with urllib.request.urlopen(url + "/config", timeout=timeout) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise RunnerOptionsError(f"--flink_master: no Flink cluster answers at {url} ({reason}); "
                                 "`scripts/flink.sh start` starts a local one") from None


def check_worker_pool(address: str, timeout: float = 3.0) -> None:
    """Raises RunnerOptionsError when nothing listens at the EXTERNAL environment's address."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise RunnerOptionsError(f"--environment_config: no SDK worker pool answers at {address} ({e}); "
                                 "`scripts/flink.sh start` starts one on localhost:50000") from None


def flink_args(beam_args: Sequence[str], jar: Optional[str] = None) -> List[str]:
    """Beam arguments for the Flink runner with the job server, environment and Flink
    version filled in where the user gave none.

    Raises:
      RunnerOptionsError: no job server, no cluster at --flink_master, no worker pool at
        --environment_config, or a cluster of another Flink version than --flink_version.
    """
    args = list(beam_args)
    options = PipelineOptions(args)
    flink = options.view_as(FlinkRunnerOptions)
    portable = options.view_as(PortableOptions)
    if not has_flag(args, "--flink_master") and not portable.job_endpoint:
        # Beam's default, [auto], starts a Flink of its own in the job server: not what a
        # FlinkRunner user left out by mistake, and it failed on a missing job server instead
        raise RunnerOptionsError("--flink_master: FlinkRunner needs the cluster's REST address, e.g. "
                                 "--flink_master localhost:8081 (`scripts/flink.sh start` starts a local one), "
                                 "or --flink_master [local] for an embedded Flink")
    if not portable.job_endpoint and not flink.flink_job_server_jar:
        args += ["--flink_job_server_jar", jar or find_job_server_jar()]
    if flink.flink_master not in MAGIC_MASTERS:
        version = str(cluster_config(flink.flink_master).get("flink-version", ""))
        minor = ".".join(version.split(".")[:2])
        if has_flag(args, "--flink_version"):
            if minor and minor != flink.flink_version:
                raise RunnerOptionsError(f"--flink_version: {flink.flink_version} given, but the cluster at "
                                         f"{flink.flink_master} runs Flink {version}")
        elif minor in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS:
            args += ["--flink_version", minor]
        elif minor:
            raise RunnerOptionsError(f"--flink_master: the cluster runs Flink {version}; Beam "
                                     f"{apache_beam.__version__} supports {FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS}")
    if not options.view_as(FlinkBatchOptions).execution_mode_for_batch:
        args += ["--execution_mode_for_batch", "BATCH_FORCED"]
    environment = (portable.environment_type or "").upper()
    if not environment:
        args += ["--environment_type", "LOOPBACK"]
    elif environment == "EXTERNAL":
        if not portable.environment_config:
            raise RunnerOptionsError("--environment_config: EXTERNAL needs the worker pool's HOST:PORT "
                                     "(scripts/flink.sh start starts one on localhost:50000)")
        check_worker_pool(portable.environment_config)
    if environment in ("EXTERNAL", "PROCESS"):
        if not has_flag(args, "--sdk_worker_parallelism"):
            parallelism = flink.parallelism if flink.parallelism and flink.parallelism > 0 else 0
            args += ["--sdk_worker_parallelism", str(parallelism)]
        if not has_flag(args, "--environment_cache_millis"):
            # Keep a stage's workers for the next stage instead of starting new ones (each pays
            # the imports of TensorFlow and Beam). Takes effect where Beam's classes are on the
            # cluster's own classpath, as scripts/flink.sh sets up; elsewhere it changes nothing.
            args += ["--environment_cache_millis", str(ENVIRONMENT_CACHE_MILLIS)]
    return args


FLINK_TERMINAL = ("FINISHED", "CANCELED", "FAILED")   # a job's globally terminal states, as the REST API names them


def job_name_for(run_id: str) -> str:
    """The Flink job's name for a run when the user gave no `--job_name`: the run id, so the
    cluster's UI says which run a job is, and a canceled launcher finds its job to cancel."""
    return f"dataprep-{run_id.lower()}"


def job_states(master: str, name: str, timeout: float = 10.0) -> Dict[str, str]:
    """{job id: state} of the cluster's jobs called `name`, from its REST API."""
    with urllib.request.urlopen(f"{rest_url(master)}/jobs/overview", timeout=timeout) as r:
        return {j["jid"]: j["state"] for j in json.load(r)["jobs"] if j.get("name") == name}


def cancel_jobs(master: str, jids: Iterable[str], timeout: float = 10.0) -> None:
    """Asks the cluster to cancel these jobs, through its REST API. Beam's job server cannot do
    it: canceling its invocation ends the thread that waits for the job, not the job."""
    for jid in jids:
        request = urllib.request.Request(f"{rest_url(master)}/jobs/{jid}?mode=cancel", method="PATCH")
        urllib.request.urlopen(request, timeout=timeout).close()
