"""The publisher: checks a finished job's outputs, and only then makes them the run's.

As TFX's publisher (`tfx/orchestration/publisher.py`) marks a component's outputs LIVE once
its executor succeeded, this takes the job's results (`pipeline/executor.py`) and:

1. assembles the report (`pipeline/report.py`) and reconciles the row funnel against the rows
   the writes wrote (`input = splits + quarantined + duplicates`, each count the one written);
2. checks the quality gates (`pipeline/gates.py`): a failed gate fails the run, with its
   report kept where the user can open it and no split published;
3. writes `report.json`, records the outputs PENDING in the store, writes `report.html`,
   moves the staging folder to `OUT/<run_id>/`, writes `_SUCCESS` last, and marks the
   outputs LIVE as the run becomes COMPLETE.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Callable, Dict, List, Optional, Set

from apache_beam.io.filesystems import FileSystems

from pipeline import rounds
from pipeline.build import Plan
from pipeline.driver import Decision
from pipeline.executor import JobOutput
from pipeline.failures import PipelineFailure
from pipeline.gates import GateFailed, check_gates, gates_line
from pipeline.guard import after_job, as_property
from pipeline.inputs import DATA, check_unchanged, empty_inputs
from pipeline.label_history import record_labels_stage
from pipeline.tfx_artifacts import record_tfx_outputs
from pipeline.layout import Layout, remove_folder
from pipeline.metadata import RunRecorder
from pipeline.report import assemble_report, run_lineage, write_html_report, write_report

log = logging.getLogger("dataprep")

SUCCESS = "_SUCCESS"


def warn(message: str) -> None:
    """A warning the person at the terminal must see, whatever the log level."""
    print(f"dataprep: warning: {message}", file=sys.stderr, flush=True)


def reconcile(report: Dict, written: Dict[str, int], plan: Plan) -> None:
    """The rows each stage made equal the rows written to its folder, and the funnel adds up
    with the written counts: `input = splits + quarantined + duplicates`.

    Raises:
      PipelineFailure: naming the folder (or the funnel) that does not add up.
    """
    rows = report["rows"]
    made = {f"raw/{s}": rows[s] for s in plan.splits}
    made.update({"quarantine": rows["quarantined"], "duplicates": rows["duplicates"]})
    if "transform" in plan.stages:
        made.update({f"transformed/{s}": rows[s] for s in plan.splits})
    wrong = [f"{name}: {n} made, {written.get(name)} written" for name, n in made.items() if written.get(name) != n]
    if wrong:
        raise PipelineFailure(f"the writes do not match the stages' rows: {'; '.join(wrong)}")
    accounted = written["quarantine"] + written["duplicates"] + sum(written[f"raw/{s}"] for s in plan.splits)
    if accounted != rows["input"]:
        raise PipelineFailure(f"row funnel does not add up: input {rows['input']} != splits + quarantined + "
                              f"duplicates {accounted}")


def publish(decision: Decision, plan: Plan, job: JobOutput, input_artifacts: List,
            check_canceled: Callable[[], None], phase: Callable[[str], None], stop_heartbeat: Callable[[], None],
            lineage=None) -> Dict:
    """Checks, records and publishes a finished job; returns the run's summary (the CLI's JSON line).
    With `lineage` (`pipeline/openlineage.py`), its COMPLETE events once the run is.

    Raises:
      PipelineFailure: the funnel does not add up.
      GateFailed: a quality gate failed (the report is kept in `OUT/<run_id>/`, nothing else).
    """
    request, recorder = decision.request, decision.recorder
    cfg, layout, final = request.cfg, decision.layout, decision.final
    phase("writing the report")
    check_unchanged(request.files)    # the job read what was fingerprinted, or the run fails
    report = assemble_report(job.results, plan.splits)
    reconcile(report, job.results["written"], plan)
    for message in empty_inputs(request.files, report["inputs"]):   # a header-only input: said (and gated)
        warn(message)
    checked = after_job(decision.verdict, report["rows"]["input"])
    if checked["exceeded"] and not decision.verdict["exceeded"]:
        warn(f"guard: {checked['message']}")
    report["guard"] = checked
    if job.features is not None:
        report["features"] = job.features
    rounds.add_to_report(report, decision.previous, decision.run_id, layout.root, cfg.schema.label,
                         job.results.get("churn"))
    ended = _now()
    report.update({"run_id": decision.run_id, "pipeline": cfg.name, "config_hash": cfg.config_hash,
                   "inputs_fingerprint": request.fingerprint, "code_version": request.key.code_version,
                   "runner": request.runner, "store": request.location.describe(),
                   "started": decision.started.isoformat(), "ended": ended.isoformat(),
                   "seconds": round((ended - decision.started).total_seconds(), 3)})
    gates = check_gates(cfg, report)
    report["gates"] = gates
    recorder.update_run(gates=json.dumps(gates, sort_keys=True))
    if not gates["passed"]:
        if not gates["warn_only"]:
            raise GateFailed(gates, report)
        for line in gates_line(gates, failed_only=True):
            warn(f"quality gate {line} (expect.warn_only: true, published anyway)")
    write_report(layout.report, report)
    remove_folder(layout.tmp)
    # Outputs PENDING while their files are moved into place, LIVE once they are.
    phase("recording the outputs in the store")
    record_outputs(recorder, plan, cfg, final, report, input_artifacts,
                   {f.shown for f in request.files if f.kind == DATA})
    write_html_report(layout.report_html, report, run_lineage(decision.store, decision.run_id))
    check_canceled()
    move_into_place(layout.root, final.root)
    stop_heartbeat()
    recorder.publish_pending()
    recorder.update_run(status="COMPLETE", ended=ended.isoformat(), rows=json.dumps(report["rows"]),
                        guard=as_property(checked), quarantine_reasons=json.dumps(report.get("quarantine_reasons", {})))
    if lineage is not None:
        lineage.complete(cfg, report, plan.splits)   # the stages', then the run's
    return {"run_id": decision.run_id, "rows": report["rows"], "output": final.root,
            "store": request.location.describe()}


def keep_failed_report(decision: Decision, report: Dict) -> Optional[str]:
    """A run that failed a gate: its report.json and report.html (with the banner naming the
    failed gates) written to `OUT/<run_id>/`, and nothing else there (no split, no `_SUCCESS`);
    the report artifact recorded LIVE, so the store points at it. Returns the folder."""
    final = decision.final
    try:
        write_report(final.report, report)
        write_html_report(final.report_html, report, run_lineage(decision.store, decision.run_id))
        decision.recorder.artifact("DataReport", final.report, custom={"rows": json.dumps(report.get("rows", {})),
                                                                       "html": final.report_html, "gates": "failed"})
    except Exception as e:  # noqa: BLE001 - the gate's failure is the run's error; a report we cannot write is logged
        log.error("could not keep the report of run %s: %s", decision.run_id, e)
        return None
    return final.root


def move_into_place(staging: str, final: str) -> None:
    """Moves a finished run's files from its staging folder to `OUT/<run_id>/` and writes
    `_SUCCESS` there last: a folder without it is not a finished run. Local folders move in one
    rename; on object stores (gs://), file by file (none is a finished split before _SUCCESS)."""
    if "://" not in staging:
        import os

        os.rename(staging, final)
    else:
        sources = [m.path for m in FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list]
        FileSystems.rename(sources, [final + src[len(staging):] for src in sources])
        remove_folder(staging)
    with FileSystems.create(FileSystems.join(final, SUCCESS)) as f:
        f.write(b"")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record_outputs(rec: RunRecorder, plan: Plan, cfg, layout: Layout, report: Dict, files,
                   data_uris: Set[str] = frozenset()) -> None:
    """Closes the plan's stages with their output artifacts and row counts (the rows of each
    data file in `data_uris`; an annotations file's rows are not counted per file)."""
    rows = report["rows"]
    splits = plan.splits
    per_file = report.get("inputs", {})
    for a in files:  # the rows each file gave, known once the job has read it
        if a.uri.endswith("inputs.json"):
            a.properties["rows"].int_value = int(sum(per_file.values()))
        elif a.uri in data_uris:
            a.properties["rows"].int_value = int(per_file.get(a.uri, 0))
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

    split_input = [clean]   # with labels, the consensus labels too
    if "labels" in plan.stages:
        labels = report.get("labels", {}).get("overall", {})
        agreement = rec.pending_artifact("LabelAgreement", layout.report + "#labels", {
            "hlp": (labels.get("hlp") or {}).get("value"),
            "fleiss_kappa": (labels.get("fleiss_kappa") or {}).get("value"),
            "krippendorff_alpha": (labels.get("krippendorff_alpha_nominal") or {}).get("value"),
            "items": labels.get("items")}, custom={"consensus": cfg.labels.consensus})
        labelled = record_labels_stage(rec, layout, report, files)   # label history, review queue, its LS link
        rec.finish_stage("labels", [agreement] + labelled, [clean], {"rows_in": rows["clean"],
                                                                      "rows_out": rows["clean"]})
        split_input = [clean, agreement]
    raw_splits = [rec.pending_artifact("Examples", layout.raw(s), {
        "split": s, "split_names": json.dumps([s]), "kind": "raw", "rows": rows[s], "span": 0, "version": 0})
        for s in splits]
    rec.finish_stage("split", raw_splits, split_input, {"rows_in": rows["clean"], "rows_out": rows["clean"]})

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
    outputs += record_tfx_outputs(rec, cfg, layout, plan.stages, splits, rows)   # TFX's Examples and statistics
    report_artifact = rec.pending_artifact("DataReport", layout.report, custom={"rows": json.dumps(rows),
                                                                               "html": layout.report_html})
    rec.finish_stage("write", [report_artifact], outputs, {"rows_in": rows["input"], "rows_out": rows["clean"]})
