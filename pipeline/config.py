"""The YAML config of `../shared/CONTRACT.md`, parsed into typed, validated models.

Every problem becomes one `ConfigError` whose message names the field
(`split.fractions: must sum to 1, got 0.9`), so the CLI can print one line and exit 2.
Relative paths in the config are resolved against the config file's folder, so a
config runs the same from any working directory.

The models here end in `Config`; `pipeline/build.py` turns them into the frozen `...Spec`
dataclasses the transforms take, so no transform sees a config model.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from typing import Any, ClassVar, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transforms.user_code import UserCodeError, load_function, local_modules

COLUMN_TYPES = ("string", "int", "float", "bool")
FEATURE_KINDS = ("zscore", "minmax", "log_zscore", "bucketize", "vocabulary", "hash", "passthrough",
                 "tokens_vocabulary", "tfidf")
NUMERIC_FEATURES = ("zscore", "minmax", "log_zscore", "bucketize")
TEXT_FEATURES = ("tokens_vocabulary", "tfidf")


class ConfigError(ValueError):
    """A config problem, worded as `field.path: what is wrong`."""


def did_you_mean(name: Any, candidates: Iterable[str]) -> str:
    """` (did you mean 'species'?)` naming the candidate closest to a misspelt `name` (the same
    but for case, else difflib's closest at a ratio of 0.6 or more), or "" when none is close.
    Used by every "unknown column/key" message (config, input headers, `init --label`)."""
    if not isinstance(name, str):
        return ""
    candidates = sorted(c for c in candidates if isinstance(c, str) and c != name)
    same = [c for c in candidates if c.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(column: str, known: Iterable[str]) -> str:
    return f"unknown column {column!r}" + did_you_mean(column, known)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CsvOptions(_Strict):
    header: bool = True
    delimiter: str = ","
    quote_char: Optional[str] = '"'
    na_values: List[str] = Field(default_factory=lambda: [""])
    trim: bool = False
    names: Optional[List[str]] = None  # column names of a header-less file, in file order
    encoding: Optional[str] = None     # default UTF-8; a byte-order mark (UTF-8, UTF-16/32 LE/BE) overrides it

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError(f"must be one character, got {v!r}")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: Optional[str]) -> Optional[str]:
        return _text_encoding(v)


class JsonlOptions(_Strict):
    """`jsonl:` reader settings of a JSON-lines input."""

    encoding: Optional[str] = None     # as csv.encoding

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: Optional[str]) -> Optional[str]:
        return _text_encoding(v)


def _text_encoding(v: Optional[str]) -> Optional[str]:
    """A text encoding Python knows (`latin-1`, `cp1252`, `utf-16`, ...), as given."""
    if v is None:
        return v
    import codecs

    try:
        info = codecs.lookup(v)
    except LookupError:
        raise ValueError(f"unknown encoding {v!r} (a Python codec name: utf-8, latin-1, cp1252, utf-16, ...)") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{v!r} is not a text encoding")
    return v


class _ReaderOptions(_Strict):
    """The reader settings of an input: `csv:` for CSV, `jsonl:` for JSON lines."""

    @model_validator(mode="after")
    def _options_fit_format(self) -> "_ReaderOptions":
        if self.jsonl is not None and self.format != "jsonl":
            raise ValueError(f"jsonl: options for a jsonl input; this one is {self.format}")
        if self.csv.encoding is not None and self.format != "csv":
            raise ValueError(f"csv.encoding: for a csv input; this one is {self.format}"
                             + (" (use jsonl.encoding)" if self.format == "jsonl" else ""))
        return self

    @property
    def encoding(self) -> Optional[str]:
        """The configured text encoding of its files (None: UTF-8)."""
        if self.format == "jsonl":
            return self.jsonl.encoding if self.jsonl else None
        return self.csv.encoding if self.format == "csv" else None


class InputConfig(_ReaderOptions):
    path: str
    format: Literal["csv", "jsonl", "parquet"]
    source: str = ""
    csv: CsvOptions = Field(default_factory=CsvOptions)
    jsonl: Optional[JsonlOptions] = None


class SchemaConfig(_Strict):
    id: Optional[str] = None
    label: str
    columns: Dict[str, Literal["string", "int", "float", "bool"]]
    metadata: List[str] = Field(default_factory=list)


class RuleConfig(_Strict):
    column: str
    min: Optional[float] = None
    max: Optional[float] = None
    in_: Optional[List[Any]] = Field(default=None, alias="in")
    not_in: Optional[List[Any]] = None
    matches: Optional[str] = None
    not_matches: Optional[str] = None
    not_null: Optional[bool] = None
    max_length: Optional[int] = None
    # Cross-column, still declarative: `{column: dropoff, op: ">=", other: pickup}`.
    op: Optional[Literal["<", "<=", ">", ">=", "==", "!="]] = None
    other: Optional[str] = None
    reason: Optional[str] = None

    CHECKS: ClassVar[Tuple[str, ...]] = ("not_null", "min", "max", "in_", "not_in", "matches", "not_matches",
                                         "max_length", "op")

    @model_validator(mode="after")
    def _has_a_check(self) -> "RuleConfig":
        if all(getattr(self, c) is None for c in self.CHECKS):
            raise ValueError("a rule needs at least one check (min, max, in, not_in, matches, "
                             "not_matches, not_null, max_length)")
        if (self.op is None) != (self.other is None):
            raise ValueError("a cross-column rule needs both op and other")
        for pattern in (self.matches, self.not_matches):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"invalid regular expression {pattern!r}: {e}") from e
        return self


class DedupNormalizeConfig(_Strict):
    trim: bool = False
    case_fold: bool = False
    collapse_whitespace: bool = False


class DedupConfig(_Strict):
    keys: Union[Literal["all"], List[str]] = "all"
    # Text keys compared after normalising (the kept row keeps its original text).
    normalize: DedupNormalizeConfig = Field(default_factory=DedupNormalizeConfig)
    # Copies of one key with different labels are a labelling problem, not copies:
    # quarantine them all (reason label_conflict), or keep the first like any duplicate.
    on_conflict: Literal["quarantine", "keep_first"] = "quarantine"


class NearDedupConfig(_Strict):
    """`clean.near_dedup`: MinHash LSH near-duplicates of the text in `columns`."""

    columns: List[str] = Field(min_length=1)
    threshold: float = Field(default=0.8, gt=0, lt=1)    # estimated Jaccard of the shingle sets
    shingles: str = "words:3"                            # words:N | chars:N
    num_perm: int = Field(default=128, ge=2, le=1024)
    action: Literal["drop", "group", "none"] = "drop"
    seed: int = Field(default=1, ge=0, lt=2 ** 32)        # datasketch's MinHash seed
    # bands x rows minimise fp·weights[0] + fn·weights[1] (datasketch's MinHashLSH weights). Recall-heavy
    # by default: every candidate is verified, so a false positive costs one comparison, a false negative a leak.
    weights: Tuple[float, float] = (0.1, 0.9)
    bands: Optional[int] = Field(default=None, ge=1)      # default: chosen from threshold, num_perm, weights
    rows: Optional[int] = Field(default=None, ge=1)
    bucket_cap: int = Field(default=200, ge=2, le=100_000)   # a band key with more rows is paired by anchors
    max_nodes: int = Field(default=50_000_000, ge=1)          # rows with a near-duplicate the cluster step holds

    @field_validator("shingles")
    @classmethod
    def _shingles(cls, v: str) -> str:
        m = re.fullmatch(r"(words|chars):([1-9][0-9]*)", v)
        if not m or int(m.group(2)) > 64:
            raise ValueError(f"must be 'words:N' or 'chars:N' (1 <= N <= 64), got {v!r}")
        return v

    @model_validator(mode="after")
    def _bands_rows(self) -> "NearDedupConfig":
        if min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-9:
            raise ValueError(f"weights: two non-negative numbers summing to 1, got {list(self.weights)}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows must be <= num_perm ({self.num_perm}), got {self.bands * self.rows}")
        return self

    @property
    def shingle_kind(self) -> str:
        return self.shingles.split(":")[0]

    @property
    def shingle_size(self) -> int:
        return int(self.shingles.split(":")[1])


class CleanConfig(_Strict):
    dedup: Optional[DedupConfig] = None
    near_dedup: Optional[NearDedupConfig] = None
    rules: List[RuleConfig] = Field(default_factory=list)
    filters: List[str] = Field(default_factory=list)   # "module:function", f(RecordBatch) -> bool mask, True = drop
    on_missing_label: Literal["quarantine"] = "quarantine"
    # NaN, inf and -inf (and 1e309, which parses as inf) in a float column: quarantined as
    # non_finite:<column> unless allowed (pandas would read them; a zscore of them is NaN).
    allow_non_finite: bool = False


class AnnotationsConfig(_ReaderOptions):
    """Long form: one source (a labelling round) of (example id, annotator, label) rows,
    joined to the examples by id: a table (csv, jsonl, parquet: the columns `id`,
    `annotator`, `label`) or Label Studio's JSON export as downloaded (`label_studio`: the
    example is `data[id_field]`, the annotator `completed_by`, the label the `choices` of
    the control `from_name`, by default the export's only Choices control)."""

    path: str
    format: Literal["csv", "jsonl", "parquet", "label_studio"] = "csv"
    id: str = "example_id"
    annotator: str = "annotator"
    label: str = "label"
    source: str = ""
    csv: CsvOptions = Field(default_factory=CsvOptions)
    jsonl: Optional[JsonlOptions] = None
    id_field: str = "example_id"       # label_studio: the key of a task's `data` holding the example id
    from_name: Optional[str] = None    # label_studio: the Choices control's name; None: the only one

    TABULAR_KEYS: ClassVar[Tuple[str, ...]] = ("id", "annotator", "label", "csv", "jsonl")
    LABEL_STUDIO_KEYS: ClassVar[Tuple[str, ...]] = ("id_field", "from_name")   # added later: hashed only when set

    @model_validator(mode="after")
    def _keys_of_its_format(self) -> "AnnotationsConfig":
        if self.format == "label_studio":
            wrong = [k for k in self.TABULAR_KEYS if k in self.model_fields_set]
            if wrong:
                raise _KeyError(wrong[0], "not a key of format label_studio (the export's own fields are read: "
                                          "data.<id_field>, completed_by, the choices of from_name)")
        else:
            wrong = [k for k in self.LABEL_STUDIO_KEYS if k in self.model_fields_set]
            if wrong:
                raise _KeyError(wrong[0], "only for format: label_studio")
        return self

    def hashed(self, dumped: Dict[str, Any]) -> Dict[str, Any]:
        """Its dump for the config hash: the Label Studio keys only when set, so that a
        source written before they existed keeps its hash."""
        return {k: v for k, v in dumped.items() if k not in self.LABEL_STUDIO_KEYS or k in self.model_fields_set}


class ReviewConfig(_Strict):
    """`labels.review`: which examples go to review/ for the next labelling round."""

    max_agreement: float = Field(default=0.67, ge=0, le=1)   # agreement with the consensus below this
    min_posterior: Optional[float] = Field(default=None, ge=0, le=1)   # Dawid-Skene posterior below this
    per_slice: int = Field(default=1000, ge=1)   # at most this many per value of slice_by
    slice_by: Optional[str] = None    # default: the first of labels.slices, else none


class LabelsConfig(_Strict):
    annotators: List[str] = Field(default_factory=list)   # wide form: one column per annotator
    # long form: one source, or a list of sources (labelling rounds), oldest first
    annotations: Optional[Union[AnnotationsConfig, List[AnnotationsConfig]]] = Field(default=None,
                                                                                     union_mode="left_to_right")
    normalize: Dict[str, str] = Field(default_factory=dict)   # whole values, like pandas' replace
    replace: Dict[str, str] = Field(default_factory=dict)     # literal substrings, like str.replace
    trim: bool = False          # strip surrounding whitespace before comparing labels
    case_fold: bool = False     # lower-case before comparing labels
    consensus: Literal["majority", "unanimous", "dawid_skene"] = "majority"
    on_tie: Literal["quarantine", "keep_first"] = "quarantine"
    slices: List[str] = Field(default_factory=list)
    classes: List[str] = Field(default_factory=list)      # default: every label value seen
    iterations: int = Field(default=10, ge=1, le=200)     # Dawid-Skene EM rounds
    review: Optional[ReviewConfig] = None                  # the review queue (review/); off when absent
    ordinal: bool = False       # the classes are ranks, in `classes` order: weighted kappas and ordinal alpha too

    @field_validator("annotations")
    @classmethod
    def _some_sources(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("an empty list: give one source or more, oldest round first")
        return v

    @property
    def annotation_sources(self) -> List[AnnotationsConfig]:
        """The long-form sources, oldest round first (round i + 1 is `annotation_sources[i]`)."""
        a = self.annotations
        return [] if a is None else list(a) if isinstance(a, list) else [a]

    def annotations_field(self, index: int) -> str:
        """The config field of source `index`, for messages: `labels.annotations` (one
        mapping) or `labels.annotations[1]` (a list)."""
        return f"labels.annotations[{index}]" if isinstance(self.annotations, list) else "labels.annotations"


class SplitConfig(_Strict):
    fractions: Dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "dev": 0.2, "test": 0.2})
    stratify_by: Optional[List[str]] = None
    group_by: Optional[str] = None
    seed: int = 42
    folds: Optional[int] = Field(default=None, ge=2, le=1000)   # k-fold: splits fold-0 .. fold-(k-1)
    # An example keeps the split it had in the pipeline's last COMPLETE run; new ones fill the quotas
    sticky: bool = False

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: Dict[str, float]) -> Dict[str, float]:
        if not v:
            raise ValueError("needs at least one split")
        for name, f in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
                raise ValueError(f"split name {name!r} must be a plain folder name")
            if not (0 <= f <= 1) or math.isnan(f):
                raise ValueError(f"{name}: must be between 0 and 1, got {f}")
        total = sum(v.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"must sum to 1, got {round(total, 12)}")
        return v

    @model_validator(mode="after")
    def _folds(self) -> "SplitConfig":
        if self.folds:
            if "fractions" in self.model_fields_set:
                raise ValueError("set fractions or folds, not both")
            self.fractions = {f"fold-{i}": 1.0 / self.folds for i in range(self.folds)}
        return self


class OutputConfig(_Strict):
    path: str = "out/"
    shards: int = Field(default=4, ge=1, le=10000)
    # parquet: raw/ and transformed/ (always); tfrecord: the same shards as GZIP tf.Example TFRecords
    # in TFX's layout too (`tfx/raw/Split-<name>/`, `tfx/transformed/Split-<name>/`)
    formats: List[Literal["parquet", "tfrecord"]] = Field(default_factory=lambda: ["parquet"])
    # TFDV statistics of each raw split (`tfx/statistics/Split-<name>/FeatureStats.pb`), TFX's ExampleStatistics
    statistics: bool = False

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: List[str]) -> List[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"lists a format twice: {v}")
        if "parquet" not in v:
            raise ValueError(f"must include parquet (raw/ and transformed/ are always written as Parquet), "
                             f"got {v}: write [parquet, tfrecord] for TFRecords beside them")
        return v

    @property
    def tfrecord(self) -> bool:
        return "tfrecord" in self.formats


class MysqlConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 3306
    database: str
    user: str
    password_env: Optional[str] = None


class StoreConfig(_Strict):
    sqlite: Optional[str] = None
    mysql: Optional[MysqlConfig] = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StoreConfig":
        if self.sqlite and self.mysql:
            raise ValueError("set one of sqlite or mysql, not both")
        return self


class GuardConfig(_Strict):
    """`guard`: a run whose input exceeds max_growth × the last COMPLETE run's warns (or fails)."""

    max_growth: float = Field(default=10.0, gt=1)
    on_exceed: Literal["warn", "fail"] = "warn"


class ReportConfig(_Strict):
    """`report`: what report.json computes beyond the funnel."""

    # metadata slices: per schema.metadata column, the values with the most rows; the rest are `<other>`
    max_slice_values: int = Field(default=20, ge=1, le=10_000)
    # what changed since the pipeline's last COMPLETE run (`rounds`): the job reads that run's split
    # files for example_id and label (at 1M rows about 1.5 s of CPU); false leaves it out
    rounds: bool = True


class ExpectConfig(_Strict):
    """`expect`: the quality gates the publisher checks before anything is published
    (`pipeline/gates.py`). The defaults protect without configuration: more than half of the
    input quarantined, no input row at all, a label class of the input that reaches no split,
    or a feature computed from the label fail the run."""

    warn_only: bool = False                                   # failures become warnings; the run publishes
    min_input_rows: int = Field(default=1, ge=0)
    max_quarantine_share: float = Field(default=0.5, ge=0, le=1)
    # one share for every reason, or per reason code (`type:sex`, patterns like `type:*`)
    max_quarantine_share_per_reason: Optional[Union[float, Dict[str, float]]] = None
    min_rows: Optional[Union[int, Dict[str, int]]] = None     # per split: one number, or per split name
    classes: Optional[List[str]] = None                       # the label values expected, and no other
    min_per_class: Optional[int] = Field(default=None, ge=0)  # per split, for every class (expected, or of the input)
    max_duplicate_share: Optional[float] = Field(default=None, ge=0, le=1)
    max_label_tie_share: Optional[float] = Field(default=None, ge=0, le=1)
    max_near_duplicate_leakage: Optional[float] = Field(default=None, ge=0, le=1)
    leakage: bool = False     # no example id, exact duplicate row or group value in two splits (a shuffle of hashes)
    label_not_a_feature: bool = True

    @field_validator("max_quarantine_share_per_reason")
    @classmethod
    def _shares(cls, v):
        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        for x in values:
            if not 0 <= x <= 1:
                raise ValueError(f"a share is between 0 and 1, got {x}")
        return v

    @field_validator("min_rows")
    @classmethod
    def _counts(cls, v):
        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        for x in values:
            if x < 0:
                raise ValueError(f"a row count is >= 0, got {x}")
        return v


class FeatureConfig(BaseModel):
    """One `features:` entry, from a string (`bucketize:10`) or a mapping
    (`{transform: vocabulary, top_k: 50, frequency_threshold: 5, fill: most_frequent}`).
    The fields are those of `transforms.features.FeatureSpec`, which it becomes.
    """

    column: str
    kind: str
    arg: Optional[int] = None
    frequency_threshold: Optional[int] = None
    num_oov_buckets: int = 1
    fill: Optional[Literal["value", "mean", "most_frequent"]] = None
    fill_value: Any = None

    # mapping key → where it goes; the count has a name per transform
    COUNT_KEY: ClassVar[Dict[str, str]] = {"bucketize": "buckets", "hash": "buckets", "vocabulary": "top_k",
                                           "tokens_vocabulary": "top_k", "tfidf": "vocab"}
    VOCAB_KINDS: ClassVar[Tuple[str, ...]] = ("vocabulary", "tokens_vocabulary", "tfidf")

    @classmethod
    def parse(cls, column: str, value: Any, column_type: str) -> "FeatureConfig":
        """A `features:` entry → a spec.

        Raises:
          _FieldError: naming `features.<column>` or `features.<column>.<key>`.
        """
        where = f"features.{column}"
        if isinstance(value, str):
            options: Dict[str, Any] = {}
            text = value
        elif isinstance(value, dict):
            options = dict(value)
            text = options.pop("transform", None)
            if not isinstance(text, str):
                raise _FieldError(f"{where}.transform", "required: the transform name, e.g. zscore")
        else:
            raise _FieldError(where, f"must be a transform name or a mapping, got {value!r}")
        kind, _, arg = text.partition(":")
        if kind not in FEATURE_KINDS:
            raise _FieldError(where, f"unknown feature transform {text!r}{did_you_mean(kind, FEATURE_KINDS)}; "
                              "expected one of "
                              "zscore, minmax, log_zscore, bucketize:N, vocabulary, vocabulary:TOPK, hash:N, "
                              "passthrough, tokens_vocabulary, tfidf:VOCAB")
        count_key = cls.COUNT_KEY.get(kind)
        if arg and count_key is None:
            raise _FieldError(where, f"{kind} takes no argument")
        if arg and (not arg.isdigit() or int(arg) < 1):
            raise _FieldError(where, f"{kind}: the count must be a positive integer, got {arg!r}")
        allowed = {"fill", "fill_value"}
        if count_key:
            allowed.add(count_key)
        if kind in cls.VOCAB_KINDS:
            allowed.add("frequency_threshold")
        if kind in ("vocabulary", "tokens_vocabulary"):
            allowed.add("num_oov_buckets")
        for key in options:
            if key not in allowed:
                raise _FieldError(f"{where}.{key}", f"unknown key for {kind}{did_you_mean(key, allowed)}; "
                                  "expected one of "
                                  f"{', '.join(['transform'] + sorted(allowed))}")
        count: Optional[int] = int(arg) if arg else None
        if count_key and count_key in options:
            if count is not None:
                raise _FieldError(f"{where}.{count_key}", f"given twice ({text!r} and {count_key}:)")
            count = cls._int(options[count_key], f"{where}.{count_key}")
        if kind in ("bucketize", "hash") and count is None:
            raise _FieldError(where, f"{kind} needs a positive count, e.g. {kind}:10")
        if kind == "tfidf" and count is None:
            raise _FieldError(where, "tfidf needs a vocabulary size, e.g. tfidf:1000 or "
                              "{transform: tfidf, vocab: 1000}")
        numeric = column_type in ("int", "float", "bool")
        if kind in NUMERIC_FEATURES and column_type not in ("int", "float"):
            raise _FieldError(where, f"{kind} needs a numeric column, {column!r} is {column_type}")
        if kind in TEXT_FEATURES and column_type != "string":
            raise _FieldError(where, f"{kind} needs a string column, {column!r} is {column_type}")
        threshold = options.get("frequency_threshold")
        if threshold is not None:
            threshold = cls._int(threshold, f"{where}.frequency_threshold", minimum=0)
        oov = cls._int(options.get("num_oov_buckets", 1), f"{where}.num_oov_buckets", minimum=0)
        fill, fill_value = options.get("fill"), options.get("fill_value")
        if fill is None and fill_value is not None:
            fill = "value"
        if fill is not None and fill not in ("value", "mean", "most_frequent"):
            raise _FieldError(f"{where}.fill", f"must be value, mean or most_frequent, got {fill!r}")
        if fill == "mean" and not numeric:
            raise _FieldError(f"{where}.fill", f"mean needs a numeric column, {column!r} is {column_type}")
        if fill == "value":
            ok = (isinstance(fill_value, (int, float)) and not isinstance(fill_value, bool)) if numeric \
                else isinstance(fill_value, str)
            if not ok:
                raise _FieldError(f"{where}.fill_value", f"fill: value needs a {'number' if numeric else 'string'} "
                                  f"fill_value for the {column_type} column {column!r}, got {fill_value!r}")
        elif fill_value is not None:
            raise _FieldError(f"{where}.fill_value", f"only used with fill: value, not fill: {fill}")
        return cls(column=column, kind=kind, arg=count, frequency_threshold=threshold, num_oov_buckets=oov,
                   fill=fill, fill_value=fill_value)

    @staticmethod
    def _int(value: Any, where: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _FieldError(where, f"must be an integer >= {minimum}, got {value!r}")
        return value


class Config(_Strict):
    name: str
    inputs: List[InputConfig] = Field(min_length=1)
    schema_: SchemaConfig = Field(alias="schema")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    labels: Optional[LabelsConfig] = None
    split: SplitConfig = Field(default_factory=SplitConfig)
    features: Dict[str, Any] = Field(default_factory=dict)   # column: "zscore" or {transform: ..., ...}
    output: OutputConfig = Field(default_factory=OutputConfig)
    metadata_store: StoreConfig = Field(default_factory=StoreConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    expect: ExpectConfig = Field(default_factory=ExpectConfig)

    # Not part of the YAML: where the file was and its exact text (hashed into MLMD).
    base_dir: str = Field(default=".", exclude=True)
    raw_text: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    # ---- derived views -------------------------------------------------------------
    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_

    @property
    def stratify_by(self) -> List[str]:
        return self.split.stratify_by if self.split.stratify_by else [self.schema_.label]

    @property
    def column_types(self) -> Dict[str, str]:
        """Every column the pipeline reads, with its type; undeclared metadata is string."""
        types = dict(self.schema_.columns)
        for col in self.schema_.metadata:
            types.setdefault(col, "string")
        if self.labels:
            for col in self.labels.annotators:
                types.setdefault(col, "string")
        for col in (self.schema_.id, self.schema_.label):
            if col:
                types.setdefault(col, "string")
        return types

    @property
    def consensus_label(self) -> bool:
        """True when the label column is made by consolidating annotators."""
        return bool(self.labels and (self.labels.annotators or self.labels.annotations))

    @property
    def input_columns(self) -> Dict[str, str]:
        """The columns read from the inputs (a consensus label is made, not read)."""
        types = self.column_types
        if self.consensus_label and self.schema_.label not in self.schema_.columns:
            types.pop(self.schema_.label)
        return types

    @property
    def feature_configs(self) -> List[FeatureConfig]:
        types = self.column_types
        return [FeatureConfig.parse(col, value, types[col]) for col, value in self.features.items()
                if col not in _FEATURE_OPTIONS]

    @property
    def tf_compat_v1(self) -> bool:
        """TFT builds a TF1 graph (its `force_tf_compat_v1`): the default, faster to build than
        traced TF2 functions; `features.tf_compat_v1: false` for a TF2 SavedModel."""
        return self.features.get("tf_compat_v1", True)

    @property
    def preprocessing_fn(self) -> Optional[str]:
        return self.features.get("preprocessing_fn")

    @property
    def config_hash(self) -> str:
        dumped = self.model_dump(mode="json", by_alias=True)
        # Keys added later hash only when set, so earlier configs keep their hash.
        for key in ("guard", "report", "expect"):
            if key not in self.model_fields_set:
                dumped.pop(key, None)
        if dumped.get("report") and dumped["report"].get("rounds") is True:   # added later: hashed when off
            dumped["report"].pop("rounds")
        if dumped.get("labels") and dumped["labels"].get("review") is None:
            dumped["labels"].pop("review", None)
        if dumped.get("labels") and dumped["labels"].get("annotations"):   # labels.annotations' later keys
            _hash_annotations(self.labels, dumped["labels"])
        if dumped.get("labels") and not dumped["labels"].get("ordinal"):
            dumped["labels"].pop("ordinal", None)
        if not dumped["split"].get("sticky"):
            dumped["split"].pop("sticky", None)
        if dumped["clean"].get("near_dedup") is None:
            dumped["clean"].pop("near_dedup", None)
        if not dumped["clean"].get("allow_non_finite"):
            dumped["clean"].pop("allow_non_finite", None)
        annotations = (dumped.get("labels") or {}).get("annotations") or []
        readers = list(dumped["inputs"]) + (annotations if isinstance(annotations, list) else [annotations])
        for entry in readers:   # csv.encoding, jsonl: added later
            if entry["csv"].get("encoding") is None:
                entry["csv"].pop("encoding", None)
            if entry.get("jsonl") is None:
                entry.pop("jsonl", None)
        if dumped["output"].get("formats") == ["parquet"]:
            dumped["output"].pop("formats", None)
        if not dumped["output"].get("statistics"):
            dumped["output"].pop("statistics", None)
        canonical = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def resolve(self, path: str) -> str:
        """A config-relative path made absolute; URLs (gs://...) are left alone."""
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))

    # ---- cross-field checks ---------------------------------------------------------
    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        s = self.schema_
        known = set(self.column_types)
        if s.label not in s.columns and not self.labels:
            raise _FieldError("schema.label", f"column {s.label!r} is not in schema.columns"
                              + did_you_mean(s.label, s.columns))
        if s.id is not None and s.id not in s.columns:
            raise _FieldError("schema.id", f"column {s.id!r} is not in schema.columns" + did_you_mean(s.id, s.columns))
        for i, rule in enumerate(self.clean.rules):
            if rule.column not in known:
                raise _FieldError(f"clean.rules[{i}].column", _unknown(rule.column, known))
            if rule.other is not None and rule.other not in known:
                raise _FieldError(f"clean.rules[{i}].other", _unknown(rule.other, known))
            numeric = self.column_types[rule.column] in ("int", "float")
            if (rule.min is not None or rule.max is not None) and not numeric:
                raise _FieldError(f"clean.rules[{i}]", f"min/max need a numeric column, "
                                  f"{rule.column!r} is {self.column_types[rule.column]}")
        if self.clean.dedup and self.clean.dedup.keys != "all":
            if not self.clean.dedup.keys:
                raise _FieldError("clean.dedup.keys", "must name at least one column, or be 'all'")
            for k in self.clean.dedup.keys:
                if k not in known:
                    raise _FieldError("clean.dedup.keys", _unknown(k, known))
        nd = self.clean.near_dedup
        if nd:
            for c in nd.columns:
                if c not in known:
                    raise _FieldError("clean.near_dedup.columns", _unknown(c, known))
                if self.column_types[c] != "string":
                    raise _FieldError("clean.near_dedup.columns", f"{c!r} is {self.column_types[c]}, not text")
        for i, f in enumerate(self.clean.filters):
            if not re.fullmatch(r"[\w.]+:\w+", f):
                raise _FieldError(f"clean.filters[{i}]", f"must be 'module:function', got {f!r}")
        for col in self.stratify_by:
            if col not in known:
                raise _FieldError("split.stratify_by", _unknown(col, known))
        if self.split.group_by is not None and self.split.group_by not in known:
            raise _FieldError("split.group_by", _unknown(self.split.group_by, known))
        if self.features and "train" not in self.split.fractions:
            raise _FieldError("split.fractions", "features are analysed on the train split: name one 'train'"
                              + (" (k-fold splits have no train split; drop features)" if self.split.folds else ""))
        if self.labels and self.labels.annotations:
            if self.labels.annotators:
                raise _FieldError("labels.annotations", "use annotators (wide form) or annotations (long form), "
                                  "not both")
            if not s.id:
                raise _FieldError("labels.annotations", "joining annotations to examples needs schema.id")
        if self.labels and self.labels.annotators:
            for col in self.labels.annotators:
                if col == s.label:
                    raise _FieldError("labels.annotators", f"{col!r} is the label column the consensus is written to")
        if self.labels:
            for col in self.labels.slices:
                if col not in known:
                    raise _FieldError("labels.slices", _unknown(col, known))
            review = self.labels.review
            if review is not None:
                if not self.consensus_label:
                    raise _FieldError("labels.review", "needs several annotators (labels.annotators or "
                                      "labels.annotations)")
                if review.slice_by is not None and review.slice_by not in known:
                    raise _FieldError("labels.review.slice_by", _unknown(review.slice_by, known))
                if review.min_posterior is not None and self.labels.consensus != "dawid_skene":
                    raise _FieldError("labels.review.min_posterior", "is for consensus: dawid_skene")
            if self.labels.ordinal and len(self.labels.classes) < 2:
                raise _FieldError("labels.ordinal", "needs labels.classes: the classes in rank order (at least two)")
        for col, text in self.features.items():
            where = f"features.{col}"
            if col == "preprocessing_fn":
                if not isinstance(text, str) or not re.fullmatch(r"[\w.]+:\w+", text):
                    raise _FieldError(where, f"must be 'module:function', got {text!r}")
                continue   # beside per-column entries, both sets of outputs are written
            if col == "tf_compat_v1":
                if not isinstance(text, bool):
                    raise _FieldError(where, f"must be true or false, got {text!r}")
                if set(self.features) <= set(_FEATURE_OPTIONS) - {"preprocessing_fn"}:
                    raise _FieldError(where, "set, but no feature is: name a column or a preprocessing_fn")
                continue
            if col not in known:
                raise _FieldError(where, _unknown(col, known))
            FeatureConfig.parse(col, text, self.column_types[col])
        expect = self.expect
        if isinstance(expect.min_rows, dict):
            for name in expect.min_rows:
                if name not in self.split.fractions:
                    raise _FieldError("expect.min_rows",
                                      f"no split {name!r} (splits: {', '.join(self.split.fractions)})")
        if expect.max_near_duplicate_leakage is not None and not self.clean.near_dedup:
            raise _FieldError("expect.max_near_duplicate_leakage", "needs clean.near_dedup")
        if expect.max_label_tie_share is not None and not self.consensus_label:
            raise _FieldError("expect.max_label_tie_share", "needs several annotators (labels.annotators or "
                              "labels.annotations)")
        for ann in (self.labels.annotation_sources if self.labels else []):
            if ann.format == "csv" and not ann.csv.header and not ann.csv.names:
                ann.csv.names = [ann.id, ann.annotator, ann.label]
        for i, inp in enumerate(self.inputs):
            if inp.format == "csv" and not inp.csv.header and not inp.csv.names:
                # Header-less CSV: the declared columns in their declared order.
                inp.csv.names = list(self.schema_.columns)
        return self


_FEATURE_OPTIONS = ("preprocessing_fn", "tf_compat_v1")   # `features:` keys that are not columns


def _hash_annotations(labels: LabelsConfig, dumped_labels: Dict[str, Any]) -> None:
    """`labels.annotations` in the dump that is hashed: each source without the keys it
    did not set that were added later (`AnnotationsConfig.hashed`)."""
    sources = labels.annotation_sources
    if isinstance(labels.annotations, list):
        dumped_labels["annotations"] = [s.hashed(d) for s, d in zip(sources, dumped_labels["annotations"])]
    else:
        dumped_labels["annotations"] = sources[0].hashed(dumped_labels["annotations"])


class _FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _KeyError(ValueError):
    """A key of a nested model is wrong: named after the model's own location."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# A union's member in an error's location (`function-after[...]`, `list[AnnotationsConfig]`): not a field.
_UNION_MEMBER = re.compile(r"[\[(]|^[A-Z]\w*Config$")
# What a union member says when the input is the other member's shape: not the error that matters.
_WRONG_SHAPE = ("model_type", "list_type", "dict_type", "model_attributes_type")


def _format_validation_error(e: ValidationError) -> str:
    errors = e.errors()
    # labels.annotations is one source or a list: pydantic reports both members' errors
    err = next((x for x in errors if x["type"] not in _WRONG_SHAPE), errors[0])
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    loc = ".".join(str(p) for p in err["loc"] if p != "__root__" and not _UNION_MEMBER.search(str(p)))
    loc = loc.replace("schema_", "schema").replace("in_", "in")
    if isinstance(inner, _FieldError):
        return f"{inner.field}: {inner}"
    if isinstance(inner, _KeyError):
        return f"{loc}.{inner.key}: {inner}"
    msg = str(inner) if inner is not None else err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + did_you_mean(err["loc"][-1] if err["loc"] else None, _keys_at(err["loc"][:-1]))
    elif err["type"] == "missing":
        msg = "required"
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    return f"{loc}: {msg}" if loc else msg


def _keys_at(loc: Sequence[Any]) -> List[str]:
    """The keys the config allows in the mapping at `loc` (a pydantic error location: keys and
    list indexes from the top), for "did you mean"; [] where it is not a model."""
    import typing

    def model_of(t: Any) -> Any:
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        for arg in typing.get_args(t):     # Optional[X], Union[...], List[X], Dict[str, X]
            if arg is not str and model_of(arg) is not None:
                return model_of(arg)
        return None

    t: Any = Config
    for part in loc:
        model = model_of(t)
        if model is None:
            return []
        if isinstance(part, int):
            continue    # a list item: the list's item model is found by model_of
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        fields.update(model.model_fields)
        if part not in fields:
            return []
        t = fields[part].annotation
    model = model_of(t)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def parse_config(data: Any, base_dir: str = ".", raw_text: str = "") -> Config:
    """Validates a config mapping.

    Raises:
      ConfigError: naming the first field that is wrong.
    """
    if not isinstance(data, dict):
        raise ConfigError("config: must be a mapping at the top level")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
    cfg.base_dir = os.path.abspath(base_dir)
    cfg.raw_text = raw_text
    return cfg


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:   # its own keys; merged ones (`<<: *anchor`) may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:   # an unhashable key: PyYAML's own error follows
                continue
            if first is not key_node:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {first.start_mark.line + 1} and "
                                    f"{key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


MAX_CONFIG_BYTES = 1 << 20       # a config is a few KB; a long label map a few hundred
MAX_ALIAS_VALUES = 100_000       # values YAML aliases may add to a config once expanded


class _AliasBomb(ValueError):
    pass


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """The number of values `root` holds once every alias is expanded, counted on the node
    graph (an alias is the anchored node itself, shared), so a bomb is measured without
    being built; stops past `limit`. A recursive alias counts as past it."""
    sizes: Dict[int, int] = {}
    on_path = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise _AliasBomb("a YAML alias refers to itself")
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        on_path.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _load_yaml(text: str):
    """YAML → Python objects, as `yaml.load` with `_UniqueKeyLoader`, refusing a document whose
    aliases would add more than MAX_ALIAS_VALUES values (a "billion laughs" bomb: 668 bytes
    nested in a rule's `in:` list took 3 minutes and 3.7 GB to validate and hash)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        distinct = len({id(n) for n in _walk(node)})
        expanded = _expanded_size(node, distinct + MAX_ALIAS_VALUES)
        if expanded > distinct + MAX_ALIAS_VALUES:
            raise _AliasBomb(f"YAML aliases expand it past {MAX_ALIAS_VALUES:,} values (an alias bomb?); "
                             "write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _walk(root: yaml.Node):
    """Every distinct node of the graph under `root`, once each."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += [k, v]


def load_config(path: str) -> Config:
    """Reads and validates a YAML config file.

    Raises:
      ConfigError: the file is missing, is not YAML, is larger than MAX_CONFIG_BYTES, its
        aliases expand past MAX_ALIAS_VALUES values, or a field is wrong.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES and os.path.isfile(path):
            raise ConfigError(f"{path}: the config is {size:,} bytes, more than {MAX_CONFIG_BYTES:,} "
                              "(a config names its data, it does not hold it)")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:   # a pipe or a file that grew: no size to stat
        raise ConfigError(f"{path}: the config is more than {MAX_CONFIG_BYTES:,} bytes "
                          "(a config names its data, it does not hold it)")
    try:
        data = _load_yaml(text)
    except (_DuplicateKey, _AliasBomb) as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    return parse_config(data, base_dir=os.path.dirname(os.path.abspath(path)), raw_text=text)


def user_code(cfg: Config) -> List[str]:
    """The `module:function` paths the config names (`clean.filters`, `features.preprocessing_fn`)."""
    return list(cfg.clean.filters) + ([cfg.preprocessing_fn] if cfg.preprocessing_fn else [])


def user_modules(cfg: Config) -> List[str]:
    """The modules of the config's user code that sit beside it (`mymod.py`, or a package
    folder), which remote workers must be sent."""
    return local_modules(user_code(cfg), cfg.base_dir)


def check_user_code(cfg: Config) -> None:
    """Imports the config's user code (`clean.filters`, `features.preprocessing_fn`), with
    the config's folder on `sys.path`, and checks each is a function: a bad module is
    refused before anything runs, not by a worker's traceback.

    Raises:
      ConfigError: naming the field and the path.
    """
    for i, path in enumerate(cfg.clean.filters):
        try:
            load_function(path, (cfg.base_dir,))
        except UserCodeError as e:
            raise ConfigError(f"clean.filters[{i}]: {e}") from None
    if cfg.preprocessing_fn:
        try:
            load_function(cfg.preprocessing_fn, (cfg.base_dir,))
        except UserCodeError as e:
            raise ConfigError(f"features.preprocessing_fn: {e}") from None
