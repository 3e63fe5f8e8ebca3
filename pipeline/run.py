"""One run: inputs → Beam job → outputs, recorded in MLMD by this (launching) process.

The launcher matches and fingerprints the inputs (`pipeline/inputs.py`), opens the run in
the store, builds the job (`pipeline/build.py`, whose plan names the stages, recorded
RUNNING), runs it, then assembles the report from the job's results
(`pipeline/report.py`), checks the row funnel (`input = splits + quarantined +
duplicates`), writes `report.json` and records the outputs (stages COMPLETE). A failure
anywhere marks the open stages FAILED with the error and re-raises.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gc
import getpass
import importlib
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions
from ml_metadata import errors as mlmd_errors

from pipeline import beam_memo, beam_release, beam_sampler, imports
from pipeline.build import Plan, build_pipeline, feature_specs
from pipeline.config import Config, ConfigError, check_user_code, user_modules
from pipeline.guard import after_job, as_property, check_growth, last_complete_run
from pipeline.html_report import start_chart_engine
from pipeline.inputs import (DATA, InputFile, check_input_columns, entry_of, fingerprinted, inputs_fingerprint,
                             match_inputs)
from pipeline.layout import Layout
from pipeline.metadata import (Heartbeat, RunRecorder, StoreError, StoreLocation, is_abandoned, mark_abandoned,
                               open_store, run_identity)
from pipeline.progress import Progress
from pipeline.report import assemble_report, read_json, run_lineage, write_html_report, write_report
from pipeline.version import code_version
from runners import (RunnerOptionsError, check_runner, check_runner_paths, redact, runner_args, sanitized_options,
                     unknown_beam_args)
from runners.cancel import cancel_job, name_job, signal_handlers_kept

log = logging.getLogger("dataprep")


class PipelineFailure(RuntimeError):
    """The Beam job or its bookkeeping failed; the run is recorded as FAILED."""


class GrowthRefused(ConfigError):
    """`guard.on_exceed: fail` and the input grew more than `guard.max_growth`: exit 2,
    before the job runs (the run is recorded as REFUSED)."""


def store_location(cfg: Config, store_override: Optional[str], output_root: str) -> StoreLocation:
    if store_override:
        return StoreLocation.parse(store_override)
    ms = cfg.metadata_store
    if ms.mysql:
        return StoreLocation(mysql_host=ms.mysql.host, mysql_port=ms.mysql.port, mysql_database=ms.mysql.database,
                             mysql_user=ms.mysql.user, mysql_password_env=ms.mysql.password_env)
    if ms.sqlite:
        return StoreLocation(sqlite=cfg.resolve(ms.sqlite))
    if "://" in output_root:  # SQLite needs a local file: beside the config, as in the contract's default
        return StoreLocation(sqlite=cfg.resolve(os.path.join("out", "metadata.sqlite")))
    return StoreLocation(sqlite=os.path.join(output_root, "metadata.sqlite"))


def new_run_id(now: dt.datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


MANIFEST_THRESHOLD = 100   # more input files than this: one manifest artifact instead of one per file


def run(cfg: Config, output: Optional[str] = None, store: Optional[str] = None,
        beam_args: Sequence[str] = (), force: bool = False, progress: bool = False) -> Dict:
    """Runs the pipeline for `cfg` and returns the closing summary (the CLI's JSON line).

    With `progress`, a progress line on stderr while it runs (`pipeline/progress.py`).

    A rerun of a COMPLETE run with the same config hash and input fingerprints is not
    run again unless `force`: the summary of the earlier run comes back with
    `"reused_from"` set.

    Raises:
      ConfigError: bad inputs or options, found before anything runs.
      PipelineFailure: the job failed; the run is recorded as FAILED.
    """
    beam_memo.install()
    beam_sampler.install()
    beam_release.install()
    unknown = unknown_beam_args(beam_args)
    if unknown:
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (neither dataprep's nor a Beam "
                          "pipeline option)")
    runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"
    output_root = output if output is not None else cfg.resolve(cfg.output.path)
    if "://" not in output_root:
        output_root = os.path.abspath(output_root)
    try:
        check_runner(runner)
        options = PipelineOptions(runner_args(runner, beam_args, user_modules(cfg)))
        dry_run = options.view_as(TestOptions).dry_run
        check_runner_paths(runner, output_root, [cfg.resolve(i.path) for i in cfg.inputs], dry_run)
    except RunnerOptionsError as e:
        raise ConfigError(str(e)) from None
    check_user_code(cfg)
    matched = match_inputs(cfg)
    check_input_columns(cfg, matched)
    location = store_location(cfg, store, output_root)
    files = fingerprinted(matched)
    fingerprint_all = inputs_fingerprint(files)
    store_handle = open_store(location)
    started = _now()
    run_id = new_run_id(started)
    name_job(runner, options, run_id)
    final = Layout(FileSystems.join(output_root, run_id))
    layout = Layout(FileSystems.join(output_root, STAGING_PREFIX + run_id))   # where the job writes
    version = code_version()
    common = {"config_hash": cfg.config_hash, "code_version": version, "runner": runner, "run_id": run_id}
    try:   # before the run is open: a store that cannot be read or written is one line, nothing to close
        if not force and not dry_run:
            earlier = find_identical_run(store_handle, cfg.name, cfg.config_hash, fingerprint_all)
            if earlier is not None:
                log.info("identical to run %s (same config and inputs), outputs in %s", earlier["run_id"],
                         earlier["output"])
                return {**earlier, "store": location.describe(), "reused_from": earlier["run_id"]}
        close_abandoned_runs(store_handle)
        baseline = None if dry_run else last_complete_run(store_handle, cfg.name)
        verdict = check_growth(baseline, sum(f.size for f in files), cfg.guard.max_growth)
        recorder = RunRecorder(store_handle, cfg.name, run_id, common)
        run_props = dict(config_hash=cfg.config_hash, config=redact(cfg.raw_text), code_version=version,
                         runner=runner, options=json.dumps(sanitized_options(options)), user=_user(),
                         started=started.isoformat(), inputs_fingerprint=fingerprint_all, pipeline=cfg.name,
                         guard=as_property(verdict))
        if verdict["exceeded"] and cfg.guard.on_exceed == "fail":
            recorder.update_run(status="REFUSED", ended=_now().isoformat(), error=f"guard: {verdict['message']}",
                                **run_props)
            raise GrowthRefused(f"guard: {verdict['message']} (guard.on_exceed: fail; run {run_id} not run)")
    except mlmd_errors.StatusError as e:
        raise StoreError(f"metadata store {location.describe()}: {failure_line(e)}") from e
    if verdict["exceeded"]:
        _warn(f"guard: {verdict['message']}")
    if not dry_run:
        start_chart_engine()    # for report.html, while the job is built and run
    watch = Progress(sum(f.size for f in files if f.kind == DATA), watch_folder(layout), enabled=progress)
    # tempfile's first use probes the temp folder with a file it removes in a `finally`; a cancel
    # raised there (or a SIGKILL) would leave that file behind, so the probe runs before the run opens.
    tempfile.gettempdir()
    with _cancel_on_signals() as check_canceled, watch:   # from here, SIGINT/SIGTERM close the run as CANCELED
        heartbeat = Heartbeat(location, recorder)
        p = result = None
        try:
            recorder.update_run(status="RUNNING", output=final.root, staging=layout.root, **run_props,
                                **run_identity())
            log.info("run %s: %d input file(s), output %s, store %s", run_id, len(files), final.root,
                     location.describe())
            with heartbeat:
                watch.phase("recording the inputs in the store"
                            + (", loading TensorFlow Transform" if cfg.features else ""))
                input_artifacts = _record_inputs(recorder, cfg, layout, final, files)
                if cfg.features:    # imported now, so that it is frozen below
                    with imports.lean():
                        importlib.import_module("tensorflow_transform.beam")
                with _frozen_heap():
                    watch.phase("building the job")
                    p = beam.Pipeline(options=options)
                    plan = build_pipeline(p, cfg, files, layout, progress_dir=watch_folder(layout))
                    for stage in plan.stages:
                        recorder.start_stage(stage, input_artifacts if stage == "ingest" else ())
                    gc.freeze()     # the traced graphs and the pipeline too
                    check_canceled()
                    watch.phase("running the job")
                    with signal_handlers_kept((signal.SIGINT, signal.SIGTERM)):   # Beam's job server takes SIGINT
                        result = p.run()
                    state = result.wait_until_finish()
                    if dry_run:  # the job was built (and its files listed for staging) but not submitted
                        heartbeat.stop()
                        recorder.cancel_open_stages("dry run: the job was built, not run")
                        recorder.update_run(status="DRY_RUN", ended=_now().isoformat())
                        from runners.dataflow import staged_files

                        return {"run_id": run_id, "dry_run": True, "output": final.root, "store": location.describe(),
                                "staged": staged_files(result)}
                    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
                        raise PipelineFailure(f"the Beam job ended in state {state}")
                    check_canceled()
                    watch.phase("writing the report")
                    report = assemble_report(read_json(plan.job_results), plan.splits)
                    _check_funnel(report["rows"], plan.splits)
                    checked = after_job(verdict, report["rows"]["input"])
                    if checked["exceeded"] and not verdict["exceeded"]:
                        _warn(f"guard: {checked['message']}")
                    report["guard"] = checked
                    if "transform" in plan.stages:  # the analysed statistics (means, vocabulary sizes, boundaries)
                        from transforms.features import summarize_transform

                        report["features"] = summarize_transform(layout.root, feature_specs(cfg))
                    ended = _now()
                    report.update({"run_id": run_id, "pipeline": cfg.name, "config_hash": cfg.config_hash,
                                   "inputs_fingerprint": fingerprint_all, "code_version": version, "runner": runner,
                                   "store": location.describe(), "started": started.isoformat(),
                                   "ended": ended.isoformat(), "seconds": round((ended - started).total_seconds(), 3)})
                    write_report(layout.report, report)
                    _remove_tmp(layout)
                    # Outputs PENDING while their files are moved into place, LIVE once they are.
                    watch.phase("recording the outputs in the store")
                    _record_outputs(recorder, plan, cfg, final, report, input_artifacts)
                    write_html_report(layout.report_html, report, run_lineage(store_handle, run_id))
                    check_canceled()
                    publish(layout.root, final.root)
                    heartbeat.stop()
                    recorder.publish_pending()
                    recorder.update_run(status="COMPLETE", ended=ended.isoformat(), rows=json.dumps(report["rows"]),
                                        guard=as_property(checked),
                                        quarantine_reasons=json.dumps(report.get("quarantine_reasons", {})))
        except BaseException as e:
            with _signals_ignored():   # a second Ctrl-C must not interrupt the cleanup
                heartbeat.stop()
                canceled = isinstance(e, (RunCanceled, KeyboardInterrupt))
                message = (f"canceled by {e.signal_name}" if isinstance(e, RunCanceled) else
                           "canceled by SIGINT" if canceled else f"{type(e).__name__}: {e}")
                _close_failed_run(recorder, "CANCELED" if canceled else "FAILED", redact(message))
                cancel_job(runner, options, result)   # a job on Flink or Dataflow goes on unless canceled
                _remove_folder(layout.root)
                if p is not None:   # Beam's temp folder (in TMPDIR), removed by p.run() only once it was called
                    _remove_folder(p.local_tempdir)
                if FileSystems.exists(final.root) and not FileSystems.exists(final.join(SUCCESS)):
                    _remove_folder(final.root)   # moved, but the run did not reach COMPLETE
            if isinstance(e, RunCanceled):
                e.run_id = run_id
            if isinstance(e, (PipelineFailure, RunCanceled)):
                raise
            if isinstance(e, KeyboardInterrupt):
                raise RunCanceled("canceled by SIGINT", signal.SIGINT, run_id) from None
            raise PipelineFailure(failure_line(e)) from e
    return {"run_id": run_id, "rows": report["rows"], "output": final.root, "store": location.describe()}


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\]\[]+?): '([^']+)'")


def failure_line(e: BaseException) -> str:
    """One line for a failed run, credentials in it redacted (`redact`)."""
    return redact(_failure_line(e))


def _failure_line(e: BaseException) -> str:
    """One line for a failed run. A disk fault anywhere in the chain (Beam re-raises a DoFn's
    OSError as a RuntimeError carrying its text) is named with its path: `No space left on
    device: /out/.staging-…/raw/train/part-00000-of-00002.parquet`; otherwise the error's first line."""
    seen = set()
    x: Optional[BaseException] = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in _DISK_ERRNOS and x.filename:
            return f"{x.strerror}: {x.filename}"
        found = _ERRNO_TEXT.search(str(x))
        if found and int(found.group(1)) in _DISK_ERRNOS:
            return f"{found.group(2)}: {found.group(3)}"
        x = x.__cause__ or x.__context__
    lines = [line for line in f"{type(e).__name__}: {e}".splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    first = lines[0]
    if first.endswith(_TRACEBACK) and len(lines) > 1:
        # A portable runner (Flink) reports a worker's failure as its Python traceback: the
        # line that names the error is the first unindented one after the traceback's frames.
        raised = next((line for line in lines[1:] if not line.startswith(" ")), lines[-1])
        return f"{first[:-len(_TRACEBACK)].rstrip()} {raised.strip()}"
    return first


_TRACEBACK = "Traceback (most recent call last):"


STAGING_PREFIX = ".staging-"   # OUT/.staging-<run_id>/: a run's files until it reaches COMPLETE
SUCCESS = "_SUCCESS"


class RunCanceled(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the launcher: the run is recorded CANCELED and its files
    removed; the CLI exits 128 + the signal's number (130, 143).

    A KeyboardInterrupt, because that is what library code lets through where it catches
    everything else (Beam's IPython probe, run on every `apply`, swallowed a plain
    BaseException, and the run went on to COMPLETE)."""

    # (message, signum) as args: Beam re-raises an exception from a DoFn as
    # type(e)(e.args[0] + " [while running ...]", *e.args[1:])
    def __init__(self, message: str, signum: int, run_id: Optional[str] = None):
        super().__init__(message, signum)
        self.signum = signum
        self.run_id = run_id

    @classmethod
    def by(cls, signum: int) -> "RunCanceled":
        return cls(f"canceled by {signal.Signals(signum).name}", signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def _cancel_on_signals():
    """SIGINT and SIGTERM become RunCanceled in the main thread (where the DirectRunner's job
    and this launcher run), so the run is closed as CANCELED, not left RUNNING or FAILED
    with a traceback. Elsewhere (a run started from a thread) the handlers stay as they are.

    Yields `check()`, which raises RunCanceled again if a signal came: the first one is
    raised wherever the main thread is, and code there may swallow it (a bare `except:`);
    the run checks at its next steps, so a canceled run never reaches COMPLETE."""
    received: List[int] = []

    def check() -> None:
        if received:
            raise RunCanceled.by(received[0])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def cancel(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        # Beam logs an exception leaving a DoFn with its traceback: a cancel is one line.
        logging.disable(logging.ERROR)
        received.append(signum)
        raise RunCanceled.by(signum)

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _close_failed_run(recorder: RunRecorder, status: str, message: str) -> None:
    """The run and its open stages closed as `status`, its unpublished outputs ABANDONED. A
    store that cannot be written any more is logged, not raised over the job's own error."""
    try:
        if status == "CANCELED":
            recorder.cancel_open_stages(message)
        else:
            recorder.fail_open_stages(message)
        recorder.abandon_pending()
        recorder.update_run(status=status, ended=_now().isoformat(), error=message[:4000])
    except Exception as e:  # the store itself failed (disk full, gone): the error that matters is the run's
        log.error("could not record run %s as %s: %s", recorder.run_id, status, str(e).splitlines()[0])


def publish(staging: str, final: str) -> None:
    """Moves a finished run's files from its staging folder to `OUT/<run_id>/` and writes
    `_SUCCESS` there last: a folder without it is not a finished run. Local folders move in one
    rename; on object stores (gs://), file by file (none is a finished split before _SUCCESS)."""
    if "://" not in staging:
        os.rename(staging, final)
    else:
        sources = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
        FileSystems.rename(sources, [final + src[len(staging):] for src in sources])
        _remove_folder(staging)
    with FileSystems.create(FileSystems.join(final, SUCCESS)) as f:
        f.write(b"")


def _remove_folder(path: str) -> None:
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # best effort: a leftover folder is named, not raised over the run's error
        log.warning("could not remove %s: %s", path, e)


def close_abandoned_runs(store) -> None:
    """Runs of this store whose launcher died (kill -9, a lost machine) closed as ABANDONED,
    and their staging folders removed: the next run cleans up after them."""
    from pipeline.lineage import _props
    from pipeline.metadata import RUN_CONTEXT

    for ctx in store.get_contexts_by_type(RUN_CONTEXT):
        props = _props(ctx)
        if is_abandoned(props):
            log.warning("run %s was left RUNNING by process %s on %s, which is gone: marked ABANDONED", ctx.name,
                        props.get("pid"), props.get("host"))
            mark_abandoned(store, ctx, f"abandoned: its launcher (pid {props.get('pid')} on {props.get('host')}) "
                                       f"died before it finished")
            if props.get("staging"):
                _remove_folder(str(props["staging"]))


@contextlib.contextmanager
def _frozen_heap():
    """The objects alive now (TensorFlow, Beam: millions) out of the garbage collector's
    sight until the block ends: its full collections, which building the graph, running
    the pipeline and loading the saved graph trigger many of, stay cheap."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def find_identical_run(store, pipeline: str, config_hash: str, fingerprint_all: str) -> Optional[Dict]:
    """The latest COMPLETE run of `pipeline` with this config and these inputs whose
    outputs still exist, as a summary; None when there is none."""
    from pipeline.lineage import list_runs

    for r in reversed(list_runs(store)):
        p = r.get("properties", {})
        if (r["status"] == "COMPLETE" and p.get("pipeline") == pipeline and p.get("config_hash") == config_hash
                and p.get("inputs_fingerprint") == fingerprint_all and r.get("output")
                and FileSystems.exists(FileSystems.join(r["output"], "report.json"))):
            return {"run_id": r["run_id"], "rows": r["rows"], "output": r["output"]}
    return None


def _record_inputs(rec: RunRecorder, cfg: Config, layout: Layout, final: Layout, files: Sequence[InputFile]):
    """One DataFile artifact per input file; past MANIFEST_THRESHOLD files, one
    DataManifest artifact whose uri is a JSON listing (uri, sha256, size) of them all."""
    if len(files) <= MANIFEST_THRESHOLD:
        return [rec.artifact("DataFile", f.shown, {
            "sha256": f.sha256, "size_bytes": f.size, "source": redact(entry_of(cfg, f).source),
            "format": entry_of(cfg, f).format}, name=f"{f.where}:{f.shown}") for f in files]
    listing = [{"input": f.where, "uri": f.shown, "sha256": f.sha256, "size_bytes": f.size} for f in files]
    body = json.dumps(listing, indent=1).encode()
    with FileSystems.create(layout.join("inputs.json")) as f:   # staged; recorded where it will be
        f.write(body)
    return [rec.pending_artifact("DataManifest", final.join("inputs.json"), {
        "files": len(files), "size_bytes": sum(f.size for f in files), "sha256": hashlib.sha256(body).hexdigest(),
        "source": redact("; ".join(sorted({s for s in (entry_of(cfg, f).source for f in files) if s})))})]


def watch_folder(layout: Layout) -> Optional[str]:
    """The folder the read stage reports its bytes to: local runs only (a file per block on
    gs:// would cost more than the line is worth)."""
    return layout.progress if "://" not in layout.root else None


def _warn(message: str) -> None:
    """A warning the person at the terminal must see, whatever the log level."""
    print(f"dataprep: warning: {message}", file=sys.stderr, flush=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _remove_tmp(layout: Layout) -> None:
    try:
        if FileSystems.exists(layout.tmp):
            FileSystems.delete([layout.tmp])
    except Exception as e:  # best effort: a leftover temp folder is not a failed run
        log.warning("could not remove %s: %s", layout.tmp, e)


def _check_funnel(rows: Dict[str, int], splits: List[str]) -> None:
    accounted = rows["quarantined"] + rows["duplicates"] + sum(rows[s] for s in splits)
    if accounted != rows["input"]:
        raise PipelineFailure(f"row funnel does not add up: input {rows['input']} != splits + quarantined + "
                              f"duplicates {accounted}")


def _record_outputs(rec: RunRecorder, plan: Plan, cfg: Config, layout: Layout, report: Dict, files) -> None:
    """Closes the plan's stages with their output artifacts and row counts."""
    rows = report["rows"]
    splits = plan.splits
    per_file = report.get("inputs", {})
    for a in files:  # the rows each file gave, known once the job has read it
        total = sum(per_file.values()) if a.uri.endswith("inputs.json") else per_file.get(a.uri, 0)
        a.properties["rows"].int_value = int(total)
    rec.store.put_artifacts(list(files))

    # The ingested records are not stored as such: a logical uri under the run.
    raw_data = rec.pending_artifact("RawData", layout.join("ingested"), {"rows": rows["input"]})
    rec.finish_stage("ingest", [raw_data], props={"rows_in": rows["input"], "rows_out": rows["input"]})

    clean = rec.pending_artifact("CleanData", layout.join("raw"), {"rows": rows["clean"]})
    quarantine = rec.pending_artifact("Quarantine", layout.quarantine, {"rows": rows["quarantined"]})
    duplicates = rec.pending_artifact("Duplicates", layout.duplicates, {"rows": rows["duplicates"]})
    near = report.get("near_dedup")
    rec.finish_stage("clean", [clean, quarantine, duplicates], [raw_data],
                     {"rows_in": rows["input"], "rows_out": rows["clean"]},
                     custom={f"near_dedup.{k}": v for k, v in near.items()} if near else None)

    split_input = clean
    if "labels" in plan.stages:
        labels = report.get("labels", {}).get("overall", {})
        agreement = rec.pending_artifact("LabelAgreement", layout.report + "#labels", {
            "hlp": (labels.get("hlp") or {}).get("value"),
            "fleiss_kappa": (labels.get("fleiss_kappa") or {}).get("value"),
            "krippendorff_alpha": (labels.get("krippendorff_alpha_nominal") or {}).get("value"),
            "items": labels.get("items")}, custom={"consensus": cfg.labels.consensus})
        rec.finish_stage("labels", [agreement], [clean], {"rows_in": rows["clean"], "rows_out": rows["clean"]})
    raw_splits = [rec.pending_artifact("Examples", layout.raw(s), {
        "split": s, "split_names": json.dumps([s]), "kind": "raw", "rows": rows[s], "span": 0, "version": 0})
        for s in splits]
    rec.finish_stage("split", raw_splits, [split_input], {"rows_in": rows["clean"], "rows_out": rows["clean"]})

    outputs = raw_splits + [quarantine, duplicates]
    if "transform" in plan.stages:
        graph = rec.pending_artifact("TransformGraph", layout.root)
        schema = rec.pending_artifact("Schema", layout.transformed_metadata)
        transformed = [rec.pending_artifact("Examples", layout.transformed(s), {
            "split": s, "split_names": json.dumps([s]), "kind": "transformed", "rows": rows[s], "span": 0,
            "version": 0}) for s in splits]
        rec.finish_stage("transform", [graph, schema] + transformed, raw_splits,
                         {"rows_in": rows["clean"], "rows_out": rows["clean"]})
        outputs += transformed + [graph]
    report_artifact = rec.pending_artifact("DataReport", layout.report, custom={"rows": json.dumps(rows),
                                                                               "html": layout.report_html})
    rec.finish_stage("write", [report_artifact], outputs, {"rows_in": rows["input"], "rows_out": rows["clean"]})
