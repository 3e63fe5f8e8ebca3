"""What changed between two rounds of labelling: two runs of one pipeline compared.

Per class, HLP and kappa before → after (from both runs' report.json); how many
consensus labels changed, from which class to which; the review queue's size; and split
churn: how many examples moved between splits, by direction. In a run, the last two are
counted by the job itself (`transforms/split/churn.py`: the earlier run's split files read
for their `example_id` and label columns, joined by hash bucket), so the launcher holds
nothing of the data; `dataprep diff` reads both runs' split files for those two columns
with Arrow and joins them in memory (`read_assignment`).

Used by `dataprep diff RUN_A RUN_B` (`compare_runs`) and by a run whose pipeline had an
earlier COMPLETE run (`against_previous`, the `rounds` section of report.json and
report.html). The earlier run is also what sticky splits keep (`sticky_inputs`): its split
folders are handed to the graph, which reads them with Beam's Parquet source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline.config import ConfigError
from transforms.batches import EXAMPLE_ID

SPLIT = "split"
LABEL = "label"


@dataclass(frozen=True)
class Round:
    """One run as a round: its id, its report (report.json; None when it is gone), the
    folder that holds its `raw/<split>/` files, and its label column."""

    run_id: str
    report: Optional[Dict]
    folder: Optional[str]
    label: Optional[str]


def label_column(config_text: Optional[str]) -> Optional[str]:
    """The label column (`schema.label`) of a run's stored config text, or None."""
    try:
        data = yaml.safe_load(config_text or "") or {}
        return (data.get("schema") or {}).get("label")
    except yaml.YAMLError:
        return None


def _run_properties(store, run_id: str) -> Dict:
    from pipeline.lineage import _props, _run_context

    return _props(_run_context(store, run_id))


def run_round(store, run_id: str) -> Round:
    """A run of the store as a Round (its report None when its folder or report.json is gone).

    Raises:
      pipeline.lineage.TargetNotFound: no such run.
    """
    props = _run_properties(store, run_id)
    folder = props.get("output") or None
    report_path = FileSystems.join(folder, "report.json") if folder else None
    report = _read_json(report_path) if report_path and FileSystems.exists(report_path) else None
    return Round(run_id, report, folder, label_column(props.get("config")))


def split_folders(folder: str) -> Dict[str, str]:
    """{split name: its folder} of the raw splits under a run's folder, from the files there."""
    found = FileSystems.match([FileSystems.join(folder, "raw", "*", "*.parquet")])[0].metadata_list
    out: Dict[str, str] = {}
    for m in found:
        parent = m.path.rsplit("/", 1)[0]
        out[parent.rsplit("/", 1)[1]] = parent
    return dict(sorted(out.items()))


def split_patterns(previous: Optional[Round]) -> Dict[str, str]:
    """{split name: file pattern} of an earlier run's raw splits, for the job to read (the
    churn since it); {} when there is no such run, its report or its files are gone."""
    if previous is None or previous.report is None or not previous.folder:
        return {}
    return {name: FileSystems.join(path, "*.parquet") for name, path in split_folders(previous.folder).items()}


def sticky_inputs(previous: Optional[Round]) -> Dict[str, str]:
    """`split.sticky`: {split name: file pattern} of the earlier run's raw splits, for the
    graph to read; {} when the pipeline has no earlier COMPLETE run (the first round).

    Raises:
      ConfigError: the earlier run is known but its split files are gone (a sticky run
        cannot keep splits it cannot read; nothing is recorded).
    """
    if previous is None:
        return {}
    folders = split_folders(previous.folder) if previous.folder else {}
    if not folders:
        raise ConfigError(f"split.sticky: the split files of run {previous.run_id}, the pipeline's last COMPLETE "
                          f"run, are gone ({previous.folder}): they say which split each example keeps")
    return {name: FileSystems.join(path, "*.parquet") for name, path in folders.items()}


# ---- reading and comparing -------------------------------------------------------------------

def read_assignment(folder: str, label: Optional[str]) -> pa.Table:
    """(example_id, split, label) of every example in a run's raw splits: each Parquet file
    read for its example_id and label columns only."""
    parts = []
    for name, path in split_folders(folder).items():
        for m in FileSystems.match([FileSystems.join(path, "*.parquet")])[0].metadata_list:
            with FileSystems.open(m.path) as f:
                pf = pq.ParquetFile(f)
                columns = [EXAMPLE_ID] + ([label] if label and label in pf.schema_arrow.names else [])
                t = pf.read(columns=columns)
            ids = t.column(EXAMPLE_ID).cast(pa.string())
            labels = (t.column(label).cast(pa.string()) if len(columns) > 1
                      else pa.nulls(t.num_rows, pa.string()))
            split = pa.DictionaryArray.from_arrays(pa.array(np.zeros(t.num_rows, np.int32)),
                                                   pa.array([name])).cast(pa.string())   # no Python per row
            parts.append(pa.table({EXAMPLE_ID: ids, SPLIT: split, LABEL: labels}))
    if not parts:
        return pa.table({EXAMPLE_ID: pa.array([], pa.string()), SPLIT: pa.array([], pa.string()),
                         LABEL: pa.array([], pa.string())})
    return pa.concat_tables(parts)


def _transitions(joined: pa.Table, column: str) -> List[Dict]:
    """[{from, to, examples}] of the joined rows whose `column` differs, most examples first."""
    a, b = f"{column}_a", f"{column}_b"
    left, right = joined.column(a), joined.column(b)
    differ = pc.coalesce(pc.not_equal(left, right), pc.xor(pc.is_null(left), pc.is_null(right)))
    moved = joined.filter(differ)
    if moved.num_rows == 0:
        return []
    counts = moved.group_by([a, b]).aggregate([(EXAMPLE_ID, "count")])
    rows = [{"from": r[a], "to": r[b], "examples": r[f"{EXAMPLE_ID}_count"]} for r in counts.to_pylist()]
    return sorted(rows, key=lambda r: (-r["examples"], str(r["from"]), str(r["to"])))


def compare_assignments(before: pa.Table, after: pa.Table) -> Dict:
    """Split churn and consensus changes between two `read_assignment` tables, joined by
    example_id: {"split_churn": {compared, moved, moves, added, removed},
    "consensus": {compared, changed, changes}}. Only examples in a split of both runs are
    compared; `added`/`removed` count those in the splits of only one."""
    joined = before.join(after, keys=EXAMPLE_ID, join_type="inner", left_suffix="_a", right_suffix="_b")
    compared = joined.num_rows
    moves = _transitions(joined, SPLIT)
    changes = _transitions(joined, LABEL)
    return {"split_churn": {"compared": compared, "moved": sum(r["examples"] for r in moves), "moves": moves,
                            "added": after.num_rows - compared, "removed": before.num_rows - compared},
            "consensus": {"compared": compared, "changed": sum(r["examples"] for r in changes), "changes": changes}}


def changes_from_counts(counts: Dict[str, int]) -> Dict:
    """`compare_assignments`' result from the job's counts (`transforms/split/churn.py`)."""
    def transitions(kind: str) -> List[Dict]:
        rows = []
        for key, n in counts.items():
            if key.startswith(kind + "\t"):
                _, a, b = key.split("\t", 2)
                rows.append({"from": a or None, "to": b or None, "examples": int(n)})
        return sorted(rows, key=lambda r: (-r["examples"], str(r["from"]), str(r["to"])))

    compared = int(counts.get("compared", 0))
    moves, changes = transitions("move"), transitions("label")
    return {"split_churn": {"compared": compared, "moved": sum(r["examples"] for r in moves), "moves": moves,
                            "added": int(counts.get("added", 0)), "removed": int(counts.get("removed", 0))},
            "consensus": {"compared": compared, "changed": sum(r["examples"] for r in changes), "changes": changes}}


def _value(block) -> Optional[float]:
    return block.get("value") if isinstance(block, dict) else block


def _classes(report: Dict) -> Dict[str, Dict]:
    labels = report.get("labels") or {}
    return {str(r.get("class")): r for r in labels.get("classes_by_agreement") or []}


def agreement_changes(before: Dict, after: Dict) -> Dict:
    """Overall HLP and Fleiss' kappa, and per class HLP, kappa and items, before → after
    (None where a run has no such figure: no labels, or "n/a" by construction)."""
    oa = (before.get("labels") or {}).get("overall") or {}
    ob = (after.get("labels") or {}).get("overall") or {}
    overall = {key: {"before": _value(oa.get(key)), "after": _value(ob.get(key))}
               for key in ("hlp", "fleiss_kappa") if key in oa or key in ob}
    ca, cb = _classes(before), _classes(after)
    order = [str(c) for c in ob.get("classes") or oa.get("classes") or []]
    order += sorted((set(ca) | set(cb)) - set(order))
    classes = []
    for c in order:
        ra, rb = ca.get(c, {}), cb.get(c, {})
        if not ra and not rb:
            continue
        classes.append({"class": c, **{key: {"before": ra.get(key), "after": rb.get(key)}
                                       for key in ("hlp", "kappa", "items")}})
    return {"overall": overall, "classes": classes}


def compare(before: Round, after: Round, counts: Optional[Dict[str, int]] = None) -> Dict:
    """The `rounds` section: what changed from round `before` to round `after`; with `counts`
    (the job's, `transforms/split/churn.py`), the churn and label changes from them instead
    of reading both runs' split files here."""
    out = {"before": before.run_id, "after": after.run_id,
           "agreement": agreement_changes(before.report, after.report),
           "review_queue": {"before": (before.report.get("review") or {}).get("queued"),
                            "after": (after.report.get("review") or {}).get("queued")}}
    # a run whose config text was not stored (built in code) has the other run's label column
    label_a, label_b = before.label or after.label, after.label or before.label
    if counts is not None:
        out.update(changes_from_counts(counts))
    else:
        out.update(compare_assignments(read_assignment(before.folder, label_a),
                                       read_assignment(after.folder, label_b)))
    sticky = ((after.report.get("split") or {}).get("sticky"))
    if sticky is not None:
        out["split_churn"]["sticky"] = True
    return out


def against_previous(previous: Optional[Round], run_id: str, report: Dict, folder: str,
                     label: Optional[str], counts: Optional[Dict[str, int]]) -> Optional[Dict]:
    """The `rounds` section of this run's report against the pipeline's previous COMPLETE
    run, from the job's churn `counts`; None for the first round, or when that run's report
    or split files were gone (the job then counted nothing)."""
    if previous is None or previous.report is None or counts is None:
        return None
    return compare(previous, Round(run_id, report, folder, label), counts)


def add_to_report(report: Dict, previous: Optional[Round], run_id: str, folder: str, label: Optional[str],
                  counts: Optional[Dict[str, int]] = None) -> None:
    """The launcher's hook after the job: this run's report gets `rounds` (what changed since
    `previous`; the churn and label changes as the job counted them, `counts`) and, with
    sticky splits, the id of the run whose splits were kept (`split.sticky.previous_run`)."""
    sticky = (report.get("split") or {}).get("sticky")
    if sticky is not None and previous is not None:
        sticky["previous_run"] = previous.run_id
    changes = against_previous(previous, run_id, report, folder, label, counts)
    if changes is not None:
        report["rounds"] = changes


def compare_runs(store, run_a: str, run_b: str) -> Optional[Dict]:
    """`compare` for two runs of the store (`dataprep diff`); None when either run's
    report is gone (a failed run, removed outputs).

    Raises:
      pipeline.lineage.TargetNotFound: a run id is not in the store.
    """
    rounds = [run_round(store, run_id) for run_id in (run_a, run_b)]
    if any(r.report is None for r in rounds):
        return None
    return compare(*rounds)


def _read_json(path: str) -> Dict:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return json.loads(f.read().decode())


# ---- text ------------------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    """A figure as text: "n/a" where there is none (undefined, or 1.0 by construction)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _arrow(block: Dict, digits: int = 3) -> str:
    return f"{fmt(block.get('before'), digits)} → {fmt(block.get('after'), digits)}"


def format_rounds(d: Dict) -> List[str]:
    """The `rounds` section as lines of text (for `dataprep diff` and the demo)."""
    lines = [f"what changed between rounds ({d['before']} → {d['after']}):"]
    overall = d["agreement"]["overall"]
    if overall:
        lines.append("  agreement: " + ", ".join(
            f"{'HLP' if k == 'hlp' else 'Fleiss kappa'} {_arrow(v)}" for k, v in overall.items()))
    classes = d["agreement"]["classes"]
    if classes:
        width = max(len(c["class"]) for c in classes) + 2
        lines.append(f"  {'class':<{width}}{'HLP':<18}{'kappa':<18}items")
        for c in classes:
            lines.append(f"  {c['class']:<{width}}{_arrow(c['hlp']):<18}{_arrow(c['kappa']):<18}"
                         f"{_arrow(c['items'])}")
    cons = d["consensus"]
    changes = ", ".join(f"{r['from']} → {r['to']} {r['examples']}" for r in cons["changes"][:8])
    lines.append(f"  consensus labels changed: {cons['changed']} of {cons['compared']} examples in both runs"
                 + (f" ({changes}{', …' if len(cons['changes']) > 8 else ''})" if changes else ""))
    queue = d["review_queue"]
    if queue["before"] is not None or queue["after"] is not None:
        lines.append(f"  review queue: {fmt(queue['before'])} → {fmt(queue['after'])} examples")
    churn = d["split_churn"]
    moves = ", ".join(f"{r['from']} → {r['to']} {r['examples']}" for r in churn["moves"])
    lines.append(f"  split churn: {churn['moved']} of {churn['compared']} examples moved"
                 + (f" ({moves})" if moves else "") + (" [sticky splits]" if churn.get("sticky") else "")
                 + f"; {churn['added']} added, {churn['removed']} gone")
    return lines

