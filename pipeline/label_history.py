"""Label history: where an example's labels came from, recorded in MLMD and read back.

Recorded by the launcher: the annotation files (`labels.annotations`, each with its round)
are the labels stage's inputs, not ingest's; its outputs are the label agreement, the
label history (`annotations/` of the run: every label read, with its source file, round and
whether it counted) and the review queue (`review/`). A Label Studio export is linked to the
review queue it answers, found through the run id its tasks carry (`data.dataprep_run_id`):
an execution `dataprep.label_studio` (the relabelling) with the queue as its input and the
export as its output, so the lineage of a run's splits reaches back through the export to
the run whose queue was relabelled.

Read back (`dataprep lineage --example ID`): every label the example got in the COMPLETE
runs of its pipeline (annotator, label, source file, round) and each run's consensus.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from ml_metadata.proto import metadata_store_pb2 as pb

ANNOTATIONS_FIELD = "labels.annotations"
LABEL_HISTORY, REVIEW_QUEUE = "LabelHistory", "ReviewQueue"     # artifact types (pipeline/metadata.py)
RELABEL_STAGE = "label_studio"                                   # execution type dataprep.label_studio


def _field_of(a: pb.Artifact) -> str:
    """The config field an input artifact came from: its name is `<run_id>:<field>:<uri>`."""
    parts = a.name.split(":", 2)
    return parts[1] if len(parts) == 3 else ""


def is_annotations(a: pb.Artifact) -> bool:
    """An input artifact of `labels.annotations` (one source or one of a list)."""
    field = _field_of(a)
    return field == ANNOTATIONS_FIELD or field.startswith(ANNOTATIONS_FIELD + "[")


def round_of(a: pb.Artifact) -> int:
    """The round of an annotation file's artifact: `labels.annotations[i]` is round i + 1."""
    m = re.fullmatch(re.escape(ANNOTATIONS_FIELD) + r"\[(\d+)\]", _field_of(a))
    return int(m.group(1)) + 1 if m else 1


def stage_inputs(stage: str, inputs: Sequence[pb.Artifact]) -> List[pb.Artifact]:
    """The input files each stage reads: ingest the data (or their manifest), labels the
    annotation files."""
    if stage == "ingest":
        return [a for a in inputs if not is_annotations(a)]
    if stage == "labels":
        return [a for a in inputs if is_annotations(a)]
    return []


def record_labels_stage(rec, layout, report: Dict, inputs: Sequence[pb.Artifact]) -> List[pb.Artifact]:
    """The labels stage's outputs beside the agreement, recorded PENDING: the label history
    (with long-form annotations) and the review queue (with `labels.review`). Also gives each
    annotation file's artifact its round and links each Label Studio export to the review
    queue(s) it answers (`link_export`). `layout` is the run's final layout."""
    labels = report.get("labels") or {}
    outputs = []
    annotations = labels.get("annotations")
    if annotations is not None:
        read = sum(r.get("labels", 0) for r in (annotations.get("rounds") or {}).values())
        outputs.append(rec.pending_artifact(LABEL_HISTORY, layout.annotations, {"rows": read}, custom={
            "rounds": json.dumps(annotations.get("rounds") or {}), "faults": annotations.get("faults", 0)}))
    review = report.get("review")
    if review is not None:
        outputs.append(rec.pending_artifact(REVIEW_QUEUE, layout.review, {"queued": review.get("queued", 0),
                                                                          "run_id": rec.run_id}))
    files = [a for a in inputs if is_annotations(a)]
    for a in files:
        a.custom_properties["round"].int_value = round_of(a)
    if files:
        rec.store.put_artifacts(files)
    for a in files:
        if a.properties["format"].string_value == "label_studio":
            link_export(rec, a)
    return outputs


def link_export(rec, export: pb.Artifact) -> List[str]:
    """Links a Label Studio export's artifact to the review queue(s) it answers: the runs named
    by its tasks' `data.dataprep_run_id`, where they are in this store with a review queue.
    Records one COMPLETE `dataprep.label_studio` execution (INPUT: the queues, OUTPUT: the
    export) and notes the run ids on the export (`review_runs`). Returns the linked run ids."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.metadata import RUN_CONTEXT
    from transforms.labels.label_studio import ExportError, export_run_ids, load_export

    try:
        with FileSystems.open(export.uri, compression_type="uncompressed") as f:
            run_ids = export_run_ids(load_export(f.read(), export.uri))
    except (OSError, ExportError):   # it was read and checked before the job: a file gone since links nothing
        return []
    export.custom_properties["review_runs"].string_value = json.dumps(run_ids)
    rec.store.put_artifacts([export])
    queue_type = rec.types.artifact_type(REVIEW_QUEUE)
    queues, linked = [], []
    for run_id in run_ids:
        ctx = rec.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if ctx is None:
            continue
        found = [q for q in rec.store.get_artifacts_by_context(ctx.id)
                 if q.type_id == queue_type and q.state == pb.Artifact.LIVE]
        queues += found
        linked += [run_id] if found else []
    if not queues:
        return []
    e = pb.Execution(type_id=rec.types.execution_type(RELABEL_STAGE), last_known_state=pb.Execution.COMPLETE)
    e.name = f"{rec.run_id}:{RELABEL_STAGE}:{export.id}"
    e.properties["run_id"].string_value = rec.run_id
    e.custom_properties["review_runs"].string_value = json.dumps(linked)
    e.custom_properties["tool"].string_value = "Label Studio"
    events = [(q, pb.Event(type=pb.Event.INPUT)) for q in queues] + [(export, pb.Event(type=pb.Event.OUTPUT))]
    with rec.lock:
        rec.store.put_execution(e, events, rec._contexts())
    return linked


# ---- reading it back ------------------------------------------------------------------------

def _label_column(config_text: str) -> Optional[str]:
    import yaml

    try:
        return (yaml.safe_load(config_text or "") or {}).get("schema", {}).get("label")
    except (yaml.YAMLError, AttributeError):
        return None


def _rows_of(uri: str, example_id: str, columns: Optional[Sequence[str]] = None):
    """The rows of a Parquet folder (or file) whose example_id is `example_id`, as dicts."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if not os.path.exists(uri):
        return []
    data = ds.dataset(uri, format="parquet")
    if "example_id" not in data.schema.names:
        return []
    cols = [c for c in columns if c in data.schema.names] if columns else None
    return data.to_table(columns=cols, filter=pc.field("example_id") == example_id).to_pylist()


def _run_labels(store, ctx, example_id: str, types: Dict[int, str]) -> Optional[Dict]:
    """One run's labels of the example and its consensus; None when the run has neither."""
    from pipeline.lineage import _props
    from transforms.labels.review import PARQUET, REASON

    props = _props(ctx)
    arts = [a for a in store.get_artifacts_by_context(ctx.id) if a.state == pb.Artifact.LIVE]
    of = lambda name: [a for a in arts if types.get(a.type_id) == name]   # noqa: E731
    history = [r for a in of(LABEL_HISTORY) for r in _rows_of(a.uri, example_id)]
    label = _label_column(str(props.get("config") or ""))
    where, consensus, agreement, count, given = None, None, None, None, None
    for a in sorted(of("Examples"), key=lambda a: a.uri):
        if a.properties["kind"].string_value != "raw":
            continue
        rows = _rows_of(a.uri, example_id)
        if rows:
            row = rows[0]
            where = a.properties["split"].string_value
            consensus, agreement, count = row.get(label), row.get("label_agreement"), row.get("label_count")
            given = row.get("annotations")
            break
    queued = None
    for a in of(REVIEW_QUEUE):
        rows = _rows_of(os.path.join(a.uri, PARQUET), example_id)
        if rows:
            queued = rows[0].get(REASON)
            if where is None:   # a tie: quarantined, and queued
                where, agreement, count = "quarantine", rows[0].get("label_agreement"), rows[0].get("label_count")
                given = rows[0].get("annotations")
    if where is None and history:
        where = "not in a split (quarantined or a duplicate)"
    if not history and where is None:
        return None
    if not history and given:   # a run from before the history was written: its labels, without their files
        history = [{"annotator": k, "label": v, "round": None, "used": True, "_source": None, "_row": None}
                   for k, v in json.loads(given).items()]
    return {"run_id": ctx.name, "started": props.get("started"), "labels": history, "where": where,
            "consensus": consensus, "agreement": agreement, "label_count": count, "queued": queued}


def label_history(store, example_id: str, run_id: Optional[str] = None) -> Dict:
    """Every label `example_id` got in the COMPLETE runs of a pipeline (that of `run_id`, else
    of the latest COMPLETE run), and each run's consensus.

    Returns {"example_id", "pipeline", "labels": [{annotator, label, round, source, row,
    used_in: [run ids], superseded_in: [run ids]}], "runs": [{run_id, started, where,
    consensus, agreement, label_count, queued, labels: n}]}; a label is one line of one
    source file, listed once however many runs read it (its round as the latest run numbered it).

    Raises:
      TargetNotFound: `run_id` is not in the store.
    """
    from pipeline.lineage import TargetNotFound, _props, list_runs
    from pipeline.metadata import RUN_CONTEXT

    runs = list_runs(store)
    if run_id is not None:
        ctx = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if ctx is None:
            raise TargetNotFound(f"no run {run_id!r} in the store")
        pipeline = _props(ctx).get("pipeline")
    else:
        done = [r for r in runs if r["status"] == "COMPLETE"]
        pipeline = done[-1]["pipeline"] if done else None
    types = {t.id: t.name for t in store.get_artifact_types()}
    labels: Dict[Tuple, Dict] = {}
    per_run: List[Dict] = []
    for r in runs:
        if r["status"] != "COMPLETE" or r["pipeline"] != pipeline:
            continue
        found = _run_labels(store, store.get_context_by_type_and_name(RUN_CONTEXT, r["run_id"]), example_id, types)
        if found is None:
            continue
        for h in found["labels"]:
            key = (h.get("_source"), h.get("_row"), h["annotator"], h["label"])
            entry = labels.setdefault(key, {"annotator": h["annotator"], "label": h["label"], "round": h.get("round"),
                                            "source": h.get("_source"), "row": h.get("_row"), "used_in": [],
                                            "superseded_in": []})
            entry["round"] = h.get("round")
            entry["used_in" if h.get("used") else "superseded_in"].append(r["run_id"])
        per_run.append({k: v for k, v in found.items() if k != "labels"} | {"labels": len(found["labels"])})
    ordered = sorted(labels.values(), key=lambda e: (e["round"] or 0, e["source"] or "", e["row"] or 0,
                                                     e["annotator"]))
    return {"example_id": example_id, "pipeline": pipeline, "labels": ordered, "runs": per_run}


def format_label_history(h: Dict) -> str:
    """The history as text: one line per label, then one per run."""
    if not h["labels"] and not h["runs"]:
        return f"no labels of {h['example_id']} in the runs of {h['pipeline']}"
    lines = [f"labels of {h['example_id']} ({len(h['labels'])}):",
             f"  {'round':>5}  {'annotator':<24} {'label':<16} source"]
    for e in h["labels"]:
        where = f"{e['source']}:{e['row']}" if e["source"] else "(a run without label history)"
        used = f"used in {', '.join(e['used_in'])}" if e["used_in"] else ""
        superseded = f"superseded in {', '.join(e['superseded_in'])}" if e["superseded_in"] else ""
        lines.append(f"  {e['round'] if e['round'] is not None else '?':>5}  {str(e['annotator']):<24} "
                     f"{str(e['label']):<16} {where}  {'; '.join(x for x in (used, superseded) if x)}")
    lines.append("consensus per run:")
    for r in h["runs"]:
        if r["consensus"] is not None:
            verdict = (f"{r['consensus']} (agreement {r['agreement']:.2f} of {r['label_count']} labels), "
                       f"in {r['where']}")
        else:
            verdict = f"no consensus, {r['where']}"
        queued = f"; queued for review ({r['queued']})" if r["queued"] else ""
        lines.append(f"  {r['run_id']}  {verdict}{queued}")
    return "\n".join(lines)
