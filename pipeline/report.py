"""report.json: the job's small results, and the one report the launcher writes from them.

The job (on any runner, without relying on runner metrics) computes the row funnel,
the quarantine reasons, the split balance and the label agreement as small combines and
writes them as they are to `<run>/tmp/job_results.json` (`funnel_totals`,
`WriteJobResults`). Once the job is done the launcher reads that file, assembles the
report (`assemble_report`), adds what only it knows (the statistics read back from the
saved transform graph, the run's identity and times) and writes `report.json` once
(`write_report`).
"""

import json
from typing import Dict, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from transforms.batches import ROW, SOURCE, MergeCounts, naming, value_counts


def _tally(pcoll, label: str, key: str, by: Optional[str] = None):
    """Counts of a PCollection of batches as {key: rows} (and {key:value: rows} per value
    of column `by`), to be merged with the other tallies in one combine."""
    def tally(b: pa.RecordBatch) -> Dict[str, int]:
        out = {key: b.num_rows}
        if by:
            out.update({f"{key}:{v}": n for v, n in value_counts(b.column(by)).items()})
        return out

    return pcoll | f"Tally[{label}]" >> beam.Map(tally)


def _reason_tally(b: pa.RecordBatch) -> Dict[str, int]:
    keys = pc.binary_join_element_wise(b.column("stage"), b.column("reason"), "\t")
    return {f"reason:{k}": n for k, n in value_counts(keys).items()}


def _label_tally(b: pa.RecordBatch, key: str, label: str) -> Dict[str, int]:
    from transforms.clean.validate import present_counts

    return {f"{key}:{v}": n for v, n in present_counts(b.column(label)).items()} if label in b.schema.names else {}


def _null_tally(b: pa.RecordBatch) -> Dict[str, int]:
    """Missing values (an NA value, an absent field) per input file and column of the rows read:
    {"null:<source>\t<column>": n}, for the input's quality metrics (OpenLineage)."""
    out: Dict[str, int] = {}
    for name, column in zip(b.schema.names, b.columns):
        if name.startswith("_") or column.null_count == 0:
            continue
        for source, n in value_counts(b.column(SOURCE).filter(column.is_null())).items():
            out[f"null:{source}\t{name}"] = n
    return out


def funnel_totals(read_rows, ingest_quarantine, quarantine, duplicates, splits: Dict[str, beam.PCollection],
                  label: Optional[str] = None, input_labels=None):
    """Every count of the funnel in one combine (one stage, whatever the number of counts):
    a one-element PCollection of {key: rows} that `assemble_report` reads. With `label`, the
    rows of each label value per split (`label:<split>:<value>`); `input_labels` adds tallies
    of the input's label values (`input_label:<value>`, `transforms.clean.validate.input_label_counts`)."""
    tallies = [_tally(read_rows, "read", "read", by=SOURCE),
               read_rows | "Tally[nulls]" >> beam.Map(_null_tally),
               _tally(ingest_quarantine, "ingest_quarantined", "ingest_quarantined", by=SOURCE),
               _tally(quarantine, "quarantined", "quarantined"),
               quarantine | "Tally[reasons]" >> beam.Map(_reason_tally),
               _tally(duplicates, "duplicates", "duplicates")]
    tallies += [_tally(pcoll, f"split_{name}", f"split:{name}") for name, pcoll in splits.items()]
    if label:
        tallies += [pcoll | f"LabelTally[{name}]" >> beam.Map(_label_tally, f"label:{name}", label)
                    for name, pcoll in splits.items()]
    if input_labels is not None:
        tallies.append(input_labels)
    return tallies | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombineGlobally(MergeCounts())


def feature_missing(splits: Dict[str, beam.PCollection], columns: Sequence[str]):
    """The missing (null) values of each feature column per split, the values TFT fills before
    transforming them: a one-element PCollection of {"<split>\t<column>": n} (one combine)."""
    def count(b: pa.RecordBatch, name: str) -> Dict[str, int]:
        return {f"{name}\t{c}": b.column(c).null_count for c in columns if c in b.schema.names}

    counts = [pcoll | f"Missing[{name}]" >> beam.Map(count, name) for name, pcoll in splits.items()]
    return counts | "AllMissing" >> beam.Flatten() | "SumMissing" >> beam.CombineGlobally(MergeCounts())


SAMPLES_PER_REASON = 5
MAX_SAMPLE_CHARS = 2000     # of one sample record: a report holds a glimpse, not the data


class QuarantineSamples(beam.CombineFn):
    """A few quarantined records per (stage, reason): the `k` first by (source, row), so the
    sample does not depend on bundle order. Output: {"stage\treason": [{record, _source, _row}]}.

    A batch is reduced per reason (a handful) with Arrow sorts, never per row.
    """

    def __init__(self, k: int = SAMPLES_PER_REASON):
        self._k = k

    def create_accumulator(self) -> Dict[str, list]:
        return {}

    def add_input(self, acc: Dict[str, list], batch: pa.RecordBatch) -> Dict[str, list]:
        if batch.num_rows == 0:
            return acc
        keys = pc.binary_join_element_wise(batch.column("stage"), batch.column("reason"), "\t")
        table = pa.Table.from_batches([batch]).append_column("_key", keys)
        for key in pc.unique(keys).to_pylist():
            part = table.filter(pc.equal(table.column("_key"), key))
            part = part.take(pc.sort_indices(part, [(SOURCE, "ascending"), (ROW, "ascending")])[:self._k])
            part = part.set_column(0, "record", pc.utf8_slice_codeunits(part.column("record"), 0, MAX_SAMPLE_CHARS))
            rows = part.select(["record", SOURCE, ROW]).to_pylist()
            acc[key] = self._smallest(acc.get(key, []) + rows)
        return acc

    def _smallest(self, rows: list) -> list:
        return sorted(rows, key=lambda r: (r[SOURCE] or "", r[ROW] or 0))[:self._k]

    def merge_accumulators(self, accs) -> Dict[str, list]:
        out: Dict[str, list] = {}
        for acc in accs:
            for key, rows in acc.items():
                out[key] = self._smallest(out.get(key, []) + rows)
        return out

    def extract_output(self, acc: Dict[str, list]) -> Dict[str, list]:
        return {k: acc[k] for k in sorted(acc)}


def quarantine_samples(quarantine, k: int = SAMPLES_PER_REASON):
    """A one-element PCollection: `QuarantineSamples` over every quarantined batch."""
    return quarantine | "QuarantineSamples" >> beam.CombineGlobally(QuarantineSamples(k))


def _write_json(_, path: str, **results) -> str:
    with naming(path), FileSystems.create(path) as f:
        f.write(json.dumps(results).encode())
    return path


class WriteJobResults(beam.PTransform):
    """{name: one-element PCollection} → one JSON object {name: value} at `path`.

    The input names are those `assemble_report` reads: "totals" (`funnel_totals`),
    "balance", "quarantine_samples", and with labels "labels", with long-form annotations "annotations",
    "annotation_faults", "annotation_fault_reasons" and "label_studio", with metadata columns
    "metadata_slices", with features "feature_missing". Output: the path, once written.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, results):
        p = next(iter(results.values())).pipeline
        return (p
                | "ReportSeed" >> beam.Create([None])
                | "WriteJobResults" >> beam.Map(_write_json, self._path,
                                                **{k: pvalue.AsSingleton(v) for k, v in results.items()}))


def read_json(path: str) -> Dict:
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return json.loads(f.read().decode())


def assemble_report(results: Dict, splits: Sequence[str]) -> Dict:
    """The job's results → the report's sections: rows (the funnel), quarantine_reasons
    (per stage), inputs (rows per file), input_nulls (missing values per file and column, of
    the rows that could be read), split (the balance) and labels."""
    totals = results["totals"]
    reasons: Dict[str, Dict[str, int]] = {}
    inputs: Dict[str, int] = {}
    classes: Dict[str, Dict[str, int]] = {"input": {}}
    for s in splits:
        classes[s] = {}
    nulls: Dict[str, Dict[str, int]] = {}
    for key, n in sorted(totals.items()):
        if key.startswith("label:"):
            split, value = key[len("label:"):].split(":", 1)
            classes.setdefault(split, {})[value] = n
        elif key.startswith("input_label:"):
            classes["input"][key[len("input_label:"):]] = n
        elif key.startswith("null:"):
            uri, column = key[len("null:"):].rsplit("\t", 1)
            nulls.setdefault(uri, {})[column] = n
        elif key.startswith("reason:"):
            stage, reason = key[len("reason:"):].split("\t", 1)
            reasons.setdefault(stage, {})[reason] = n
        elif key.startswith(("read:", "ingest_quarantined:")):
            uri = key.split(":", 1)[1]
            inputs[uri] = inputs.get(uri, 0) + n
    rows = {"input": totals.get("read", 0) + totals.get("ingest_quarantined", 0),
            "clean": sum(totals.get(f"split:{s}", 0) for s in splits),
            "quarantined": totals.get("quarantined", 0),
            "duplicates": totals.get("duplicates", 0)}
    for s in splits:
        rows[s] = totals.get(f"split:{s}", 0)
    report = {
        "rows": rows,
        "quarantine_reasons": reasons,
        "inputs": {uri: inputs[uri] for uri in sorted(inputs)},
        "input_nulls": nulls,
        "split": results["balance"],
    }
    if "quarantine_samples" in results:
        report["quarantine_samples"] = results["quarantine_samples"]
    if "labels" in results:
        report["labels"] = results["labels"]
        made = {c["class"]: c.get("labels_of_class", 0) for c in results["labels"].get("classes_by_agreement", [])}
        classes["input"] = {c: n for c, n in sorted(made.items()) if n}   # the classes the annotators gave
    report["label_classes"] = classes
    if "review" in results:
        report["review"] = results["review"]
    if "metadata_slices" in results:
        report["metadata_slices"] = results["metadata_slices"]
    if "near_dedup" in results:
        report["near_dedup"] = dict(results["near_dedup"], leakage=results["leakage"])
    if "leakage_checks" in results:
        report["leakage_checks"] = results["leakage_checks"]
    if "annotations" in results:
        report["labels"]["annotations"] = dict(results["annotations"], faults=results["annotation_faults"],
                                               fault_reasons=dict(sorted(results.get("annotation_fault_reasons",
                                                                                     {}).items())))
        if results.get("label_studio"):   # what the Label Studio exports held beyond their labels
            report["labels"]["annotations"]["label_studio"] = results["label_studio"]
    if "feature_missing" in results:    # {column: {split: missing values}}, splits in config order
        missing: Dict[str, Dict[str, int]] = {}
        for key, n in results["feature_missing"].items():
            split, column = key.split("\t", 1)
            missing.setdefault(column, {})[split] = n
        report["feature_missing"] = {c: {s: missing[c].get(s, 0) for s in splits} for c in sorted(missing)}
    return report


def write_report(path: str, report: Dict) -> None:
    with naming(path), FileSystems.create(path) as f:
        f.write(json.dumps(report, indent=2).encode())


def run_lineage(store, run_id: str) -> Optional[Dict]:
    """The run's lineage (its final outputs, upstream) as `Graph.to_json()`; None when the
    store does not know the run."""
    from pipeline.lineage import Lineage, TargetNotFound

    lineage = Lineage(store)
    try:
        return lineage.graph(lineage.resolve(run_id), "upstream").to_json()
    except TargetNotFound:
        return None


def write_html_report(path: str, report: Dict, lineage: Optional[Dict]) -> None:
    """`report.html` beside `report.json` (see `pipeline/html_report.py`)."""
    from pipeline.html_report import render_html

    with naming(path), FileSystems.create(path) as f:
        f.write(render_html(report, lineage).encode("utf-8"))


def rerender(target: str, store_text: Optional[str]) -> str:
    """`dataprep report RUN_ID|RUN_DIR`: report.html written again from the run's
    report.json and the store's lineage; returns its path.

    Raises:
      FileNotFoundError: no such run folder, or the run has no report.json.
      pipeline.lineage.TargetNotFound: a run id the store does not know.
    """
    from pipeline.lineage import TargetNotFound, list_runs

    store = None
    if FileSystems.exists(FileSystems.join(target, "report.json")):
        run_dir = target
        report = read_json(FileSystems.join(run_dir, "report.json"))
        store_text = store_text or report.get("store")
    else:
        if not store_text:
            raise FileNotFoundError(f"{target}: not a run folder with report.json (for a run id, give --store)")
        store = _open_existing(store_text)
        found = [r for r in list_runs(store) if r["run_id"] == target]
        if not found:
            raise TargetNotFound(f"no run {target!r} in the store")
        run_dir = found[0].get("output")
        if not run_dir or not FileSystems.exists(FileSystems.join(run_dir, "report.json")):
            raise FileNotFoundError(f"run {target}: no report.json under {run_dir}")
        report = read_json(FileSystems.join(run_dir, "report.json"))
    lineage = None
    if store is None and store_text:
        try:
            store = _open_existing(store_text)
        except FileNotFoundError:
            store = None    # the page is still written, without the graph
    if store is not None and report.get("run_id"):
        lineage = run_lineage(store, report["run_id"])
    path = FileSystems.join(run_dir, "report.html")
    write_html_report(path, report, lineage)
    return path


def _open_existing(store_text: str):
    from pipeline.metadata import StoreLocation, open_store

    location = StoreLocation.parse(store_text)
    if location.sqlite and not FileSystems.exists(location.sqlite):
        raise FileNotFoundError(f"no metadata store at {location.sqlite} (use --store)")
    return open_store(location)
