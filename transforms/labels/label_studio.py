"""Label Studio's JSON, both ways: its export read as annotation rows (`export_annotations`),
and the review queue written as its tasks and labelling config (`label_studio_tasks`,
`label_studio_config`). No Label Studio code: the formats are those of its docs
("Label Studio JSON format of annotated tasks", "Import pre-annotated data").

An export is a JSON list of tasks: `{"id", "data": {...}, "annotations": [{"completed_by",
"was_cancelled", "result": [{"from_name", "to_name", "type": "choices", "value":
{"choices": [...]}}], ...}], "predictions": [...], ...}`. Each annotation of a task is one
label of one annotator for the task's example (`data[id_field]`). Cancelled (skipped)
annotations and tasks without annotations add no label; an annotation that is not one
clear label (no choice, several choices, no example id, no annotator) is a fault with a
reason, never dropped without a word.
"""

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import EXAMPLE_ID, ROW, SOURCE, quarantine_batch

RUN_ID = "dataprep_run_id"      # the data key that carries the review queue's run id (links an export back)
ITEM = "dataprep_item"          # the data key of the item as text: what the labelling config shows
LS_FROM, LS_TO = "label", "item"    # the control and object tag names of the generated labelling config

# The fault reasons of an export (stage "labels", in annotation_faults/).
NO_CHOICE = "annotation_no_choice"                  # submitted without a choice of the control
SEVERAL_CHOICES = "annotation_several_choices"      # more than one choice: not one label
MISSING_FIELD = "annotation_missing_field"          # no example id in the task's data, or no annotator

# What is read of each annotation's results: Arrow ignores the other keys of the dicts.
_RESULTS = pa.list_(pa.struct([("from_name", pa.string()), ("type", pa.string()),
                               ("value", pa.struct([("choices", pa.list_(pa.string()))]))]))


class ExportError(ValueError):
    """The file is not Label Studio's JSON export (a list of tasks with `annotations`)."""


def load_export(data: bytes, where: str) -> List[Dict[str, Any]]:
    """The tasks of an export's bytes.

    Raises:
      ExportError: not JSON, or not a list of task objects.
    """
    try:
        tasks = json.loads(data)
    except ValueError as e:
        raise ExportError(f"{where}: not JSON ({e})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ExportError(f"{where}: not Label Studio's JSON export (a list of tasks)")
    if tasks and not any("annotations" in t for t in tasks):
        raise ExportError(f"{where}: its tasks have no 'annotations' (export with exportType=JSON, not JSON_MIN "
                          "or CSV)")
    return tasks


def annotator_of(completed_by: Any) -> Optional[str]:
    """The annotator of an annotation: `completed_by` is the user's numeric id, or (in some
    exports) the user as an object: its email where it has one, else its id."""
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("id")
        return None if who in (None, "") else str(who)
    if completed_by is None or isinstance(completed_by, bool):
        return None
    return str(completed_by)


def choice_controls(tasks: Sequence[Dict[str, Any]]) -> List[str]:
    """The names of the Choices controls the export's annotations answered, sorted."""
    names = set()
    for t in tasks:
        for a in t.get("annotations") or ():
            for r in a.get("result") or ():
                if isinstance(r, dict) and r.get("type") == "choices" and r.get("from_name"):
                    names.add(str(r["from_name"]))
    return sorted(names)


def export_run_ids(tasks: Sequence[Dict[str, Any]]) -> List[str]:
    """The dataprep runs whose review queues the export's tasks came from (`data.dataprep_run_id`)."""
    return sorted({str(t["data"][RUN_ID]) for t in tasks
                   if isinstance(t.get("data"), dict) and t["data"].get(RUN_ID)})


def export_annotations(data: bytes, source: str, id_field: str = EXAMPLE_ID, from_name: Optional[str] = None
                       ) -> Tuple[pa.RecordBatch, pa.RecordBatch, Dict[str, int]]:
    """An export's bytes → (rows, faults, counts).

    `rows`: one per submitted annotation with one choice: `id` (the example, `data[id_field]`),
    `annotator` (`annotator_of(completed_by)`), `label` (the choice of control `from_name`;
    None: of any Choices control), `_source` (= `source`) and `_row`, the annotation's
    1-based position in the file (tasks in file order, then their annotations). `faults`:
    QUARANTINE_SCHEMA rows (stage "labels") for the annotations that are not one clear
    label (`NO_CHOICE`, `SEVERAL_CHOICES`, `MISSING_FIELD`), the record being the
    annotation's task id, example, annotator and choices as JSON. `counts`: tasks,
    annotations, cancelled, unannotated_tasks.

    JSON is parsed by the json module; what is kept of each annotation goes to Arrow as
    typed arrays, and the choices are picked, counted and checked with Arrow compute.

    Raises:
      ExportError: see `load_export`.
    """
    tasks = load_export(data, source)
    # The few fields read, per task and annotation; everything else of the export is left alone.
    ann_task: List[int] = []
    who: List[Optional[str]] = []
    cancelled: List[bool] = []
    results: List[Any] = []
    ann_ids: List[Any] = []
    example: List[Optional[str]] = []
    task_ids: List[Any] = []
    for i, t in enumerate(tasks):
        d = t.get("data") if isinstance(t.get("data"), dict) else {}
        v = d.get(id_field)
        example.append(None if v is None or v == "" else str(v))
        task_ids.append(t.get("id"))
        for a in t.get("annotations") or ():
            ann_task.append(i)
            who.append(annotator_of(a.get("completed_by")))
            cancelled.append(bool(a.get("was_cancelled")))
            res = a.get("result")
            results.append([r for r in res if isinstance(r, dict)] if isinstance(res, list) else [])
            ann_ids.append(a.get("id"))
    n = len(ann_task)
    counts = {"tasks": len(tasks), "annotations": n, "cancelled": int(sum(cancelled)),
              "unannotated_tasks": len(tasks) - len(set(ann_task))}
    task_of = np.asarray(ann_task, np.int64)
    ids = pa.array(example, pa.string()).take(pa.array(task_of)) if n else pa.array([], pa.string())
    annotators = pa.array(who, pa.string())
    rows_no = pa.array(np.arange(1, n + 1), pa.int64())

    # The choices of the control, per annotation: the matching results flattened, then their choices.
    res = pa.array(results, _RESULTS)
    flat = pc.list_flatten(res)
    owner = pc.list_parent_indices(res)
    match = pc.equal(flat.field("type"), "choices")
    if from_name is not None:
        match = pc.and_(match, pc.equal(flat.field("from_name"), from_name))
    match = pc.fill_null(match, False)
    lists = flat.field("value").field("choices").filter(match)
    choices = pc.list_flatten(lists)
    choice_owner = pc.take(owner.filter(match), pc.list_parent_indices(lists)) if len(choices) else \
        pa.array([], pa.int64())
    owner_np = np.asarray(choice_owner.to_numpy(zero_copy_only=False), np.int64)
    n_choices = np.bincount(owner_np, minlength=n) if n else np.zeros(0, np.int64)
    first = np.full(n, -1, np.int64)
    if len(owner_np):   # the first choice of each annotation (its only one, where it is a label)
        order = np.argsort(owner_np, kind="stable")
        starts = np.searchsorted(owner_np[order], np.arange(n))
        has = n_choices > 0
        first[has] = order[starts[has]]
    label = choices.take(pa.array(np.where(first >= 0, first, 0))) if len(choices) else pa.nulls(n, pa.string())
    label = pc.if_else(pa.array(first >= 0), label, pa.nulls(n, pa.string()))

    live = ~np.asarray(cancelled, bool)
    missing = np.asarray(pc.or_(pc.is_null(ids), pc.is_null(annotators)).to_numpy(zero_copy_only=False), bool) \
        if n else np.zeros(0, bool)
    reason = np.where(missing, MISSING_FIELD, np.where(n_choices == 0, NO_CHOICE,
                                                      np.where(n_choices > 1, SEVERAL_CHOICES, "")))
    good = live & (reason == "")
    bad = live & (reason != "")
    rows = pa.RecordBatch.from_arrays([ids.filter(pa.array(good)), annotators.filter(pa.array(good)),
                                       label.filter(pa.array(good)), pa.array([source] * int(good.sum()), pa.string()),
                                       rows_no.filter(pa.array(good))],
                                      names=["id", "annotator", "label", SOURCE, ROW])
    faults = _faults(np.flatnonzero(bad), reason, task_of, task_ids, ann_ids, ids, annotators, choices, owner_np,
                     source)
    return rows, faults, counts


def _faults(which: np.ndarray, reason: np.ndarray, task_of: np.ndarray, task_ids: List[Any], ann_ids: List[Any],
            ids: pa.Array, annotators: pa.Array, choices: pa.Array, owner: np.ndarray, source: str) -> pa.RecordBatch:
    """The fault rows of the annotations at `which` (few: built one by one)."""
    texts, reasons = [], []
    by_owner: Dict[int, List[str]] = {}
    mine = np.isin(owner, which)
    for c, o in zip(choices.filter(pa.array(mine)).to_pylist(), owner[mine].tolist()):
        by_owner.setdefault(o, []).append(c)
    for k in which.tolist():
        texts.append(json.dumps({"task": task_ids[task_of[k]], "annotation": ann_ids[k], "example_id": ids[k].as_py(),
                                 "annotator": annotators[k].as_py(), "choices": by_owner.get(k, [])},
                                default=str, ensure_ascii=False))
        reasons.append(str(reason[k]))
    return quarantine_batch(pa.array(texts, pa.string()), pa.array(reasons, pa.string()), "labels", source,
                            pa.array((which + 1).astype(np.int64), pa.int64()))


# ---- the review queue as Label Studio tasks ------------------------------------------------

def _plain(value: Any) -> Any:
    """A value as JSON has it: NaN and infinities become null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def item_text(row: Dict[str, Any], shown: Sequence[str]) -> str:
    """The item as the labeller reads it: one `column: value` line per shown column."""
    return "\n".join(f"{c}: {'' if row.get(c) is None else row.get(c)}" for c in shown)


def earlier_predictions(given: Dict[str, str], run_id: str) -> List[Dict[str, Any]]:
    """The earlier labels of an item as Label Studio predictions: one per distinct label,
    `model_version` the run id and `score` the share of the item's labels that were it (the
    consensus' score is the item's agreement), highest first. Who gave which is not said."""
    values = list(given.values())
    out = []
    for label in sorted(set(values), key=lambda v: (-values.count(v), v)):
        out.append({"model_version": run_id, "score": round(values.count(label) / len(values), 6),
                    "result": [{"from_name": LS_FROM, "to_name": LS_TO, "type": "choices",
                                "value": {"choices": [label]}}]})
    return out


def label_studio_tasks(rows: Sequence[Dict[str, Any]], earlier: Sequence[Dict[str, str]], shown: Sequence[str],
                       run_id: str, example_ids: Sequence[str]) -> List[Dict[str, Any]]:
    """Label Studio tasks (its import format: a list of `{"data": {...}, "predictions":
    [...]}`) for the review queue's rows.

    `data` shows the item, not its earlier labels (a reviewer who reads "insp-06:
    discoloration; insp-09: scratch" is anchored): the example's id, the `shown` columns
    (the data columns and metadata), the item as text (`ITEM`, what the labelling config
    shows) and the queue's run id (`RUN_ID`, so an export can be linked back). The earlier
    labels (`earlier[i]`: {annotator: label}) go in as predictions (`earlier_predictions`),
    which Label Studio shows only when asked where the project does not prelabel with them.
    """
    tasks = []
    for row, given, example_id in zip(rows, earlier, example_ids):
        data: Dict[str, Any] = {EXAMPLE_ID: example_id}
        data.update({c: _plain(row.get(c)) for c in shown if c != EXAMPLE_ID})
        data[ITEM] = item_text(row, shown)
        data[RUN_ID] = run_id
        tasks.append({"data": data, "predictions": earlier_predictions(given, run_id) if given else []})
    return tasks


def label_studio_config(classes: Sequence[str]) -> str:
    """The labelling config the tasks fit: the example's id as a header, the item as text,
    one choice per class (`labels.classes`, or the labels seen)."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Header value="${EXAMPLE_ID}"/>\n  <Text name="{LS_TO}" value="${ITEM}"/>\n'
            f'  <Choices name="{LS_FROM}" toName="{LS_TO}" choice="single" showInline="true">\n{choices}\n'
            f'  </Choices>\n</View>\n')
