"""Clean: type coercion, rules, missing labels (→ quarantine) and deduplication (→ duplicates).

Every row leaves `ValidateRows` through exactly one output (typed rows, or quarantine
with the first reason that applies, in this order: type errors in column order,
missing id, missing label, rules in config order) and leaves `Deduplicate` through
exactly one output (kept, or duplicates with the kept copy's example_id).
Rules pass a null value (SQL/pandas semantics) except `not_null`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms.batches import (DUPLICATES_SCHEMA, EXAMPLE_ID, METRICS_NAMESPACE, QUARANTINE_SCHEMA, RECORD, ROW,
                                SOURCE, KeyedBatch, Overlap, as_batches, concat_batches, count_reasons,
                                hash_columns, json_records, split_by_key, table_to_batches)
from transforms.read import escape_bytes

ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_INT_RE = r"^[+-]?\d{1,18}$"
_FLOAT_RE = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


def coerce(array: pa.Array, kind: str) -> Tuple[pa.Array, np.ndarray]:
    """Converts a column to the declared type: (typed array, bad mask).

    A value is bad when it is present but does not parse as `kind`; it becomes null in
    the typed array. Surrounding whitespace is allowed around numbers and booleans.
    """
    target = ARROW_TYPES[kind]
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type == target:
        return array, np.zeros(len(array), bool)
    if kind == "float" and (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        return pc.cast(array, target), np.zeros(len(array), bool)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    if kind == "string":
        return array, np.zeros(len(array), bool)
    text = pc.utf8_trim_whitespace(array)
    if kind in ("int", "float"):
        typed = _strict_cast(text, kind)
        if typed is not None:
            return typed, np.zeros(len(array), bool)
    if kind == "bool":
        lower = pc.utf8_lower(text)
        is_true = pc.is_in(lower, value_set=pa.array(_TRUE))
        is_false = pc.is_in(lower, value_set=pa.array(_FALSE))
        ok = pc.or_(is_true, is_false)
        typed = pc.if_else(ok, is_true, pa.scalar(None, pa.bool_()))
    else:
        ok = pc.match_substring_regex(text, _INT_RE if kind == "int" else _FLOAT_RE)
        unsigned = pc.replace_substring_regex(text, r"^\+", "")
        typed = pc.cast(pc.if_else(ok, unsigned, pa.scalar(None, pa.string())), target)
    bad = np.asarray(pc.and_(pc.is_valid(array), pc.invert(pc.fill_null(ok, False))))
    return typed, bad


def _strict_cast(text: pa.Array, kind: str) -> Optional[pa.Array]:
    """Arrow's own parse when every value passes it, else None (then the regexes decide).

    Arrow accepts a subset of what `_INT_RE`/`_FLOAT_RE` accept (no leading "+"), except
    for 19-digit and hexadecimal ("0x1f") integers, which the checks below keep out; where
    it succeeds the values are the same (a property test holds it to that). About 4×
    faster than matching the regexes.
    """
    if kind == "int":
        too_long = (pc.max(pc.utf8_length(text)).as_py() or 0) > 18
        if too_long or pc.any(pc.match_substring(text, "x", ignore_case=True)).as_py():
            return None
    try:
        return pc.cast(text, ARROW_TYPES[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


_OPS = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal, "==": pc.equal,
        "!=": pc.not_equal}


def rule_failures(array: pa.Array, rule, other: Optional[pa.Array] = None) -> List[Tuple[str, np.ndarray]]:
    """(check name, failing mask) for each check of a rule, in a fixed order.

    `other` is the typed `rule.other` column of a cross-column rule.
    """
    out = []
    valid = pc.is_valid(array)

    def fails(cond) -> np.ndarray:
        # A null value passes every check but not_null.
        return np.asarray(pc.and_(valid, pc.invert(pc.fill_null(cond, True))))

    if rule.not_null:
        out.append(("not_null", ~np.asarray(valid)))
    if rule.min is not None:
        out.append(("min", fails(pc.greater_equal(array, pa.scalar(rule.min, pa.float64())))))
    if rule.max is not None:
        out.append(("max", fails(pc.less_equal(array, pa.scalar(rule.max, pa.float64())))))
    if rule.in_ is not None:
        out.append(("in", fails(pc.is_in(array, value_set=_value_set(rule.in_, array.type)))))
    if rule.not_in is not None:
        out.append(("not_in", fails(pc.invert(pc.is_in(array, value_set=_value_set(rule.not_in, array.type))))))
    as_text = array if pa.types.is_string(array.type) else pc.cast(array, pa.string())
    if rule.matches is not None:
        out.append(("matches", fails(pc.match_substring_regex(as_text, _anchored(rule.matches)))))
    if rule.not_matches is not None:
        out.append(("not_matches", fails(pc.invert(pc.match_substring_regex(as_text, rule.not_matches)))))
    if rule.max_length is not None:
        out.append(("max_length", fails(pc.less_equal(pc.utf8_length(as_text), rule.max_length))))
    if rule.op is not None:
        # Null on either side passes, like the single-column checks.
        out.append((f"{rule.op}{rule.other}", fails(_OPS[rule.op](array, other))))
    return out


def _anchored(pattern: str) -> str:
    # `matches` means the whole value matches (like re.fullmatch); `not_matches` searches.
    return f"^(?:{pattern})$"


def _value_set(values: Sequence, arrow_type: pa.DataType) -> pa.Array:
    return pa.array([None if v is None else (str(v) if pa.types.is_string(arrow_type) else v)
                     for v in values]).cast(arrow_type)


@dataclass(frozen=True)
class ValidateSpec:
    """What validation needs of the config (kept free of the config models)."""

    column_types: Dict[str, str]   # every column carried, in output order
    label: Optional[str]           # None: made later by consensus, not checked here
    id_column: Optional[str]
    rules: Tuple = ()
    label_map: Tuple[Tuple[str, str], ...] = ()   # labels.normalize, applied after trim/case-fold
    label_replace: Tuple[Tuple[str, str], ...] = ()  # labels.replace: substrings, before the map
    label_trim: bool = False
    label_case_fold: bool = False
    filters: Tuple[str, ...] = ()                  # "module:function", True = quarantine
    annotators: Tuple[str, ...] = ()               # normalised like the label


def load_function(path: str):
    """`module:function` → the function (the module must be importable on workers too)."""
    import importlib

    module_name, _, name = path.partition(":")
    fn = getattr(importlib.import_module(module_name), name, None)
    if fn is None:
        raise ValueError(f"{module_name} has no function {name!r}")
    return fn


def normalize_labels(array: pa.Array, mapping: Dict[str, str], trim: bool = False,
                     case_fold: bool = False, replace: Sequence[Tuple[str, str]] = ()) -> pa.Array:
    """Label spelling variants → one spelling.

    In order: literal substring replacements (`replace`, e.g. "..." → ","), trim,
    case-fold, then the whole-value map (`mapping`, e.g. "Scratch" → "scratch").
    """
    for old, new in replace:
        array = pc.replace_substring(array, old, new)
    if trim:
        array = pc.utf8_trim_whitespace(array)
    if case_fold:
        array = pc.utf8_lower(array)
    if mapping:
        keys = pa.array(list(mapping), pa.string())
        idx = pc.index_in(array, value_set=keys)
        array = pc.if_else(pc.is_valid(idx), pa.array(list(mapping.values()), pa.string()).take(idx), array)
    return array


def example_ids(batch: pa.RecordBatch, id_column: Optional[str]) -> pa.Array:
    """The id column as text, or `<sha1(source)[:12]>-<row>` (stable for a file and line)."""
    if id_column:
        return pc.cast(batch.column(id_column), pa.string())
    sources = pc.dictionary_encode(batch.column(SOURCE))
    prefixes = pa.array([hashlib.sha1(s.encode()).hexdigest()[:12] for s in sources.dictionary.to_pylist()])
    return pc.binary_join_element_wise(prefixes.take(sources.indices), pc.cast(batch.column(ROW), pa.string()), "-")


def validate_batch(batch: pa.RecordBatch, spec: ValidateSpec,
                   filters: Sequence = ()) -> Tuple[pa.RecordBatch, pa.RecordBatch]:
    """Splits a raw batch into (typed clean rows, quarantine rows).

    `filters` are the loaded `spec.filters` functions: each gets the typed batch and
    returns a boolean mask, True for a row to quarantine (reason `filter:<name>`).
    """
    n = batch.num_rows
    reason_names: List[str] = []
    codes = np.full(n, -1, np.int32)

    def mark(mask: np.ndarray, reason: str) -> None:
        hit = mask & (codes < 0)
        if hit.any():
            if reason not in reason_names:
                reason_names.append(reason)
            codes[hit] = reason_names.index(reason)

    typed: Dict[str, pa.Array] = {}
    for col, kind in spec.column_types.items():
        typed[col], bad = coerce(batch.column(col), kind)
        mark(bad, f"type:{col}")
    if spec.label_map or spec.label_trim or spec.label_case_fold or spec.label_replace:
        for col in ([spec.label] if spec.label else []) + list(spec.annotators):
            typed[col] = normalize_labels(typed[col], dict(spec.label_map), spec.label_trim, spec.label_case_fold,
                                          spec.label_replace)
    ids = example_ids(batch, spec.id_column)
    if spec.id_column:
        mark(~np.asarray(pc.fill_null(pc.greater(pc.utf8_length(ids), 0), False)), "missing_id")
    if spec.label:
        mark(~np.asarray(pc.is_valid(typed[spec.label])), "missing_label")
    for rule in spec.rules:
        other = typed[rule.other] if rule.other else None
        for check, failing in rule_failures(typed[rule.column], rule, other):
            mark(failing, rule.reason or f"{check}:{rule.column}")

    names = list(spec.column_types) + [EXAMPLE_ID, SOURCE, ROW]
    arrays = [typed[c] for c in spec.column_types] + [ids, batch.column(SOURCE), batch.column(ROW)]
    typed_batch = pa.RecordBatch.from_arrays(arrays, names=names)
    for path, fn in zip(spec.filters, filters):
        mask = np.asarray(fn(typed_batch), dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"clean.filters: {path} returned {mask.shape[0] if mask.ndim else 'a scalar'} "
                             f"values for {n} rows")
        mark(mask, f"filter:{path.partition(':')[2]}")

    keep = codes < 0
    clean = typed_batch.filter(pa.array(keep))
    bad_idx = np.flatnonzero(~keep)
    if not len(bad_idx):
        return clean, _empty_quarantine()
    take = pa.array(bad_idx)
    records = record_texts(batch.take(take), list(spec.column_types))
    quarantine = pa.RecordBatch.from_arrays([
        records,
        pa.array(np.asarray(reason_names, dtype=object)[codes[bad_idx]], pa.string()),
        pa.array(["clean"] * len(bad_idx), pa.string()),
        batch.column(SOURCE).take(take),
        batch.column(ROW).take(take),
    ], schema=QUARANTINE_SCHEMA)
    return clean, quarantine


def _empty_quarantine() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in QUARANTINE_SCHEMA], schema=QUARANTINE_SCHEMA)


def record_texts(batch: pa.RecordBatch, columns: List[str]) -> pa.Array:
    """The original text of each row: its raw line, or JSON of its values (Parquet input)."""
    if RECORD in batch.schema.names:
        raw = batch.column(RECORD)
        if raw.null_count == 0:
            return pa.array([escape_bytes(r) for r in raw.to_pylist()], pa.string())
    return json_records(batch, columns)


class _ValidateFn(beam.DoFn):
    QUARANTINE = "quarantine"

    def __init__(self, spec: ValidateSpec):
        self._spec = spec
        self._filters: List = []
        self._kept = Metrics.counter(METRICS_NAMESPACE, "clean.rows")

    def setup(self):
        self._filters = [load_function(f) for f in self._spec.filters]

    def process(self, batch: pa.RecordBatch):
        clean, quarantine = validate_batch(batch, self._spec, self._filters)
        if clean.num_rows:
            self._kept.inc(clean.num_rows)
            yield clean
        if quarantine.num_rows:
            count_reasons(quarantine)
            yield pvalue.TaggedOutput(self.QUARANTINE, quarantine)



class ValidateRows(beam.PTransform):
    """Raw record batches → typed batches (declared columns + example_id, _source, _row).

    Outputs: `rows` (typed, valid) and `quarantine` (QUARANTINE_SCHEMA, stage "clean").
    """

    def __init__(self, spec: ValidateSpec):
        super().__init__()
        self._spec = spec

    def expand(self, batches):
        return as_batches(batches | "Validate" >> beam.ParDo(_ValidateFn(self._spec)).with_outputs(
            _ValidateFn.QUARANTINE, main="rows"), "rows", _ValidateFn.QUARANTINE)


# ---- deduplication ----------------------------------------------------------------------

@dataclass(frozen=True)
class DedupSpec:
    """What deduplication needs of the config."""

    keys: Tuple[str, ...]
    label: Optional[str] = None          # copies with different labels are label conflicts
    trim: bool = False
    case_fold: bool = False
    collapse_whitespace: bool = False
    on_conflict: str = "quarantine"      # or "keep_first"


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
        bad = pa.array(np.flatnonzero(conflict))
        rows = table.take(bad)
        quarantine = pa.Table.from_arrays([
            json_records(rows, [c for c in table.schema.names if c not in (EXAMPLE_ID, SOURCE, ROW)]),
            pa.array(["label_conflict"] * len(rows), pa.string()),
            pa.array(["clean"] * len(rows), pa.string()),
            rows.column(SOURCE), rows.column(ROW)], schema=QUARANTINE_SCHEMA)
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


class _BucketFn(beam.DoFn):
    def __init__(self, spec: DedupSpec, buckets: int):
        self._spec = spec
        self._buckets = buckets

    def process(self, batch: pa.RecordBatch):
        keys = dedup_key_columns(batch, self._spec)
        table = pa.table(keys)
        buckets = hash_columns(table, list(keys)) % np.uint64(self._buckets)
        yield from split_by_key(batch, buckets.astype(np.int64))


def _dedup_bucket(batches: List[pa.RecordBatch], spec: DedupSpec):
    return dedup_table(concat_batches(batches), spec)


class _DedupBucketFn(beam.DoFn):
    DUPLICATES = "duplicates"
    QUARANTINE = "quarantine"

    def __init__(self, spec: DedupSpec):
        self._spec = spec
        self._dups = Metrics.counter(METRICS_NAMESPACE, "clean.duplicates")

    def start_bundle(self):
        self._overlap = Overlap()

    def process(self, element):
        _, batches = element
        # the batches are read here: Beam's iterable is not for other threads
        for result in self._overlap.submit(_dedup_bucket, list(batches), self._spec):
            yield from self._emit(*result)

    def finish_bundle(self):
        for result in self._overlap.finish():
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


class Deduplicate(beam.PTransform):
    """Typed batches → `rows` (first copy of each key), `duplicates` (DUPLICATES_SCHEMA)
    and `quarantine` (label conflicts, QUARANTINE_SCHEMA).

    Batches are shuffled by a hash bucket of the (normalised) key columns, as whole
    sub-batches, never one element per row; inside a bucket keys are compared by value,
    so hash collisions cannot merge distinct rows.
    """

    def __init__(self, spec: DedupSpec, buckets: int = 16):
        super().__init__()
        self._spec = spec
        self._buckets = max(1, buckets)

    def expand(self, batches):
        return as_batches(batches
                          | "Bucket" >> beam.ParDo(_BucketFn(self._spec, self._buckets)).with_output_types(KeyedBatch)
                          | "GroupBuckets" >> beam.GroupByKey()
                          | "KeepFirst" >> beam.ParDo(_DedupBucketFn(self._spec)).with_outputs(
                              _DedupBucketFn.DUPLICATES, _DedupBucketFn.QUARANTINE, main="rows"),
                          "rows", _DedupBucketFn.DUPLICATES, _DedupBucketFn.QUARANTINE)
