"""The driver: decides whether and how a run happens, and opens it in the store.

As TFX's driver (`tfx/dsl/components/base/base_driver.py`) resolves a component's inputs and
decides whether to execute it, this:

1. `prepare`: checks what can be checked before anything is recorded (Beam arguments, the
   runner and its paths, the user's code, the inputs: matched, their columns, fingerprinted)
   and computes the run's reuse key (`pipeline/run_key.py`). Problems are `ConfigError`s
   (exit 2) and leave no trace in the store;
2. `decide`: opens the store, closes the runs whose launcher died (and removes their staging
   folders), answers with an identical COMPLETE run when there is one (`Decision.reused`),
   and runs the growth guard (a refused run is recorded REFUSED);
3. `open_run`: records the run RUNNING with its inputs as artifacts.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions
from ml_metadata import errors as mlmd_errors

from pipeline.config import Config, ConfigError, check_user_code, user_modules
from pipeline.failures import failure_line
from pipeline.guard import as_property, check_growth, last_complete_run
from pipeline.inputs import InputFile, check_input_columns, entry_of, fingerprinted, inputs_fingerprint, match_inputs
from pipeline.layout import STAGING_PREFIX, Layout, check_output_root, remove_folder
from pipeline.metadata import (RunRecorder, StoreError, StoreLocation, is_abandoned, mark_abandoned, open_store,
                               run_identity)
from pipeline import rounds
from pipeline.run_key import RunKey, run_key
from runners import (RunnerOptionsError, check_runner, check_runner_paths, redact, runner_args, sanitized_options,
                     unknown_beam_args)
from runners.cancel import name_job

log = logging.getLogger("dataprep")

MANIFEST_THRESHOLD = 100   # more input files than this: one manifest artifact instead of one per file


class GrowthRefused(ConfigError):
    """`guard.on_exceed: fail` and the input grew more than `guard.max_growth`: exit 2,
    before the job runs (the run is recorded as REFUSED)."""


@dataclass
class Request:
    """A run as asked for, checked, before the store is touched."""

    cfg: Config
    runner: str
    options: PipelineOptions
    dry_run: bool
    output_root: str
    location: StoreLocation
    files: List[InputFile]
    fingerprint: str
    key: RunKey


@dataclass
class Decision:
    """What `decide` found: an earlier identical run (`reused`), or the new run's identity."""

    request: Request
    store: object
    reused: Optional[Dict] = None
    run_id: str = ""
    started: Optional[dt.datetime] = None
    verdict: Dict = field(default_factory=dict)
    recorder: Optional[RunRecorder] = None
    run_props: Dict = field(default_factory=dict)
    previous: Optional[Dict] = None            # the last COMPLETE run of the pipeline (`pipeline/rounds.py`)
    previous_splits: Optional[Dict[str, str]] = None   # split.sticky: its raw split files, kept
    since: Optional[Dict[str, str]] = None    # its raw split files, to count what moved since (the report's rounds)

    @property
    def layout(self) -> Layout:
        """Where the job writes: `OUT/.staging-<run_id>/`."""
        return Layout(FileSystems.join(self.request.output_root, STAGING_PREFIX + self.run_id))

    @property
    def final(self) -> Layout:
        """Where a COMPLETE run's files are: `OUT/<run_id>/`."""
        return Layout(FileSystems.join(self.request.output_root, self.run_id))


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


def prepare(cfg: Config, output: Optional[str], store: Optional[str], beam_args: Sequence[str]) -> Request:
    """The run's arguments, runner, user code and inputs checked; the inputs fingerprinted.

    Raises:
      ConfigError: naming the argument, option, field or file that is wrong.
    """
    unknown = unknown_beam_args(beam_args)
    if unknown:
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (neither dataprep's nor a Beam "
                          "pipeline option)")
    runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"
    output_root = output if output is not None else cfg.resolve(cfg.output.path)
    if "://" not in output_root:
        output_root = os.path.abspath(output_root)
    check_output_root(output_root, "--output" if output is not None else "output.path")
    try:
        check_runner(runner)
        options = PipelineOptions(runner_args(runner, beam_args, user_modules(cfg)))
        dry_run = bool(options.view_as(TestOptions).dry_run)
        check_runner_paths(runner, output_root, [cfg.resolve(i.path) for i in cfg.inputs], dry_run)
    except RunnerOptionsError as e:
        raise ConfigError(str(e)) from None
    check_user_code(cfg)
    matched = match_inputs(cfg)
    check_input_columns(cfg, matched)
    files = fingerprinted(matched)
    fingerprint = inputs_fingerprint(files)
    return Request(cfg=cfg, runner=runner, options=options, dry_run=dry_run, output_root=output_root,
                   location=store_location(cfg, store, output_root), files=files, fingerprint=fingerprint,
                   key=run_key(cfg, fingerprint))


def decide(request: Request, force: bool = False) -> Decision:
    """Opens the store and decides: reuse an identical run, refuse (the guard), or run.

    Raises:
      StoreError: the store cannot be opened, read or written.
      GrowthRefused: the guard refused the run (recorded REFUSED).
    """
    cfg = request.cfg
    store = open_store(request.location)
    try:   # before the run is open: a store that cannot be read or written is one line, nothing to close
        close_abandoned_runs(store)    # first: a killed run's staging folder goes even when this run is reused
        if not force and not request.dry_run:
            earlier = find_identical_run(store, cfg.name, request.key.digest)
            if earlier is not None:
                return Decision(request, store, reused={**earlier, "store": request.location.describe(),
                                                        "reused_from": earlier["run_id"]})
        started = _now()
        run_id = new_run_id(started)
        name_job(request.runner, request.options, run_id)
        baseline = None if request.dry_run else last_complete_run(store, cfg.name)
        # the previous round: for sticky splits and the report's "what changed since the last round"
        previous = rounds.run_round(store, baseline.run_id) if baseline else None
        previous_splits = rounds.sticky_inputs(previous) if cfg.split.sticky else None
        verdict = check_growth(baseline, sum(f.size for f in request.files), cfg.guard.max_growth)
        common = {"config_hash": cfg.config_hash, "code_version": request.key.code_version, "runner": request.runner,
                  "run_id": run_id}
        recorder = RunRecorder(store, cfg.name, run_id, common)
        run_props = dict(config_hash=cfg.config_hash, config=redact(cfg.raw_text),
                         code_version=request.key.code_version,
                         runner=request.runner, options=json.dumps(sanitized_options(request.options)), user=_user(),
                         started=started.isoformat(), inputs_fingerprint=request.fingerprint, pipeline=cfg.name,
                         guard=as_property(verdict), **request.key.properties())
        if verdict["exceeded"] and cfg.guard.on_exceed == "fail":
            recorder.update_run(status="REFUSED", ended=_now().isoformat(), error=f"guard: {verdict['message']}",
                                **run_props)
            raise GrowthRefused(f"guard: {verdict['message']} (guard.on_exceed: fail; run {run_id} not run)")
    except mlmd_errors.StatusError as e:
        raise StoreError(f"metadata store {request.location.describe()}: {failure_line(e)}") from e
    return Decision(request, store, run_id=run_id, started=started, verdict=verdict, recorder=recorder,
                    run_props=run_props, previous=previous, previous_splits=previous_splits,
                    since=rounds.split_patterns(previous) if cfg.report.rounds else {})


def open_run(decision: Decision) -> List:
    """Records the run RUNNING (with its identity, for `is_abandoned`) and its input files;
    returns their artifacts."""
    request = decision.request
    decision.recorder.update_run(status="RUNNING", output=decision.final.root, staging=decision.layout.root,
                                 **decision.run_props, **run_identity())
    log.info("run %s: %d input file(s), output %s, store %s", decision.run_id, len(request.files),
             decision.final.root, request.location.describe())
    return record_inputs(decision.recorder, request.cfg, decision.layout, decision.final, request.files)


def new_run_id(now: dt.datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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
                remove_folder(str(props["staging"]))


def find_identical_run(store, pipeline: str, reuse_key: str) -> Optional[Dict]:
    """The latest COMPLETE run of `pipeline` with this reuse key (`pipeline/run_key.py`: config,
    inputs, code, libraries, user code) whose outputs still exist, as a summary; None when
    there is none. Runs recorded before the key existed never match."""
    from pipeline.lineage import list_runs

    for r in reversed(list_runs(store)):
        p = r.get("properties", {})
        if (r["status"] == "COMPLETE" and p.get("pipeline") == pipeline and p.get("reuse_key") == reuse_key
                and r.get("output") and FileSystems.exists(FileSystems.join(r["output"], "report.json"))):
            return {"run_id": r["run_id"], "rows": r["rows"], "output": r["output"]}
    return None


def record_inputs(rec: RunRecorder, cfg: Config, layout: Layout, final: Layout, files: Sequence[InputFile]):
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
