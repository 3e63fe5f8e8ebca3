"""Clean, first half: type coercion, rules, label spelling and missing labels (→ quarantine).

Every row leaves `ValidateRows` through exactly one output: typed rows, or quarantine
with the first reason that applies, in this order: type errors in column order,
missing id, missing label, rules in config order, then the user's filters.
Rules pass a null value (SQL/pandas semantics) except `not_null`.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.batches import (EXAMPLE_ID, METRICS_NAMESPACE, RECORD, ROW, SOURCE, as_batches, count_reasons,
                                default_example_ids, empty_quarantine, json_records, quarantine_batch, value_counts)
from transforms.read import escape_bytes
from transforms.user_code import load_function

ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_INT_RE = r"^[+-]?0*\d{1,19}$"
_INT64_MAX, _INT64_MIN = "9223372036854775807", "9223372036854775808"   # digits of 2**63-1 and -(-2**63)
_FLOAT_RE = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
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
        # an integer past 2**53 is rounded (Arrow's safe cast raises on it, failing the run):
        # `inexact_as_float` finds those rows, quarantined as lossy_float:<column>
        return pc.cast(array, target, safe=False), np.zeros(len(array), bool)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    if kind == "string":
        return array, np.zeros(len(array), bool)
    if kind in ("int", "float"):
        # Arrow's parse takes no whitespace at all: where it succeeds untrimmed, trimming
        # would have changed nothing (and clean columns, or trimmed ones, skip the trim)
        typed = _strict_cast(array, kind)
        if typed is not None:
            return typed, np.zeros(len(array), bool)
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
        if kind == "int":
            ok = pc.and_(ok, pc.invert(_past_int64(text)))
        unsigned = pc.replace_substring_regex(text, r"^\+", "")
        typed = pc.cast(pc.if_else(ok, unsigned, pa.scalar(None, pa.string())), target)
    bad = np.asarray(pc.and_(pc.is_valid(array), pc.invert(pc.fill_null(ok, False))))
    return typed, bad


_FLOAT_EXACT = 2 ** 53     # every integer up to this is a float64; past it, only some


def inexact_as_float(array: pa.Array) -> np.ndarray:
    """Where an integer column (a Parquet int64 declared `float`) holds a value float64 cannot
    hold exactly (past ±2**53 and not a multiple of the float's step there): its cast to
    float would change it. All False for any other column."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_integer(array.type):
        return np.zeros(len(array), bool)
    ints = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
    big = np.flatnonzero((ints > _FLOAT_EXACT) | (ints < -_FLOAT_EXACT) if ints.dtype.kind == "i"
                         else ints > _FLOAT_EXACT)
    out = np.zeros(len(array), bool)
    if len(big):   # rare: a Python int compare of each (numpy would compare them as floats)
        out[big] = [int(float(v)) != v for v in ints[big].tolist()]
    return out


def _past_int64(text: pa.Array) -> pa.Array:
    """True where an integer of 19 significant digits (as `_INT_RE` matches) is outside
    int64: the digits compared as text with those of 2**63-1 (or 2**63 when negative)."""
    negative = pc.starts_with(text, "-")
    digits = pc.replace_substring_regex(text, r"^[+-]?0*", "")
    limit = pc.if_else(negative, pa.scalar(_INT64_MIN), pa.scalar(_INT64_MAX))
    return pc.fill_null(pc.and_(pc.equal(pc.utf8_length(digits), 19), pc.greater(digits, limit)), False)


def _strict_cast(text: pa.Array, kind: str) -> Optional[pa.Array]:
    """Arrow's own parse when every value passes it, else None (then the regexes decide).

    Arrow accepts a subset of what `_INT_RE`/`_FLOAT_RE` accept (no leading "+"), except
    for hexadecimal ("0x1f") integers, which the check below keeps out; where
    it succeeds the values are the same (a property test holds it to that). It is tried
    first because one cast of the column costs much less than matching the regexes.
    """
    if kind == "int" and _holds_any_byte(text, b"xX"):
        return None
    try:
        return pc.cast(text, ARROW_TYPES[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _holds_any_byte(text: pa.Array, chars: bytes) -> bool:
    """Whether a byte of `chars` is in the character data of `text`, or of the array it was
    sliced from (then perhaps a false yes). A scan of the buffer: Arrow's case-insensitive
    `match_substring` goes through RE2, 70 ms for a million values against 2 ms."""
    data = text.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()
    return any(bytes([c]) in raw for c in chars)


@dataclass(frozen=True)
class RuleSpec:
    """One `clean.rules` entry: every check that is set must hold, or the row is quarantined
    with `reason` (default `<check>:<column>`). `op`/`other`: a cross-column comparison."""

    column: str
    min: Optional[float] = None
    max: Optional[float] = None
    in_: Optional[Tuple[Any, ...]] = None
    not_in: Optional[Tuple[Any, ...]] = None
    matches: Optional[str] = None        # the whole value matches (re.fullmatch)
    not_matches: Optional[str] = None    # no match anywhere in the value (re.search)
    not_null: Optional[bool] = None
    max_length: Optional[int] = None
    op: Optional[str] = None             # <, <=, >, >=, ==, !=
    other: Optional[str] = None
    reason: Optional[str] = None


_OPS = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal, "==": pc.equal,
        "!=": pc.not_equal}


def rule_failures(array: pa.Array, rule: RuleSpec, other: Optional[pa.Array] = None) -> List[Tuple[str, np.ndarray]]:
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
        out.append(("in", fails(pc.is_in(array, value_set=value_set(rule.in_, array.type)))))
    if rule.not_in is not None:
        out.append(("not_in", fails(pc.invert(pc.is_in(array, value_set=value_set(rule.not_in, array.type))))))
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


def value_set(values: Sequence, arrow_type: pa.DataType) -> pa.Array:
    """A rule's `in`/`not_in` values as an array of the column's type (what `rule_failures` compares)."""
    return pa.array([None if v is None else (str(v) if pa.types.is_string(arrow_type) else v)
                     for v in values]).cast(arrow_type)


@dataclass(frozen=True)
class ValidateSpec:
    """What validation needs: the columns, the label and id, the rules and filters."""

    column_types: Dict[str, str]   # every column carried, in output order
    label: Optional[str]           # None: made later by consensus, not checked here
    id_column: Optional[str]
    rules: Tuple[RuleSpec, ...] = ()
    label_map: Tuple[Tuple[str, str], ...] = ()   # labels.normalize, applied after trim/case-fold
    label_replace: Tuple[Tuple[str, str], ...] = ()  # labels.replace: substrings, before the map
    label_trim: bool = False
    label_case_fold: bool = False
    filters: Tuple[str, ...] = ()                  # "module:function", True = quarantine
    code_dirs: Tuple[str, ...] = ()                # folders the filters' modules may be in (the config's)
    allow_non_finite: bool = False                 # else NaN/inf in a float column → non_finite:<column>
    float32_columns: Tuple[str, ...] = ()          # float columns TFT reads as float32: past it → float32_overflow
    annotators: Tuple[str, ...] = ()               # normalised like the label


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


def input_label_counts(batch: pa.RecordBatch, spec: ValidateSpec) -> Dict[str, int]:
    """{"input_label:<value>": rows} of a raw batch: its label as the clean rows will hold it
    (typed, normalised), whatever becomes of the row; a missing or mistyped label is no class.
    For the quality gate that every class of the input reaches a split."""
    if not spec.label or spec.label not in batch.schema.names:
        return {}
    kind = spec.column_types[spec.label]
    label, _ = coerce(batch.column(spec.label), kind)
    if kind == "string" and (spec.label_map or spec.label_trim or spec.label_case_fold or spec.label_replace):
        label = normalize_labels(label, dict(spec.label_map), spec.label_trim, spec.label_case_fold,
                                 spec.label_replace)
    return {f"input_label:{k}": n for k, n in present_counts(label).items()}


def present_counts(array: pa.Array) -> Dict[str, int]:
    """{value as text: count} of the non-null values of `array` (an empty string is no value)."""
    array = array.drop_null()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = array.filter(pc.greater(pc.utf8_length(array), 0))
    return value_counts(array)


def example_ids(batch: pa.RecordBatch, id_column: Optional[str]) -> pa.Array:
    """The id column as text, or `<sha1(source)[:12]>-<row>` (stable for a file and line)."""
    if id_column:
        return pc.cast(batch.column(id_column), pa.string())
    return default_example_ids(batch.column(SOURCE), batch.column(ROW))


def validated_schema(spec: ValidateSpec) -> pa.Schema:
    """The columns of `ValidateRows`' clean rows: the typed columns in the spec's order, then
    example_id, _source, _row."""
    return pa.schema([pa.field(c, ARROW_TYPES[k]) for c, k in spec.column_types.items()]
                     + [pa.field(EXAMPLE_ID, pa.string()), pa.field(SOURCE, pa.string()), pa.field(ROW, pa.int64())])


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
        if kind == "float":
            mark(inexact_as_float(batch.column(col)), f"lossy_float:{col}")
            values = typed[col]
            if not spec.allow_non_finite:
                mark(~np.asarray(pc.fill_null(pc.is_finite(values), True)), f"non_finite:{col}")
            if col in spec.float32_columns:
                mark(np.asarray(pc.fill_null(pc.greater(pc.abs(values), _FLOAT32_MAX), False))
                     & np.asarray(pc.fill_null(pc.is_finite(values), False)), f"float32_overflow:{col}")
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
        return clean, empty_quarantine()
    take = pa.array(bad_idx)
    bad_ids = ids.take(take)   # an empty id is no id: the row gets the default one
    bad_ids = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(bad_ids), 0), False), bad_ids,
                         pa.scalar(None, pa.string()))
    quarantine = quarantine_batch(record_texts(batch.take(take), list(spec.column_types)),
                                  pa.array(np.asarray(reason_names, dtype=object)[codes[bad_idx]], pa.string()),
                                  "clean", batch.column(SOURCE).take(take), batch.column(ROW).take(take), bad_ids)
    return clean, quarantine


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
        self._filters = [load_function(f, self._spec.code_dirs) for f in self._spec.filters]

    def process(self, batch: pa.RecordBatch):
        clean, quarantine = validate_batch(batch, self._spec, self._filters)
        if clean.num_rows:
            self._kept.inc(clean.num_rows)
            yield clean
        if quarantine.num_rows:
            count_reasons(quarantine)
            yield pvalue.TaggedOutput(self.QUARANTINE, quarantine)


class ValidateResult(NamedTuple):
    """`ValidateRows`' outputs, both PCollections of record batches."""

    rows: beam.PCollection         # typed, valid: declared columns + example_id, _source, _row
    quarantine: beam.PCollection   # QUARANTINE_SCHEMA, stage "clean"


@beam.typehints.with_input_types(pa.RecordBatch)
@beam.typehints.with_output_types(pa.RecordBatch)
class ValidateRows(beam.PTransform):
    """Raw record batches (`ReadInputs`' rows) → a `ValidateResult`: typed rows, and the
    rows that fail a type, the id, the label, a rule or a filter, quarantined."""

    def __init__(self, spec: ValidateSpec):
        super().__init__()
        self._spec = spec

    def expand(self, batches):
        parts = as_batches(batches | "Validate" >> beam.ParDo(_ValidateFn(self._spec)).with_outputs(
            _ValidateFn.QUARANTINE, main="rows"), "rows", _ValidateFn.QUARANTINE)
        return ValidateResult(parts.rows, parts[_ValidateFn.QUARANTINE])


