"""Metadata slices for error analysis: per value of each metadata column, where its rows went.

For every value of every slice column (the `schema.metadata` columns): the rows read, how
many ended clean (and in which split), quarantined (and for which reason) or as duplicates,
the label mix of its clean rows and their agreement with the consensus. A row's value is the one it was
read with (the text of the file), so a value that failed its type check is a slice too.
Rows quarantined at ingest were never split into columns and belong to no slice.

A row's destination is found by joining (`_source`, `_row`) — the identity every output
keeps — of the rows read with that of the clean rows, the quarantine and the duplicates,
in buckets of whole sub-batches. Each bucket is reduced to integer counts per value, which
one per-key combine adds up; a second one keeps each column's `max_values` values with
the most rows and folds the rest into `<other>`, so no step holds more than that many
values of a column.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import (ROW, SOURCE, KeyedBatch, MergeCounts, concat_batches, key_by_bucket,
                                merge_counts)

OTHER = "<other>"
NULL = "<null>"
CLEAN, QUARANTINED, DUPLICATES = "clean", "quarantined", "duplicates"
_DEST, _REASON, _LABEL, _M, _AGREE, _SPLIT = "_dest", "_reason", "_label", "_m", "_agree", "_split"
_DEST_SCHEMA = pa.schema([(SOURCE, pa.string()), (ROW, pa.int64()), (_DEST, pa.string()), (_REASON, pa.string()),
                          (_LABEL, pa.string()), (_M, pa.int64()), (_AGREE, pa.int64()), (_SPLIT, pa.string())])
Counts = Dict[str, int]


@dataclass(frozen=True)
class SliceSpec:
    """The columns to slice by, the label column of clean rows, how many values to keep, and
    the splits the clean rows come from.

    `agreement`/`label_count`: the per-row agreement columns of the labels stage (share of
    the labels equal to the consensus, number of labels), None without several annotators.
    """

    columns: Tuple[str, ...]
    label: str
    max_values: int = 20
    agreement: Optional[str] = None
    label_count: Optional[str] = None
    splits: Tuple[str, ...] = ()   # the split names, in order: clean rows are counted per split too


def as_text(array: pa.Array) -> pa.Array:
    """A column as strings, null as `<null>` (a slice value is always text)."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    return pc.fill_null(array, NULL)


def origins(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.RecordBatch:
    """Rows read → (`_source`, `_row`, each slice column as text)."""
    arrays = [batch.column(SOURCE), pc.cast(batch.column(ROW), pa.int64())]
    return pa.RecordBatch.from_arrays(arrays + [as_text(batch.column(c)) for c in columns],
                                      names=[SOURCE, ROW, *columns])


def destinations(batch: pa.RecordBatch, kind: str, spec: SliceSpec, split: Optional[str] = None) -> pa.RecordBatch:
    """A clean, quarantine or duplicates batch → (`_source`, `_row`, where it went, the
    quarantine reason, the label, the number of labels and how many equal the consensus, and
    for clean rows the `split` they are in)."""
    n = batch.num_rows
    none_s, none_i = pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())
    reason, label, m, agree = none_s, none_s, none_i, none_i
    if kind == QUARANTINED:
        reason = batch.column("reason")
    elif kind == CLEAN:
        label = as_text(batch.column(spec.label))
        if spec.label_count and spec.label_count in batch.schema.names:
            m = pc.cast(batch.column(spec.label_count), pa.int64())
            share = batch.column(spec.agreement).to_numpy(zero_copy_only=False)
            counts = m.to_numpy(zero_copy_only=False)
            # agreement is k/m exactly: k is recovered as an integer, so the sums are exact
            agree = pa.array(np.rint(np.nan_to_num(share) * counts).astype(np.int64))
    return pa.RecordBatch.from_arrays(
        [batch.column(SOURCE), pc.cast(batch.column(ROW), pa.int64()), pa.array([kind] * n, pa.string()),
         reason, label, m, agree, pa.array([split] * n, pa.string())], schema=_DEST_SCHEMA)


def slice_counts(origin: pa.Table, dest: pa.Table, columns: Sequence[str]) -> Iterator[Tuple[Tuple[str, str], Counts]]:
    """((column, value), counts) of one bucket: its rows read joined to their destinations,
    grouped per value of each column (a few groups, never one element per row)."""
    if not origin.num_rows or not dest.num_rows:
        return
    joined = origin.join(dest, keys=[SOURCE, ROW], join_type="inner")
    keys = [_DEST, _REASON, _LABEL, _M, _SPLIT]
    filled = {_REASON: pc.fill_null(joined.column(_REASON), ""), _LABEL: pc.fill_null(joined.column(_LABEL), ""),
              _M: pc.fill_null(joined.column(_M), -1), _DEST: joined.column(_DEST),
              _AGREE: pc.fill_null(joined.column(_AGREE), 0), _SPLIT: pc.fill_null(joined.column(_SPLIT), "")}
    for column in columns:
        table = pa.table({column: joined.column(column), **filled})
        groups = table.group_by([column, *keys]).aggregate([(_AGREE, "sum"), (_DEST, "count")])
        out: Dict[str, Counts] = {}
        for g in groups.to_pylist():
            counts = out.setdefault(g[column], {})
            n = g[f"{_DEST}_count"]
            for key in ("rows", g[_DEST]) + ((f"reason:{g[_REASON]}",) if g[_REASON] else ()) + (
                    (f"label:{g[_LABEL]}",) if g[_DEST] == CLEAN else ()) + (
                    (f"split:{g[_SPLIT]}",) if g[_SPLIT] else ()):
                counts[key] = counts.get(key, 0) + n
            if g[_M] > 0:
                for key, v in ((f"items_m:{g[_M]}", n), (f"agree_m:{g[_M]}", g[f"{_AGREE}_sum"])):
                    counts[key] = counts.get(key, 0) + v
        for value in sorted(out):
            yield (column, value), out[value]


def _rank(entry: Tuple[str, Counts]) -> Tuple[int, str]:
    return -entry[1].get("rows", 0), entry[0]


class TopValues(beam.CombineFn):
    """(value, counts) of one column's values → (the `k` values with the most rows, ties by
    value, and the counts of all the others added up). Exact: each value arrives once
    (after the per-value combine), and a value is folded only when `k` others outrank it."""

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self) -> Tuple[List[Tuple[str, Counts]], Counts]:
        return [], {}

    def _trim(self, entries: List[Tuple[str, Counts]], other: Counts):
        entries = sorted(entries, key=_rank)
        return entries[:self._k], merge_counts([other] + [c for _, c in entries[self._k:]])

    def add_input(self, acc, entry: Tuple[str, Counts]):
        return self._trim(acc[0] + [entry], acc[1])

    def merge_accumulators(self, accs):
        accs = list(accs)
        return self._trim([e for a in accs for e in a[0]], merge_counts([a[1] for a in accs]))

    def extract_output(self, acc):
        return acc


def value_row(value: str, counts: Counts, splits: Sequence[str] = ()) -> Dict:
    """One slice value's row of report.json from its counts (`splits`: the split names, whose
    rows are counted under `splits`, in that order)."""
    rows = counts.get("rows", 0)
    reasons = {k[len("reason:"):]: n for k, n in counts.items() if k.startswith("reason:")}
    labels = {k[len("label:"):]: n for k, n in counts.items() if k.startswith("label:")}
    clean = counts.get(CLEAN, 0)
    items = sum(n for k, n in counts.items() if k.startswith("items_m:"))
    mean_share = sum(n / int(k[len("agree_m:"):]) for k, n in counts.items() if k.startswith("agree_m:"))
    row = {"value": value, "rows": rows, CLEAN: clean, QUARANTINED: counts.get(QUARANTINED, 0),
           DUPLICATES: counts.get(DUPLICATES, 0),
           **({"splits": {name: counts.get(f"split:{name}", 0) for name in splits}} if splits else {}),
           "quarantine_share": counts.get(QUARANTINED, 0) / rows if rows else None,
           "quarantine_by_reason": {r: {"rows": n, "share": n / rows}
                                    for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))},
           "label_mix": {lab: {"rows": n, "share": n / clean} for lab, n in sorted(labels.items())},
           "label_agreement": {"value": mean_share / items if items else None, "items": items}}
    if "values" in counts:
        row["values"] = counts["values"]
    return row


def slices_report(top: Dict[str, Tuple[List[Tuple[str, Counts]], Counts]], spec: SliceSpec) -> Dict:
    """The `metadata_slices` section of report.json: per column, its values with the most
    rows first, then `<other>` (with the number of `values` folded into it)."""
    columns = {}
    for column in spec.columns:
        entries, other = top.get(column, ([], {}))
        rows = [value_row(v, c, spec.splits) for v, c in sorted(entries, key=_rank)]
        if other:
            rows.append(value_row(OTHER, other, spec.splits))
        columns[column] = rows
    return {"max_values": spec.max_values, "columns": columns,
            "label_agreement": "mean over clean rows of the share of their labels equal to the consensus"
            if spec.agreement else None}


class _BucketCountsFn(beam.DoFn):
    def __init__(self, columns: Sequence[str]):
        self._columns = tuple(columns)

    def process(self, element):
        _, groups = element
        origin = concat_batches(groups["origin"])
        dest = concat_batches(groups["dest"], _DEST_SCHEMA)
        yield from slice_counts(origin, dest, self._columns)


def _by_row(batch: pa.RecordBatch, buckets: int):
    return key_by_bucket(batch, [batch.column(SOURCE), batch.column(ROW)], buckets)


def _with_value_count(kv):
    (column, value), counts = kv
    return column, (value, dict(counts, values=1))


@beam.typehints.with_input_types(pa.RecordBatch)
class MetadataSlices(beam.PTransform):
    """{"read", "clean", "quarantine", "duplicates": batches} → one dict, `slices_report`.

    "read": `ReadInputs`' rows (the values as read); "clean": every split's rows, or instead
    "split:<name>" for each split's (then each value's rows are counted per split as well);
    "quarantine" (stage `ingest` rows are left out: they have no columns) and "duplicates":
    those outputs. Two shuffles of small things: the (`_source`, `_row`) keyed sub-batches,
    then the per-value counts.
    """

    def __init__(self, spec: SliceSpec, buckets: int = 16):
        super().__init__()
        self._spec = spec
        self._buckets = max(1, buckets)

    def expand(self, pcolls):
        spec, buckets = self._spec, self._buckets
        origin = (pcolls["read"]
                  | "Origins" >> beam.Map(origins, spec.columns).with_output_types(pa.RecordBatch)
                  | "OriginBuckets" >> beam.FlatMap(_by_row, buckets).with_output_types(KeyedBatch))
        parts = []
        # the clean rows as one "clean", or per split ("split:<name>", each counted under its name too)
        clean = [(CLEAN, name, name[len("split:"):] if name.startswith("split:") else None)
                 for name in pcolls if name == "clean" or name.startswith("split:")]
        for kind, name, split in clean + [(QUARANTINED, "quarantine", None), (DUPLICATES, "duplicates", None)]:
            batches = pcolls[name]
            if kind == QUARANTINED:
                batches = batches | "NotIngest" >> beam.Map(
                    lambda b: b.filter(pc.not_equal(b.column("stage"), "ingest"))).with_output_types(pa.RecordBatch)
            parts.append(batches | f"Destinations[{name}]" >> beam.Map(destinations, kind, spec, split)
                         .with_output_types(pa.RecordBatch))
        dest = (parts
                | "AllDestinations" >> beam.Flatten()
                | "DestinationBuckets" >> beam.FlatMap(_by_row, buckets).with_output_types(KeyedBatch))
        return ({"origin": origin, "dest": dest}
                | "JoinByRow" >> beam.CoGroupByKey()
                | "BucketCounts" >> beam.ParDo(_BucketCountsFn(spec.columns))
                | "SumPerValue" >> beam.CombinePerKey(MergeCounts())
                | "ByColumn" >> beam.Map(_with_value_count)
                | "TopValues" >> beam.CombinePerKey(TopValues(spec.max_values))
                | "Columns" >> beam.combiners.ToDict()
                | "SlicesReport" >> beam.Map(slices_report, spec))
