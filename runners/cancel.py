"""What a canceled (or failed) launcher does about its job, on every runner.

- The DirectRunner's job runs in the launcher's process: ending the launcher ends it.
- A job on Flink or Dataflow runs elsewhere and goes on after its launcher is gone, writing
  into a staging folder the launcher has removed. `cancel_job` cancels it and waits, a
  bounded time, until the runner says it has ended: Dataflow's through Beam's result; a
  Flink job through the cluster's REST API, found by its name (`name_job`), since Beam's job
  server cancels only its own wait for the job, and a job may be on the cluster before
  `Pipeline.run()` has returned a result.
- Beam's job server for Flink takes SIGINT over when it starts (`StopOnExitJobServer.start`:
  `signal.signal(SIGINT, self.stop)`, a handler that fails with a TypeError when called), so
  a Ctrl-C after that stopped the job server and the run was recorded FAILED.
  `signal_handlers_kept` leaves the launcher's own handlers in place while the job is
  submitted; the job server is still stopped at the launcher's exit, as Beam registered.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Iterator, Optional, Sequence

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


@contextlib.contextmanager
def signal_handlers_kept(signals: Sequence[int]) -> Iterator[None]:
    """While it lasts, code that sets a Python function as the handler of one of `signals`
    leaves the current handler in place (SIG_IGN and SIG_DFL are still set as asked)."""
    original = signal.signal
    kept = frozenset(signals)

    def set_handler(signum, handler):
        if signum in kept and callable(handler):
            log.debug("left the handler of %s in place (asked for %r)", signal.Signals(signum).name, handler)
            return signal.getsignal(signum)
        return original(signum, handler)

    signal.signal = set_handler
    try:
        yield
    finally:
        signal.signal = original


def cancel_job(runner: str, options: PipelineOptions, result=None,
               wait_seconds: float = CANCEL_WAIT_SECONDS) -> None:
    """Cancels the run's job where it runs elsewhere than in this process, and waits up to
    `wait_seconds` for it to end. A runner that cannot be asked or told is logged, not raised:
    the caller is closing a run already."""
    from runners.flink import FLINK_TERMINAL, MAGIC_MASTERS, cancel_named_jobs, is_flink

    if result is not None:
        _cancel_result(result, 0.0 if is_flink(runner) else wait_seconds)
    if is_flink(runner):
        master = options.view_as(FlinkRunnerOptions).flink_master
        name = options.view_as(GoogleCloudOptions).job_name
        if master and name and master not in MAGIC_MASTERS:
            try:
                left = {jid: s for jid, s in cancel_named_jobs(master, name, wait_seconds).items()
                        if s not in FLINK_TERMINAL}
                if left:
                    log.warning("Flink job(s) %s asked to cancel, still not ended after %.0f s", left, wait_seconds)
            except Exception as e:
                log.warning("could not cancel the Flink job %s at %s: %s", name, master, e)


def _cancel_result(result, wait_seconds: float, poll_seconds: float = 0.5) -> Optional[str]:
    """Beam's own cancel of `result`'s job unless it has ended, waited for up to `wait_seconds`
    (none for Flink, whose job server says CANCELLED before the cluster's job has ended);
    the last state seen."""
    try:
        state = result.state
        if PipelineState.is_terminal(state):
            return state
        result.cancel()
        deadline = time.monotonic() + wait_seconds
        while True:
            state = result.state
            if PipelineState.is_terminal(state) or time.monotonic() >= deadline:
                break
            time.sleep(poll_seconds)
        if wait_seconds and not PipelineState.is_terminal(state):
            log.warning("the job was asked to cancel and is still %s after %.0f s", state, wait_seconds)
        return state
    except Exception as e:
        log.warning("could not cancel the job: %s", e)
        return None
