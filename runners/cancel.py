"""What a canceled (or failed) launcher does about its job, on every runner.

- The DirectRunner's job runs in the launcher's process: ending the launcher ends it.
- A job on Flink or Dataflow runs elsewhere and goes on after its launcher is gone, writing
  into a staging folder the launcher has removed. `cancel_job` cancels it and waits, a
  bounded time, until the runner says it has ended: Dataflow's through Beam's result; a
  Flink job through the cluster's REST API, found by its name (`name_job`), since Beam's job
  server cancels only its own wait for the job, and a job may be on the cluster before
  `Pipeline.run()` has returned a result.
- Beam's job server for Flink takes SIGINT over when it starts: the patch that keeps the
  launcher's own handlers while the job is submitted is `runners/tuning/signals.py`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List

from apache_beam.options.pipeline_options import FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions
from apache_beam.runners.runner import PipelineState

log = logging.getLogger("dataprep")

CANCEL_WAIT_SECONDS = 60.0


def name_job(runner: str, options: PipelineOptions, run_id: str) -> None:
    """Names a Flink job after its run (`--job_name`), unless the user named it."""
    from runners.flink import is_flink, job_name_for

    cloud = options.view_as(GoogleCloudOptions)
    if is_flink(runner) and not cloud.job_name:
        cloud.job_name = job_name_for(run_id)


def cancel_job(runner: str, options: PipelineOptions, result=None,
               wait_seconds: float = CANCEL_WAIT_SECONDS) -> None:
    """Cancels the run's job where it runs elsewhere than in this process, and waits up to
    `wait_seconds` for it to end. A runner that cannot be asked or told is logged, not raised:
    the caller is closing a run already."""
    from runners.flink import FLINK_TERMINAL, MAGIC_MASTERS, cancel_jobs, is_flink, job_states

    if result is not None:   # Flink's job server says CANCELLED before the cluster's job has ended: not waited for
        _cancel("the job", lambda: {"": result.state}, lambda ids: result.cancel(), PipelineState.is_terminal,
                0.0 if is_flink(runner) else wait_seconds)
    if is_flink(runner):
        master = options.view_as(FlinkRunnerOptions).flink_master
        name = options.view_as(GoogleCloudOptions).job_name
        if master and name and master not in MAGIC_MASTERS:
            _cancel(f"the Flink job {name} at {master}", lambda: job_states(master, name),
                    lambda ids: cancel_jobs(master, ids), lambda state: state in FLINK_TERMINAL, wait_seconds)


def _cancel(what: str, states: Callable[[], Dict[str, str]], cancel: Callable[[List[str]], None],
            ended: Callable[[str], bool], wait_seconds: float, poll_seconds: float = 0.5) -> None:
    """Cancels the jobs of `states()` ({id: state}) that have not `ended`, then polls until all
    have or `wait_seconds` pass (a warning then); a failure to ask or tell is a warning."""
    try:
        running = [jid for jid, state in states().items() if not ended(state)]
        if not running:
            return
        cancel(running)
        deadline = time.monotonic() + wait_seconds
        while True:
            left = {jid: state for jid, state in states().items() if not ended(state)}
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(poll_seconds)
        if left and wait_seconds:
            log.warning("%s was asked to cancel and is still %s after %.0f s", what, left, wait_seconds)
    except Exception as e:
        log.warning("could not cancel %s: %s", what, e)
