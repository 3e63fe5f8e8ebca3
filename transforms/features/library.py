"""The declarative preprocessing functions (`features:` entries) as TFT code.

Output column `<column>_xf` (tfidf writes `<column>_xf_ids` and `<column>_xf_weights`): a
missing value is filled first (`fill`: the train mean by default for numeric transforms,
"" for strings), then transformed. Text transforms split the lower-cased text into runs
of letters and digits and write variable-length list columns.

Analyser results that matter for a report (means, standard deviations, min/max, bucket
boundaries, fill values) are named in the graph with `report_stat`, and read back from
the saved transform graph by `transforms.features.stats.summarize_transform`.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence


@dataclass(frozen=True)
class FeatureSpec:
    """One declarative feature: `kind` applied to `column`.

    `arg` is the transform's count: buckets (bucketize, hash), top_k (vocabulary,
    tokens_vocabulary) or the vocabulary size (tfidf). `fill` None means the default:
    the train mean for zscore/minmax/log_zscore/bucketize, 0 for a numeric passthrough,
    "" otherwise (a numeric column under vocabulary/hash is stringified first).
    """

    column: str
    kind: str
    arg: Optional[int] = None
    frequency_threshold: Optional[int] = None
    num_oov_buckets: int = 1
    fill: Optional[str] = None            # value | mean | most_frequent
    fill_value: Any = None

    @property
    def output_name(self) -> str:
        return f"{self.column}_xf"

    @property
    def tf_name(self) -> str:
        """The column's name in TensorFlow scopes and TFT vocabulary file names (`tf_name`)."""
        return tf_name(self.column)

    @property
    def output_names(self) -> List[str]:
        """The output columns: `<col>_xf`, or `<col>_xf_ids` and `<col>_xf_weights` for tfidf."""
        if self.kind == "tfidf":
            return [f"{self.output_name}_ids", f"{self.output_name}_weights"]
        return [self.output_name]


_TF_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def tf_name(column: str) -> str:
    """A column's name as TensorFlow takes it in a scope (`fill_<name>`) and TFT in a vocabulary
    file name: the column itself when it is made of ASCII letters, digits, `_`, `.` and `-`;
    otherwise (`größe (cm)`, `farbe name`) those runs joined by `_` and 8 hex digits of the
    name's sha1, which keep two names apart (`gr_e_cm_5c1f0b1e`). Only the graph's inner names
    and the vocabulary files' names change: inputs and outputs keep the user's names."""
    if _TF_SAFE.fullmatch(column):
        return column
    readable = "_".join(re.findall(r"[A-Za-z0-9]+", column)) or "column"
    return f"{readable}_{hashlib.sha1(column.encode()).hexdigest()[:8]}"


NUMERIC_KINDS = ("zscore", "minmax", "log_zscore", "bucketize")
# Tokens are the runs of Unicode letters and digits of the lower-cased text.
TOKEN_SEPARATORS = r"[^\p{L}\p{N}]+"
STAT_PREFIX = "dataprep_stat"
FILL_VOCABULARY_PREFIX = "dataprep_fill_"   # TFT keeps [A-Za-z0-9_-] of a vocabulary name


def declarative_preprocessing_fn(specs: Sequence[FeatureSpec], column_types: Dict[str, str],
                                 fuse_vocabularies: bool = True) -> Callable:
    """The preprocessing_fn of declarative `FeatureSpec`s.

    Every output depends on `train` only through TFT analysers: the fill value, then the
    transform's own statistics, computed on the filled column. With `fuse_vocabularies`, the
    vocabularies that can are computed by one analyzer (`transforms/features/vocabulary.py`),
    with the same results as one `tft.compute_and_apply_vocabulary` each.
    """
    specs = list(specs)
    column_types = dict(column_types)

    def preprocessing_fn(inputs):
        from transforms.features.vocabulary import FusedVocabularies

        vocabularies = FusedVocabularies() if fuse_vocabularies else None
        # first the fused vocabularies' tokens, then their one analyzer, then every output in
        # spec order (TFT records each vocabulary's metadata as its output is made)
        fused = {i: _fused_vocabulary(spec, inputs[spec.column], column_types[spec.column], vocabularies)
                 for i, spec in enumerate(specs) if vocabularies is not None and _fusable(spec)}
        if fused:
            vocabularies.compute()
        out = {}
        for i, spec in enumerate(specs):
            out.update(fused[i]() if i in fused else _apply_spec(spec, inputs[spec.column], column_types[spec.column]))
        return out

    return preprocessing_fn


def _fusable(spec) -> bool:
    """Whether `spec` is a vocabulary whose input needs no analyzer (no mean or most-frequent
    fill), so that it can be computed with the others in TFT's first phase."""
    return spec.kind in ("vocabulary", "tokens_vocabulary", "tfidf") and spec.fill in (None, "value")


def _apply_spec(spec, x, column_type: str) -> Dict[str, Any]:
    import tensorflow as tf
    import tensorflow_transform as tft

    col, kind, name = spec.tf_name, spec.kind, spec.output_name    # col: for TF's names
    numeric = column_type in ("int", "float", "bool")
    if kind in ("zscore", "log_zscore", "minmax"):
        return {name: _scaled(spec, x)}
    if kind in NUMERIC_KINDS or (kind == "passthrough" and numeric):
        values = tf.cast(x.values, tf.float32)
        default = "mean" if kind in NUMERIC_KINDS else "zero"
        filled = _dense(x, values, _fill_value(spec, values, default))
        if kind == "passthrough":
            return {name: filled}
        boundaries = report_stat(spec.column, "boundaries", tft.quantiles(
            filled, spec.arg, epsilon=min(1.0 / spec.arg, 0.01), name=f"quantiles_{col}"))
        return {name: tft.apply_buckets(filled, boundaries, name=f"bucketize_{col}")}

    text = _as_text(spec, x, column_type)
    if kind == "passthrough":
        return {name: text}
    if kind == "hash":
        return {name: tft.hash_strings(text, hash_buckets=spec.arg, name=f"hash_{col}")}
    vocab_args = dict(top_k=spec.arg, frequency_threshold=spec.frequency_threshold, vocab_filename=col,
                      name=f"vocabulary_{col}")
    if kind == "vocabulary":
        return {name: tft.compute_and_apply_vocabulary(text, num_oov_buckets=spec.num_oov_buckets,
                                                       weights=counted(text), **vocab_args)}
    tokens = tokenize(text)
    if kind == "tokens_vocabulary":
        return {name: tft.compute_and_apply_vocabulary(tokens, num_oov_buckets=spec.num_oov_buckets,
                                                       weights=counted(tokens), **vocab_args)}
    if kind == "tfidf":
        # ids in [0, top_k]: the top_k terms and one bucket for every other term
        ids = tft.compute_and_apply_vocabulary(tokens, num_oov_buckets=1, weights=counted(tokens), **vocab_args)
        index, weight = tft.tfidf(ids, spec.arg + 1, name=f"tfidf_{col}")
        ids_name, weights_name = spec.output_names
        return {ids_name: index, weights_name: weight}
    raise ValueError(f"unknown feature transform {kind!r}")  # config validation forbids it; a guard for callers


def _fused_vocabulary(spec, x, column_type: str, vocabularies) -> Callable[[], Dict[str, Any]]:
    """vocabulary, tokens_vocabulary or tfidf with its vocabulary asked of `vocabularies`: a
    function that makes, once `vocabularies.compute()` has run, what
    `tft.compute_and_apply_vocabulary` would give (see `transforms/features/vocabulary.py`)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    text = _as_text(spec, x, column_type)
    tokens = text if spec.kind == "vocabulary" else tokenize(text)
    oov = 1 if spec.kind == "tfidf" else spec.num_oov_buckets
    request = vocabularies.request(tokens, spec.tf_name, top_k=spec.arg, frequency_threshold=spec.frequency_threshold)

    def outputs() -> Dict[str, Any]:
        with tf.compat.v1.name_scope(f"vocabulary_{spec.tf_name}"):
            request.annotate()
            ids = tft.apply_vocabulary(tokens, request.path, default_value=-1, num_oov_buckets=oov,
                                       file_format="text")
        if spec.kind != "tfidf":
            return {spec.output_name: ids}
        index, weight = tft.tfidf(ids, spec.arg + 1, name=f"tfidf_{spec.tf_name}")
        ids_name, weights_name = spec.output_names
        return {ids_name: index, weights_name: weight}

    return outputs


def _scaled(spec, x):
    """zscore, log_zscore or minmax of the filled column, in one analysis phase.

    The statistics are those of the filled column (every train row, a missing value as
    its fill c), but computed from the present values' own statistics, the fill and the
    share p of rows that have a value, so that no analyser waits for another one's
    result (TFT would run a second pass over train for that):
      mean = p·m + (1-p)·c,  var = p·(v + (m - mean)²) + (1-p)·(c - mean)²,
      min = min(present min, c) when a value is missing (max alike).
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    col, kind = spec.tf_name, spec.kind
    values = tf.cast(x.values, tf.float32)
    mode = spec.fill or "mean"
    fill = _fill_value(spec, values, mode)     # with "mean", also m below for a zscore
    present = _dense(x, tf.ones_like(values), 0.0)
    p = tft.mean(present, name=f"present_{col}")       # 0 for an empty train: the fill alone
    t, c = values, fill
    if kind == "log_zscore":
        t, c = tf.math.log1p(tf.maximum(values, 0.0)), tf.math.log1p(tf.maximum(fill, 0.0))
    filled = _dense(x, t, c)
    if kind in ("zscore", "log_zscore"):
        m = fill if kind == "zscore" and mode == "mean" else tft.mean(t, name=f"mean_{col}")
        v = tft.var(t, name=f"var_{col}")
        mean = tf.where(p > 0.0, p * m + (1.0 - p) * c, c)
        var = tf.where(p > 0.0, p * (v + tf.square(m - mean)) + (1.0 - p) * tf.square(c - mean), 0.0)
        mean = report_stat(spec.column, "mean", mean)
        std = report_stat(spec.column, "std", tf.sqrt(var))
        # as TFT's scale_to_z_score: a constant column is only centred
        return (filled - mean) / tf.where(std > 0.0, std, 1.0)
    lo_t, hi_t = tft.min(t, name=f"min_{col}"), tft.max(t, name=f"max_{col}")
    lo = report_stat(spec.column, "min", tf.where(p >= 1.0, lo_t, tf.where(p > 0.0, tf.minimum(lo_t, c), c)))
    hi = report_stat(spec.column, "max", tf.where(p >= 1.0, hi_t, tf.where(p > 0.0, tf.maximum(hi_t, c), c)))
    # TFT's scale_to_0_1: a constant (or empty) column goes through a sigmoid
    span = tf.where(lo < hi, hi - lo, 1.0)
    return tf.where(lo < hi, (filled - lo) / span, tf.math.sigmoid(filled))


def counted(x):
    """Weight 1.0 per value of `x` (dense, or a SparseTensor's values), for `tft.vocabulary`.

    The same vocabulary as without weights (ranked by count, ties by value, the frequency
    threshold on counts), but TFT reduces a weighted one to (value, count) per batch inside
    the graph, while an unweighted one reaches Beam as one element per value of the
    train split. float64 keeps counts exact past 2**24.
    """
    import tensorflow as tf

    values = x.values if isinstance(x, tf.SparseTensor) else x
    return tf.ones(tf.shape(values), tf.float64)


def tokenize(text):
    """A dense [batch] string tensor → a 2-D SparseTensor of its lower-cased letter/digit runs."""
    import tensorflow as tf

    lowered = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.split(tf.strings.regex_replace(lowered, TOKEN_SEPARATORS, " ")).to_sparse()


def _as_text(spec, x, column_type: str):
    """The column as a dense [batch] string tensor, missing values filled.

    A numeric column under vocabulary/hash/passthrough is stringified (integers as
    integers); its default fill is "" (a category of its own), an explicit fill is applied
    to the number before stringifying.
    """
    import tensorflow as tf

    if column_type == "string":
        return _dense(x, x.values, _fill_value(spec, x.values, "empty"))
    if spec.fill is None:
        return _dense(x, tf.strings.as_string(x.values), tf.constant(""))
    if column_type == "float" or spec.fill == "mean":
        values = tf.cast(x.values, tf.float32)
        filled = _dense(x, values, _fill_value(spec, values, "zero"))
        if column_type != "float":    # an integer column filled with its mean: the nearest integer
            filled = tf.cast(tf.round(filled), tf.int64)
        return tf.strings.as_string(filled)
    return tf.strings.as_string(_dense(x, x.values, _fill_value(spec, x.values, "zero")))


def _fill_value(spec, values, default: str):
    """The scalar a missing value becomes: `spec.fill`, else `default` (mean | zero | empty)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    mode = spec.fill or default
    if mode == "mean":
        value = tft.mean(values, name=f"fill_{spec.tf_name}")
    elif mode == "value":
        value = tf.constant(spec.fill_value)
        value = value if values.dtype == tf.string else tf.cast(value, values.dtype)
    elif mode == "most_frequent":
        value = _most_frequent(values, spec.tf_name)
    elif mode == "zero":
        value = tf.zeros([], values.dtype)
    else:
        value = tf.constant("", dtype=tf.string)
    return report_stat(spec.column, "fill", value)


def _most_frequent(values, column: str):
    """The train's most frequent value (ties: the largest as bytes, TFT's vocabulary order).

    A top-1 TFT vocabulary (scalable, exact) read back from its asset file. Numbers go
    through text (floats with 9 significant digits, which round-trips float32 exactly) so
    that an empty vocabulary's placeholder cannot be mistaken for a value.
    """
    import tensorflow as tf
    import tensorflow_transform as tft
    from tensorflow_transform.analyzers import get_empy_vocabulary_dummy_value

    if values.dtype.is_floating:
        keys = tf.strings.as_string(values, scientific=True, precision=8)
    elif values.dtype != tf.string:
        keys = tf.strings.as_string(values)
    else:
        keys = values
    path = tft.vocabulary(keys, top_k=1, weights=counted(keys), vocab_filename=FILL_VOCABULARY_PREFIX + column,
                          name=f"most_frequent_{column}")
    top = tf.strings.split(tf.io.read_file(path), sep="\n", maxsplit=1)[0]
    _, dummy = get_empy_vocabulary_dummy_value(keys.dtype)   # what TFT writes for an empty vocabulary
    empty = tf.logical_or(tf.equal(top, ""), tf.equal(top, dummy.decode()))
    if values.dtype == tf.string:
        return tf.where(empty, "", top)
    return tf.where(empty, tf.zeros([], values.dtype),
                    tf.strings.to_number(tf.where(empty, "0", top), out_type=values.dtype))


def report_stat(column: str, stat: str, tensor):
    """Names an analyser result so `summarize_transform` reports it as `columns[column][stat]`.

    Use the returned tensor downstream: the saved graph keeps only what outputs depend on.
    For user preprocessing_fns too (`report_stat("age", "mean", tft.mean(x))`).
    """
    import tensorflow as tf

    if not re.fullmatch(r"[A-Za-z][A-Za-z_]*", stat):
        raise ValueError(f"stat name must be letters and underscores, got {stat!r}")
    return tf.identity(tensor, name=f"{STAT_PREFIX}.{column.encode().hex()}.{stat}")


def _dense(sparse, values, default):
    """A VarLen feature (at most one value per row) with `values` → a dense [batch] tensor."""
    import tensorflow as tf

    shaped = tf.SparseTensor(sparse.indices, values, [sparse.dense_shape[0], 1])
    return tf.squeeze(tf.sparse.to_dense(shaped, default_value=tf.cast(default, values.dtype)), axis=1)


def combined_preprocessing_fn(*fns: Callable) -> Callable:
    """One preprocessing_fn returning the outputs of all of `fns` (a user fn plus the declarative one).

    Raises (when TFT traces it):
      ValueError: two of them produce the same output name.
    """

    def preprocessing_fn(inputs):
        out: Dict[str, Any] = {}
        for fn in fns:
            produced = fn(dict(inputs))
            clash = sorted(set(out) & set(produced))
            if clash:
                raise ValueError(f"features: output {clash[0]!r} is produced twice (by the preprocessing_fn "
                                 "and a per-column transform); rename one")
            out.update(produced)
        return out

    return preprocessing_fn
