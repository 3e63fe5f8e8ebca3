"""One run, as TFX runs a component: driver, executor, publisher.

- the driver (`pipeline/driver.py`) checks the request, decides (reuse an identical run,
  refuse it: the growth guard) and records the run RUNNING with its inputs;
- the executor (`pipeline/executor.py`) builds the Beam job and runs it, knowing nothing of
  the store; this launcher records each stage of its plan RUNNING in between;
- the publisher (`pipeline/publisher.py`) reconciles the funnel with what was written, checks
  the quality gates, and publishes: outputs LIVE, the run COMPLETE.

This file holds the sequence and what a failure or a cancel does: the open stages closed
FAILED or CANCELED, the remote job canceled, the staging folder removed (a run that failed a
quality gate keeps its report in `OUT/<run_id>/`), and one line for the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import tempfile
from typing import Dict, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from pipeline.config import Config
from pipeline.driver import Decision, decide, open_run, prepare
from pipeline.executor import Job
from pipeline.failures import PipelineFailure, failure_line
from pipeline.gates import GateFailed, check_before_job
from pipeline.html_report import start_chart_engine
from pipeline.inputs import DATA
from pipeline.interrupts import RunCanceled, cancel_on_signals, signals_ignored
from pipeline.label_history import stage_inputs
from pipeline.layout import remove_folder
from pipeline.metadata import Heartbeat, RunRecorder
from pipeline.openlineage import RunLineage
from pipeline.progress import Progress
from pipeline.publisher import SUCCESS, keep_failed_report, publish, warn
from runners import redact
from runners.cancel import cancel_job

log = logging.getLogger("dataprep")

__all__ = ["PipelineFailure", "RunCanceled", "run"]


def run(cfg: Config, output: Optional[str] = None, store: Optional[str] = None,
        beam_args: Sequence[str] = (), force: bool = False, progress: bool = False) -> Dict:
    """Runs the pipeline for `cfg` and returns the closing summary (the CLI's JSON line).

    With `progress`, a progress line on stderr while it runs (`pipeline/progress.py`).

    A rerun whose reuse key (`pipeline/run_key.py`: config, inputs, code, libraries, user code)
    equals a COMPLETE run's is not run again unless `force`: the summary of the earlier run
    comes back with `"reused_from"` set.

    Raises:
      ConfigError: bad inputs or options, found before anything runs.
      StoreError: the store cannot be opened or written before the run is open.
      PipelineFailure: the job failed or a quality gate did; the run is recorded as FAILED.
      RunCanceled: SIGINT or SIGTERM; the run is recorded as CANCELED.
    """
    request = prepare(cfg, output, store, beam_args)
    decision = decide(request, force)
    if decision.reused is not None:
        return decision.reused
    if decision.verdict["exceeded"]:
        warn(f"guard: {decision.verdict['message']}")
    if not request.dry_run:
        start_chart_engine()    # for report.html, while the job is built and run
    layout = decision.layout
    watched = layout.progress if "://" not in layout.root else None   # local runs only: a file per block on gs:// costs
    watch = Progress(sum(f.size for f in request.files if f.kind == DATA), watched, enabled=progress)
    # tempfile's first use probes the temp folder with a file it removes in a `finally`; a cancel
    # raised there (or a SIGKILL) would leave that file behind, so the probe runs before the run opens.
    tempfile.gettempdir()
    recorder = decision.recorder
    # OpenLineage (pipeline/openlineage.py): inert unless the user configured a transport
    lineage = RunLineage.for_run(cfg, decision.run_id, decision.started, request.files, request.runner,
                                 request.location.describe(), decision.final.root, request.key.code_version,
                                 enabled=not request.dry_run)
    with cancel_on_signals() as check_canceled, watch:   # from here, SIGINT/SIGTERM close the run as CANCELED
        heartbeat = Heartbeat(request.location, recorder)
        job = Job(cfg, request.files, layout, request.options, request.runner, progress_dir=watched,
                  previous_splits=decision.previous_splits,
                  # a run whose config text was not stored (built in code) has this run's label column
                  since=(decision.since, decision.previous.label or cfg.schema.label) if decision.since else None)
        try:
            with heartbeat, job:
                watch.phase("recording the inputs in the store"
                            + (", loading TensorFlow Transform" if cfg.features else ""))
                input_artifacts = open_run(decision)
                lineage.start(recorder.run_ctx.id)
                check_before_job(cfg)     # a feature computed from the label: no need to read a row
                watch.phase("building the job")
                plan = job.build()
                for stage in plan.stages:
                    recorder.start_stage(stage, stage_inputs(stage, input_artifacts))   # files per stage
                lineage.stages_started(plan.stages)
                check_canceled()
                watch.phase("running the job")
                output = job.run(check_canceled, dry_run=request.dry_run)
                if output.dry_run:
                    heartbeat.stop()
                    recorder.cancel_open_stages("dry run: the job was built, not run")
                    recorder.update_run(status="DRY_RUN", ended=_now_iso())
                    return {"run_id": decision.run_id, "dry_run": True, "output": decision.final.root,
                            "store": request.location.describe(), "staged": output.staged}
                return publish(decision, plan, output, input_artifacts, check_canceled, watch.phase, heartbeat.stop,
                               lineage)
        except BaseException as e:
            closed = _closed(e, decision, job, heartbeat, lineage)
            if closed is e:
                raise
            raise closed from (e if isinstance(closed, PipelineFailure) else None)


def _closed(e: BaseException, decision: Decision, job: Job, heartbeat: Heartbeat, lineage: RunLineage) -> BaseException:
    """Closes a run that ended by `e` (FAILED, or CANCELED on a signal) and returns what to raise:
    the open stages closed, the remote job canceled, the staging folder removed; a failed
    quality gate keeps its report."""
    request, recorder = decision.request, decision.recorder
    with signals_ignored():   # a second Ctrl-C must not interrupt the cleanup
        heartbeat.stop()
        canceled = isinstance(e, (RunCanceled, KeyboardInterrupt))
        message = (f"canceled by {e.signal_name}" if isinstance(e, RunCanceled) else
                   "canceled by SIGINT" if canceled else f"{type(e).__name__}: {e}")
        if isinstance(e, GateFailed):
            recorder.update_run(gates=json.dumps(e.gates, sort_keys=True))
            kept = keep_failed_report(decision, e.report | {"gates": e.gates, "run_id": decision.run_id,
                                                            "pipeline": request.cfg.name})
            if kept:
                e.args = (f"{e.args[0]} (report: {kept}/report.html)",)
        _close_failed_run(recorder, "CANCELED" if canceled else "FAILED", redact(message))
        lineage.closed("CANCELED" if canceled else "FAILED", redact(message))   # ABORT / FAIL
        cancel_job(request.runner, request.options, job.result)   # a job on Flink or Dataflow goes on unless canceled
        remove_folder(decision.layout.root)
        if job.local_tempdir:   # Beam's temp folder (in TMPDIR), removed by p.run() only once it was called
            remove_folder(job.local_tempdir)
        final = decision.final
        if not isinstance(e, GateFailed) and FileSystems.exists(final.root) and \
                not FileSystems.exists(final.join(SUCCESS)):
            remove_folder(final.root)   # moved, but the run did not reach COMPLETE
    if isinstance(e, RunCanceled):
        e.run_id = decision.run_id
    if isinstance(e, (PipelineFailure, RunCanceled)):
        return e
    if isinstance(e, KeyboardInterrupt):
        return RunCanceled("canceled by SIGINT", signal.SIGINT, decision.run_id)
    return PipelineFailure(failure_line(e))


def _close_failed_run(recorder: RunRecorder, status: str, message: str) -> None:
    """The run and its open stages closed as `status`, its unpublished outputs ABANDONED. A
    store that cannot be written any more is logged, not raised over the job's own error."""
    try:
        if status == "CANCELED":
            recorder.cancel_open_stages(message)
        else:
            recorder.fail_open_stages(message)
        recorder.abandon_pending()
        recorder.update_run(status=status, ended=_now_iso(), error=message[:4000])
    except Exception as e:  # noqa: BLE001 - the store itself failed (disk full, gone): the run's error matters
        log.error("could not record run %s as %s: %s", recorder.run_id, status, str(e).splitlines()[0])


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
