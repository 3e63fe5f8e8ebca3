"""report.json: the job's small results, and the one report the launcher writes from them.

The job (on any runner, without relying on runner metrics) computes the row funnel,
the quarantine reasons, the split balance and the label agreement as small combines and
writes them as they are to `<run>/tmp/job_results.json` (`funnel_totals`,
`WriteJobResults`). Once the job is done the launcher reads that file, assembles the
report (`assemble_report`), adds what only it knows (the statistics read back from the
saved transform graph, the run's identity and times) and writes `report.json` once
(`write_report`).
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from transforms.batches import SOURCE, MergeCounts, value_counts


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


def funnel_totals(read_rows, ingest_quarantine, quarantine, duplicates, splits: Dict[str, beam.PCollection]):
    """Every count of the funnel in one combine (one stage, whatever the number of counts):
    a one-element PCollection of {key: rows} that `assemble_report` reads."""
    tallies = [_tally(read_rows, "read", "read", by=SOURCE),
               _tally(ingest_quarantine, "ingest_quarantined", "ingest_quarantined", by=SOURCE),
               _tally(quarantine, "quarantined", "quarantined"),
               quarantine | "Tally[reasons]" >> beam.Map(_reason_tally),
               _tally(duplicates, "duplicates", "duplicates")]
    tallies += [_tally(pcoll, f"split_{name}", f"split:{name}") for name, pcoll in splits.items()]
    return tallies | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombineGlobally(MergeCounts())


def _write_json(_, path: str, **results) -> str:
    with FileSystems.create(path) as f:
        f.write(json.dumps(results).encode())
    return path


class WriteJobResults(beam.PTransform):
    """{name: one-element PCollection} → one JSON object {name: value} at `path`.

    The input names are those `assemble_report` reads: "totals" (`funnel_totals`),
    "balance", and with labels "labels", with long-form annotations "annotations" and
    "annotation_faults". Output: the path, once written.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, results: Dict[str, beam.PCollection]):
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
    (per stage), inputs (rows per file), split (the balance) and labels."""
    totals = results["totals"]
    reasons: Dict[str, Dict[str, int]] = {}
    inputs: Dict[str, int] = {}
    for key, n in sorted(totals.items()):
        if key.startswith("reason:"):
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
        "split": results["balance"],
    }
    if "labels" in results:
        report["labels"] = results["labels"]
    if "near_dedup" in results:
        report["near_dedup"] = dict(results["near_dedup"], leakage=results["leakage"])
    if "annotations" in results:
        report["labels"]["annotations"] = dict(results["annotations"], faults=results["annotation_faults"])
    return report


def write_report(path: str, report: Dict) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(report, indent=2).encode())
