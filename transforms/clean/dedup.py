"""Clean, second half: deduplication. Every row leaves `Deduplicate` through exactly one
output: kept (the first copy of its key in (_source, _row) order), duplicates (with the
kept copy's example_id), or quarantine (copies of one key with different labels).

With `repeated="quarantine"` every row of a key that occurs more than once is quarantined
instead (`reason`): how an example id that names two examples is kept out of the splits.
"""

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms.batches import (DUPLICATES_SCHEMA, EXAMPLE_ID, METRICS_NAMESPACE, QUARANTINE_SCHEMA, ROW, SOURCE,
                                Bucketed, OrderedThreadPool, as_batches, bucketed, concat_batches, count_reasons,
                                hash_columns, json_records, quarantine_batch, table_to_batches)
from transforms.spill import GroupBySpilled


@dataclass(frozen=True)
class DedupSpec:
    """Which columns make a key, how text keys are compared, and what a label conflict does."""

    keys: Tuple[str, ...]
    label: Optional[str] = None          # copies with different labels are label conflicts
    trim: bool = False
    case_fold: bool = False
    collapse_whitespace: bool = False
    on_conflict: str = "quarantine"      # or "keep_first"
    repeated: str = "keep_first"         # or "quarantine": every copy of a repeated key, as `reason`
    reason: str = "duplicate_id"


def dedup_key_columns(table: pa.Table | pa.RecordBatch, spec: DedupSpec) -> Dict[str, pa.Array]:
    """The key columns as compared: text keys normalised as configured."""
    out = {}
    for k in spec.keys:
        col = table.column(k)
        if pa.types.is_string(col.type) and (spec.trim or spec.case_fold or spec.collapse_whitespace):
            if spec.collapse_whitespace:
                col = pc.replace_substring_regex(col, r"\s+", " ")
            if spec.trim or spec.collapse_whitespace:
                col = pc.utf8_trim_whitespace(col)
            if spec.case_fold:
                col = pc.utf8_lower(col)
        out[k] = col
    return out


def dedup_table(table: pa.Table, spec: DedupSpec) -> Tuple[pa.Table, pa.Table, pa.Table]:
    """(kept rows, duplicates, label-conflict quarantine) of a table.

    The kept copy of a key is its lowest (_source, _row). When copies of a key carry
    different labels and `on_conflict` is "quarantine", every copy goes to quarantine
    (reason `label_conflict`); with "keep_first" they are deduplicated like any other
    and flagged `label_conflict` in duplicates.
    """
    empty_q = QUARANTINE_SCHEMA.empty_table()
    if table.num_rows == 0:
        return table, DUPLICATES_SCHEMA.empty_table(), empty_q
    # "first" in (_source, _row) order; the rows themselves stay where they are (no copy)
    order = pc.sort_indices(table, sort_keys=[(SOURCE, "ascending"), (ROW, "ascending")]).to_numpy()
    first = first_of_key(dedup_key_columns(table, spec), order)
    dup = first != np.arange(table.num_rows)
    if not dup.any():
        return table, DUPLICATES_SCHEMA.empty_table(), empty_q
    if spec.repeated == "quarantine":
        return _quarantine_repeated(table, first, spec)
    conflict = np.zeros(table.num_rows, bool)
    if spec.label:     # more than one distinct (non-null) label among the copies of a key
        labels = table.column(spec.label)
        labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
        valid = labels.is_valid().to_numpy(zero_copy_only=False)
        codes = pc.dictionary_encode(labels).indices.fill_null(0).to_numpy(zero_copy_only=False)
        pairs = np.unique(np.stack([first[valid], codes[valid]]), axis=1)
        conflict = np.bincount(pairs[0], minlength=table.num_rows)[first] > 1
    quarantine = empty_q
    if spec.on_conflict == "quarantine" and conflict.any():
        rows = table.take(pa.array(np.flatnonzero(conflict)))
        quarantine = pa.Table.from_batches([quarantine_batch(
            json_records(rows, [c for c in table.schema.names if c not in (EXAMPLE_ID, SOURCE, ROW)]),
            "label_conflict", "clean", rows.column(SOURCE), rows.column(ROW), rows.column(EXAMPLE_ID))])
        # a key whose copies conflict is quarantined whole, so the kept rows' firsts are untouched
        keep = np.flatnonzero(~conflict)
        renumber = np.full(table.num_rows, -1)
        renumber[keep] = np.arange(len(keep))
        table, first, dup, conflict = table.take(pa.array(keep)), renumber[first[keep]], dup[keep], conflict[keep]
    dup_idx = np.flatnonzero(dup)
    ids = table.column(EXAMPLE_ID)
    duplicates = pa.Table.from_arrays([
        ids.take(pa.array(dup_idx)),
        ids.take(pa.array(first[dup_idx])),
        table.column(SOURCE).take(pa.array(dup_idx)),
        table.column(ROW).take(pa.array(dup_idx)),
        pa.array(conflict[dup_idx], pa.bool_()),
    ], schema=DUPLICATES_SCHEMA)
    return table.filter(pa.array(~dup)), duplicates, quarantine


def _quarantine_repeated(table: pa.Table, first: np.ndarray, spec: DedupSpec) -> Tuple[pa.Table, pa.Table, pa.Table]:
    """Every row of a key that occurs more than once → quarantine (`spec.reason`); the others kept."""
    repeated = np.bincount(first, minlength=table.num_rows)[first] > 1
    rows = table.take(pa.array(np.flatnonzero(repeated)))
    quarantine = pa.Table.from_batches([quarantine_batch(
        json_records(rows, [c for c in table.schema.names if c not in (EXAMPLE_ID, SOURCE, ROW)]),
        spec.reason, "clean", rows.column(SOURCE), rows.column(ROW), rows.column(EXAMPLE_ID))])
    return table.filter(pa.array(~repeated)), DUPLICATES_SCHEMA.empty_table(), quarantine


def first_of_key(keys: Dict[str, pa.Array], order: Optional[np.ndarray] = None) -> np.ndarray:
    """For each row, the index of the first row with an equal key (nulls equal nulls, NaN NaN),
    "first" in `order` (a permutation of the rows; default: as they are).

    Rows are grouped by a 64-bit hash of the key, then every row is compared by value
    with its group's first row; only if some differ (a hash collision) are the keys
    grouped by value in pandas.
    """
    n = len(next(iter(keys.values())))
    order = np.arange(n) if order is None else np.asarray(order)

    def firsts(group_ids: np.ndarray) -> np.ndarray:    # group ids in `order` → first row per row
        _, first, inverse = np.unique(group_ids, return_index=True, return_inverse=True)
        out = np.empty(n, np.int64)
        out[order] = order[first[inverse.reshape(-1)]]
        return out

    first = firsts(hash_columns(pa.table(keys), list(keys))[order])
    rows = np.flatnonzero(first != np.arange(n))
    if len(rows) and not all(_equal_values(col, rows, first[rows]) for col in keys.values()):
        taken = pa.array(order)
        frame = pd.DataFrame({f"k{i}": col.take(taken).to_pandas() for i, col in enumerate(keys.values())})
        first = firsts(frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy())
    return first


def _equal_values(col, i: np.ndarray, j: np.ndarray) -> bool:
    a, b = col.take(pa.array(i)), col.take(pa.array(j))
    same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(a.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return bool(pc.all(same).as_py())


def _by_key_bucket(batch: pa.RecordBatch, spec: DedupSpec, buckets: int) -> Bucketed:
    return bucketed(batch, list(dedup_key_columns(batch, spec).values()), buckets)


def _dedup_bucket(batches: List[pa.RecordBatch], spec: DedupSpec):
    return dedup_table(concat_batches(batches), spec)


class _DedupBucketFn(beam.DoFn):
    DUPLICATES = "duplicates"
    QUARANTINE = "quarantine"

    def __init__(self, spec: DedupSpec):
        self._spec = spec
        self._dups = Metrics.counter(METRICS_NAMESPACE, "clean.duplicates")

    def start_bundle(self):
        self._pool = OrderedThreadPool()

    def process(self, element):
        _, batches = element
        # the batches are read here: Beam's iterable is not for other threads
        for result in self._pool.submit(_dedup_bucket, list(batches), self._spec):
            yield from self._emit(*result)

    def finish_bundle(self):
        for result in self._pool.finish():
            for out in self._emit(*result):
                if isinstance(out, pvalue.TaggedOutput):
                    yield pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)

    def _emit(self, kept: pa.Table, dups: pa.Table, conflicts: pa.Table):
        yield from table_to_batches(kept)
        if dups.num_rows:
            self._dups.inc(dups.num_rows)
            for b in table_to_batches(dups):
                yield pvalue.TaggedOutput(self.DUPLICATES, b)
        for b in table_to_batches(conflicts):
            count_reasons(b)
            yield pvalue.TaggedOutput(self.QUARANTINE, b)


class DedupResult(NamedTuple):
    """`Deduplicate`'s outputs, each a PCollection of record batches."""

    rows: beam.PCollection          # the first copy of each key, columns as they came in
    duplicates: beam.PCollection    # DUPLICATES_SCHEMA: each dropped copy and the example_id kept
    quarantine: beam.PCollection    # QUARANTINE_SCHEMA: label conflicts (on_conflict: quarantine)


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(pa.RecordBatch)
class Deduplicate(beam.PTransform):
    """Typed batches (`ValidateRows`' rows) → a `DedupResult`.

    Batches are shuffled by a hash bucket of the (normalised) key columns, as whole
    sub-batches, never one element per row; inside a bucket keys are compared by value,
    so hash collisions cannot merge distinct rows. With `spill`, a folder, the shuffle moves
    files of batches (`transforms/spill.py`), so no stage holds every row.
    """

    def __init__(self, spec: DedupSpec, buckets: int = 16, spill: Optional[str] = None):
        super().__init__()
        self._spec = spec
        self._buckets = max(1, buckets)
        self._spill = spill

    def expand(self, batches):
        parts = as_batches(batches
                           | "Bucket" >> beam.Map(_by_key_bucket, self._spec, self._buckets)
                           .with_output_types(Bucketed)
                           | "GroupBuckets" >> GroupBySpilled(self._spill)
                           | "KeepFirst" >> beam.ParDo(_DedupBucketFn(self._spec)).with_outputs(
                               _DedupBucketFn.DUPLICATES, _DedupBucketFn.QUARANTINE, main="rows"),
                           "rows", _DedupBucketFn.DUPLICATES, _DedupBucketFn.QUARANTINE)
        return DedupResult(parts.rows, parts[_DedupBucketFn.DUPLICATES], parts[_DedupBucketFn.QUARANTINE])
