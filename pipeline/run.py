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
import gc
import getpass
import importlib
import hashlib
import json
import logging
import os
import secrets
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from pipeline.build import Plan, build_pipeline, feature_specs
from pipeline.config import Config, ConfigError
from pipeline.inputs import InputFile, check_input_columns, entry_of, fingerprinted, inputs_fingerprint, match_inputs
from pipeline.layout import Layout
from pipeline.metadata import RunRecorder, StoreLocation, open_store
from pipeline.report import assemble_report, read_json, write_report
from pipeline.version import code_version
from runners import RunnerOptionsError, check_runner_paths, runner_args, sanitized_options

log = logging.getLogger("dataprep")


class PipelineFailure(RuntimeError):
    """The Beam job or its bookkeeping failed; the run is recorded as FAILED."""


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
        beam_args: Sequence[str] = (), force: bool = False) -> Dict:
    """Runs the pipeline for `cfg` and returns the closing summary (the CLI's JSON line).

    A rerun of a COMPLETE run with the same config hash and input fingerprints is not
    run again unless `force`: the summary of the earlier run comes back with
    `"reused_from"` set.

    Raises:
      ConfigError: bad inputs or options, found before anything runs.
      PipelineFailure: the job failed; the run is recorded as FAILED.
    """
    runner = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"
    output_root = output if output is not None else cfg.resolve(cfg.output.path)
    if "://" not in output_root:
        output_root = os.path.abspath(output_root)
    try:
        options = PipelineOptions(runner_args(runner, beam_args))
        dry_run = options.view_as(TestOptions).dry_run
        check_runner_paths(runner, output_root, [cfg.resolve(i.path) for i in cfg.inputs], dry_run)
    except RunnerOptionsError as e:
        raise ConfigError(str(e)) from None
    matched = match_inputs(cfg)
    check_input_columns(cfg, matched)
    location = store_location(cfg, store, output_root)
    files = fingerprinted(matched)
    fingerprint_all = inputs_fingerprint(files)
    store_handle = open_store(location)
    if not force and not dry_run:
        earlier = find_identical_run(store_handle, cfg.name, cfg.config_hash, fingerprint_all)
        if earlier is not None:
            log.info("identical to run %s (same config and inputs), outputs in %s", earlier["run_id"],
                     earlier["output"])
            return {**earlier, "store": location.describe(), "reused_from": earlier["run_id"]}

    started = _now()
    run_id = new_run_id(started)
    layout = Layout(FileSystems.join(output_root, run_id))
    version = code_version()
    common = {"config_hash": cfg.config_hash, "code_version": version, "runner": runner, "run_id": run_id}
    recorder = RunRecorder(store_handle, cfg.name, run_id, common)
    recorder.update_run(status="RUNNING", config_hash=cfg.config_hash, config=cfg.raw_text, code_version=version,
                        runner=runner, options=json.dumps(sanitized_options(options)), user=_user(),
                        started=started.isoformat(), output=layout.root, inputs_fingerprint=fingerprint_all,
                        pipeline=cfg.name)
    log.info("run %s: %d input file(s), output %s, store %s", run_id, len(files), layout.root, location.describe())
    try:
        input_artifacts = _record_inputs(recorder, cfg, layout, files)
        if cfg.features:    # imported now, so that it is frozen below
            importlib.import_module("tensorflow_transform.beam")
        with _frozen_heap():
            p = beam.Pipeline(options=options)
            plan = build_pipeline(p, cfg, files, layout)
            for stage in plan.stages:
                recorder.start_stage(stage, input_artifacts if stage == "ingest" else ())
            gc.freeze()     # the traced graphs and the pipeline too
            result = p.run()
            state = result.wait_until_finish()
            if dry_run:  # the job was built (and its files listed for staging) but not submitted
                recorder.cancel_open_stages("dry run: the job was built, not run")
                recorder.update_run(status="DRY_RUN", ended=_now().isoformat())
                from runners.dataflow import staged_files

                return {"run_id": run_id, "dry_run": True, "output": layout.root, "store": location.describe(),
                        "staged": staged_files(result)}
            if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
                raise PipelineFailure(f"the Beam job ended in state {state}")
            report = assemble_report(read_json(plan.job_results), plan.splits)
            _check_funnel(report["rows"], plan.splits)
            if "transform" in plan.stages:  # the analysed statistics (means, vocabulary sizes, boundaries)
                from transforms.features import summarize_transform

                report["features"] = summarize_transform(layout.root, feature_specs(cfg))
            ended = _now()
            report.update({"run_id": run_id, "pipeline": cfg.name, "config_hash": cfg.config_hash,
                           "inputs_fingerprint": fingerprint_all, "code_version": version, "runner": runner,
                           "store": location.describe(), "started": started.isoformat(), "ended": ended.isoformat(),
                           "seconds": round((ended - started).total_seconds(), 3)})
            write_report(layout.report, report)
            _record_outputs(recorder, plan, cfg, layout, report, input_artifacts)
            recorder.update_run(status="COMPLETE", ended=ended.isoformat(), rows=json.dumps(report["rows"]),
                                quarantine_reasons=json.dumps(report.get("quarantine_reasons", {})))
            _remove_tmp(layout)
    except BaseException as e:
        message = f"{type(e).__name__}: {e}"
        recorder.fail_open_stages(message)
        recorder.update_run(status="FAILED", ended=_now().isoformat(), error=message[:4000])
        if isinstance(e, (PipelineFailure, KeyboardInterrupt)):
            raise
        raise PipelineFailure(message) from e
    return {"run_id": run_id, "rows": report["rows"], "output": layout.root, "store": location.describe()}


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


def _record_inputs(rec: RunRecorder, cfg: Config, layout: Layout, files: Sequence[InputFile]):
    """One DataFile artifact per input file; past MANIFEST_THRESHOLD files, one
    DataManifest artifact whose uri is a JSON listing (uri, sha256, size) of them all."""
    if len(files) <= MANIFEST_THRESHOLD:
        return [rec.artifact("DataFile", f.uri, {
            "sha256": f.sha256, "size_bytes": f.size, "source": entry_of(cfg, f).source,
            "format": entry_of(cfg, f).format}, name=f"{f.where}:{f.uri}") for f in files]
    listing = [{"input": f.where, "uri": f.uri, "sha256": f.sha256, "size_bytes": f.size} for f in files]
    path = layout.join("inputs.json")
    body = json.dumps(listing, indent=1).encode()
    with FileSystems.create(path) as f:
        f.write(body)
    return [rec.artifact("DataManifest", path, {
        "files": len(files), "size_bytes": sum(f.size for f in files), "sha256": hashlib.sha256(body).hexdigest(),
        "source": "; ".join(sorted({s for s in (entry_of(cfg, f).source for f in files) if s}))})]


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
    raw_data = rec.artifact("RawData", layout.join("ingested"), {"rows": rows["input"]})
    rec.finish_stage("ingest", [raw_data], props={"rows_in": rows["input"], "rows_out": rows["input"]})

    clean = rec.artifact("CleanData", layout.join("raw"), {"rows": rows["clean"]})
    quarantine = rec.artifact("Quarantine", layout.quarantine, {"rows": rows["quarantined"]})
    duplicates = rec.artifact("Duplicates", layout.duplicates, {"rows": rows["duplicates"]})
    near = report.get("near_dedup")
    rec.finish_stage("clean", [clean, quarantine, duplicates], [raw_data],
                     {"rows_in": rows["input"], "rows_out": rows["clean"]},
                     custom={f"near_dedup.{k}": v for k, v in near.items()} if near else None)

    split_input = clean
    if "labels" in plan.stages:
        labels = report.get("labels", {}).get("overall", {})
        agreement = rec.artifact("LabelAgreement", layout.report + "#labels", {
            "hlp": (labels.get("hlp") or {}).get("value"),
            "fleiss_kappa": (labels.get("fleiss_kappa") or {}).get("value"),
            "krippendorff_alpha": (labels.get("krippendorff_alpha_nominal") or {}).get("value"),
            "items": labels.get("items")}, custom={"consensus": cfg.labels.consensus})
        rec.finish_stage("labels", [agreement], [clean], {"rows_in": rows["clean"], "rows_out": rows["clean"]})
    raw_splits = [rec.artifact("Examples", layout.raw(s), {
        "split": s, "split_names": json.dumps([s]), "kind": "raw", "rows": rows[s], "span": 0, "version": 0})
        for s in splits]
    rec.finish_stage("split", raw_splits, [split_input], {"rows_in": rows["clean"], "rows_out": rows["clean"]})

    outputs = raw_splits + [quarantine, duplicates]
    if "transform" in plan.stages:
        graph = rec.artifact("TransformGraph", layout.root)
        schema = rec.artifact("Schema", layout.transformed_metadata)
        transformed = [rec.artifact("Examples", layout.transformed(s), {
            "split": s, "split_names": json.dumps([s]), "kind": "transformed", "rows": rows[s], "span": 0,
            "version": 0}) for s in splits]
        rec.finish_stage("transform", [graph, schema] + transformed, raw_splits,
                         {"rows_in": rows["clean"], "rows_out": rows["clean"]})
        outputs += transformed + [graph]
    report_artifact = rec.artifact("DataReport", layout.report, custom={"rows": json.dumps(rows)})
    rec.finish_stage("write", [report_artifact], outputs, {"rows_in": rows["input"], "rows_out": rows["clean"]})
