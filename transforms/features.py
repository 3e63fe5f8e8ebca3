"""Features: TensorFlow Transform analysed on train only, applied to every split.

Record batches go into TFT through a `TensorAdapterConfig`: every column as an Arrow
list array (a null becomes an empty list), features as VarLen tensors, and the label,
example_id, metadata and bookkeeping columns as passthrough keys, so transformed batches
come out already carrying them and nothing is re-joined afterwards.

Declarative transforms (output column `<column>_xf`; tfidf writes `<column>_xf_ids` and
`<column>_xf_weights`): a missing value is filled first (`fill`: the train mean by default
for numeric transforms, "" for strings), then transformed. Text transforms split the
lower-cased text into runs of letters and digits and write variable-length list columns.

Which outputs are scalars and which are lists is decided once, from TFT's transformed
feature spec, not per batch: a list column whose rows all hold one token stays a list.

Analyser results that matter for a report (means, standard deviations, min/max, bucket
boundaries, fill values) are named in the graph with `report_stat`, and read back from
the saved transform graph by `summarize_transform`.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PASSTHROUGH_PREFIX = "__pt__"


def feature_spec_for(columns: Dict[str, str]):
    import tensorflow as tf

    dtypes = {"string": tf.string, "bool": tf.int64, "int": tf.int64, "float": tf.float32}
    return {c: tf.io.VarLenFeature(dtypes[k]) for c, k in columns.items()}


def _arrow_value_type(kind: str) -> pa.DataType:
    return {"string": pa.binary(), "bool": pa.int64(), "int": pa.int64(), "float": pa.float32()}[kind]


def to_list_array(array: pa.Array, value_type: pa.DataType) -> pa.ListArray:
    """One value per row → list<value_type> with a null as an empty list."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    valid = np.asarray(pc.is_valid(array))
    offsets = np.zeros(len(array) + 1, np.int32)
    np.cumsum(valid, out=offsets[1:])
    values = array.drop_null()
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.int8())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pc.cast(values, value_type))


def from_list_array(array: pa.Array) -> pa.Array:
    """A list column with at most one value per row back to a plain column."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):
        return array
    lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0))
    if lengths.max(initial=0) > 1:
        return array
    flat = pc.list_flatten(array)
    has = lengths == 1
    if has.all():
        return flat
    return flat.take(pa.array(np.cumsum(has) - 1, mask=~has))


class TftInput:
    """Converts clean batches into TFT input batches, and back from TFT's output.

    `outputs` (set by `with_outputs` from the transformed feature spec) fixes each output
    column's Arrow type: a scalar feature becomes a plain column, any other a list column,
    whatever the values of one batch look like. Without it, a list column with at most one
    value per row in a batch is flattened (the behaviour for callers that know no spec).
    """

    def __init__(self, feature_columns: Dict[str, str], passthrough: Dict[str, pa.DataType],
                 outputs: Optional[Dict[str, Optional[pa.DataType]]] = None):
        self.feature_columns = dict(feature_columns)
        self.passthrough = dict(passthrough)
        self.outputs = dict(outputs) if outputs is not None else None

    def with_outputs(self, transformed_feature_spec: Dict[str, Any]) -> "TftInput":
        """A copy that decodes with the Arrow types of `output_types(transformed_feature_spec)`."""
        return TftInput(self.feature_columns, self.passthrough, output_types(transformed_feature_spec))

    def output_schema(self) -> Optional[pa.Schema]:
        """The Arrow schema of decoded batches, or None when an output's type is not known statically."""
        if self.outputs is None or any(t is None for t in self.outputs.values()):
            return None
        fields = [pa.field(n, t) for n, t in self.outputs.items()]
        return pa.schema(fields + [pa.field(c, t) for c, t in self.passthrough.items()])

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(c, pa.list_(_arrow_value_type(k))) for c, k in self.feature_columns.items()]
        fields += [pa.field(PASSTHROUGH_PREFIX + c, pa.list_(_passthrough_type(t)))
                   for c, t in self.passthrough.items()]
        return pa.schema(fields)

    def passthrough_keys(self) -> List[str]:
        return [PASSTHROUGH_PREFIX + c for c in self.passthrough]

    def tensor_adapter_config(self):
        from tensorflow_transform.tf_metadata import schema_utils
        from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

        schema = schema_utils.schema_from_feature_spec(feature_spec_for(self.feature_columns))
        reps = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
        return tensor_adapter.TensorAdapterConfig(self.arrow_schema(), reps)

    def encode(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [to_list_array(batch.column(c), _arrow_value_type(k)) for c, k in self.feature_columns.items()]
        arrays += [to_list_array(batch.column(c), _passthrough_type(t)) for c, t in self.passthrough.items()]
        return pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema())

    def decode(self, element: Tuple[pa.RecordBatch, Dict]) -> pa.RecordBatch:
        batch, _unary = element
        names, arrays = [], []
        restored, produced = {}, {}
        for name, col in zip(batch.schema.names, batch.columns):
            if name.startswith(PASSTHROUGH_PREFIX):
                original = name[len(PASSTHROUGH_PREFIX):]
                restored[original] = pc.cast(from_list_array(col), self.passthrough[original])
            else:
                produced[name] = col
        if self.outputs is None:
            for name, col in produced.items():
                names.append(name)
                arrays.append(from_list_array(col))
        else:
            extra = sorted(set(produced) - set(self.outputs))
            for name in list(self.outputs) + extra:
                names.append(name)
                arrays.append(_to_output_type(produced[name], self.outputs.get(name), name))
        for original in self.passthrough:
            names.append(original)
            arrays.append(restored[original])
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _passthrough_type(t: pa.DataType) -> pa.DataType:
    return pa.int8() if pa.types.is_boolean(t) else t


_TF_TO_ARROW = {"int64": pa.int64(), "float32": pa.float32(), "string": pa.binary()}


def output_types(transformed_feature_spec: Dict[str, Any]) -> Dict[str, Optional[pa.DataType]]:
    """Transformed feature spec → the Arrow type of each output column, in name order.

    `FixedLenFeature([])` → the value type; `VarLenFeature` and fixed shapes with values →
    `list<value type>`; anything else (sparse, ragged) → None, left as TFT writes it.
    """
    import tensorflow as tf

    out: Dict[str, Optional[pa.DataType]] = {}
    for name in sorted(transformed_feature_spec):
        f = transformed_feature_spec[name]
        dtype = getattr(f, "dtype", None)
        value = _TF_TO_ARROW.get(dtype.name) if dtype is not None else None
        if value is None:
            out[name] = None
        elif isinstance(f, tf.io.FixedLenFeature) and list(f.shape) == []:
            out[name] = value
        elif isinstance(f, (tf.io.VarLenFeature, tf.io.FixedLenFeature)):
            out[name] = pa.list_(value)
        else:
            out[name] = None
    return out


def _to_output_type(col: pa.Array, target: Optional[pa.DataType], name: str) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if target is None:
        return col
    if pa.types.is_list(target):
        return col.cast(target)
    flat = pc.list_flatten(col)     # a scalar feature has exactly one value in every row
    if len(flat) != len(col):
        raise ValueError(f"transformed feature {name!r}: expected one value per row, "
                         f"got {len(flat)} values for {len(col)} rows")
    return flat.cast(target)


NUMERIC_KINDS = ("zscore", "minmax", "log_zscore", "bucketize")
# Tokens are the runs of Unicode letters and digits of the lower-cased text.
TOKEN_SEPARATORS = r"[^\p{L}\p{N}]+"
STAT_PREFIX = "dataprep_stat"
FILL_VOCABULARY_PREFIX = "dataprep_fill_"   # TFT keeps [A-Za-z0-9_-] of a vocabulary name


def declarative_preprocessing_fn(specs: Sequence, column_types: Dict[str, str]) -> Callable:
    """The preprocessing_fn for the config's `features:` entries (`pipeline.config.FeatureSpec`).

    Every output depends on `train` only through TFT analysers: the fill value, then the
    transform's own statistics, computed on the filled column.
    """
    specs = list(specs)
    column_types = dict(column_types)

    def preprocessing_fn(inputs):
        out = {}
        for spec in specs:
            out.update(_apply_spec(spec, inputs[spec.column], column_types[spec.column]))
        return out

    return preprocessing_fn


def _apply_spec(spec, x, column_type: str) -> Dict[str, Any]:
    import tensorflow as tf
    import tensorflow_transform as tft

    col, kind, name = spec.column, spec.kind, spec.output_name
    numeric = column_type in ("int", "float", "bool")
    if kind in ("zscore", "log_zscore", "minmax"):
        return {name: _scaled(spec, x)}
    if kind in NUMERIC_KINDS or (kind == "passthrough" and numeric):
        values = tf.cast(x.values, tf.float32)
        default = "mean" if kind in NUMERIC_KINDS else "zero"
        filled = _dense(x, values, _fill_value(spec, values, default))
        if kind == "passthrough":
            return {name: filled}
        boundaries = report_stat(col, "boundaries", tft.quantiles(
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

    col, kind = spec.column, spec.kind
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
        mean = report_stat(col, "mean", mean)
        std = report_stat(col, "std", tf.sqrt(var))
        # as TFT's scale_to_z_score: a constant column is only centred
        return (filled - mean) / tf.where(std > 0.0, std, 1.0)
    lo_t, hi_t = tft.min(t, name=f"min_{col}"), tft.max(t, name=f"max_{col}")
    lo = report_stat(col, "min", tf.where(p >= 1.0, lo_t, tf.where(p > 0.0, tf.minimum(lo_t, c), c)))
    hi = report_stat(col, "max", tf.where(p >= 1.0, hi_t, tf.where(p > 0.0, tf.maximum(hi_t, c), c)))
    # TFT's scale_to_0_1: a constant (or empty) column goes through a sigmoid
    span = tf.where(lo < hi, hi - lo, 1.0)
    return tf.where(lo < hi, (filled - lo) / span, tf.math.sigmoid(filled))


def counted(x):
    """Weight 1.0 per value of `x` (dense, or a SparseTensor's values), for `tft.vocabulary`.

    The same vocabulary as without weights (ranked by count, ties by value, the frequency
    threshold on counts), but TFT reduces a weighted one to (value, count) per batch inside
    the graph, while an unweighted one reaches Beam as one element per value: 3M elements
    for five columns of 600k train rows, about 3 s. float64 keeps counts exact past 2**24.
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
        value = tft.mean(values, name=f"fill_{spec.column}")
    elif mode == "value":
        value = tf.constant(spec.fill_value)
        value = value if values.dtype == tf.string else tf.cast(value, values.dtype)
    elif mode == "most_frequent":
        value = _most_frequent(values, spec.column)
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


def load_user_fn(path: str) -> Callable:
    """`module:function` → the function (the module must be importable on workers)."""
    module_name, _, fn_name = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, fn_name)
    except AttributeError as e:
        raise ValueError(f"features.preprocessing_fn: {module_name} has no function {fn_name!r}") from e


class AnalyzeAndTransform(beam.PTransform):
    """{split: clean batches} → ({split: transformed batches}, transform_fn).

    Analysis reads `train` only; the fitted graph is applied to every split and written
    under `output_dir` (`transform_fn/`, `transformed_metadata/`, and the raw `metadata/`).
    Transformed batches hold the preprocessing_fn outputs plus the passthrough columns,
    with the Arrow types of the transformed feature spec; after `expand`, `output_schema`
    holds their schema (None if some output is neither a scalar nor a plain list).
    """

    def __init__(self, preprocessing_fn: Callable, tft_input: TftInput, temp_dir: str, output_dir: str,
                 train: str = "train", tf_compat_v1: bool = True):
        super().__init__()
        self._tf_compat_v1 = tf_compat_v1
        self._fn = preprocessing_fn
        self._input = tft_input
        self._temp_dir = temp_dir
        self._output_dir = output_dir
        self._train = train
        self.output_schema: Optional[pa.Schema] = None

    def expand(self, splits: Dict[str, beam.PCollection]):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

        config = self._input.tensor_adapter_config()
        encoded = {name: pcoll | f"ToTft[{name}]" >> beam.Map(self._input.encode).with_output_types(pa.RecordBatch)
                   for name, pcoll in splits.items()}
        out = {}
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=set(self._input.passthrough_keys()),
                              force_tf_compat_v1=self._tf_compat_v1):
            transform_fn = ((encoded[self._train], config)
                            | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(self._fn))
            # The output shapes are known once the graph is traced, before any analysis runs.
            metadata = transform_fn[1]
            schema = getattr(metadata, "dataset_metadata", metadata).schema
            decoder = self._input.with_outputs(schema_utils.schema_as_feature_spec(schema).feature_spec)
            self.output_schema = decoder.output_schema()
            for name, pcoll in encoded.items():
                transformed, _ = (((pcoll, config), transform_fn)
                                  | f"Transform[{name}]" >> tft_beam.TransformDataset(output_record_batches=True))
                # TFT leaves it untyped: Beam would pickle sampled batches to estimate their size
                transformed.element_type = beam.typehints.Tuple[pa.RecordBatch, beam.typehints.Dict[str, Any]]
                out[name] = (transformed
                             | f"FromTft[{name}]" >> beam.Map(decoder.decode).with_output_types(pa.RecordBatch))
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._output_dir)
            # The raw feature spec beside the graph (as TFX's Transform does), so that
            # `tft.TFTransformOutput(output_dir).raw_feature_spec()` works for serving code.
            raw = dataset_metadata.DatasetMetadata(
                schema_utils.schema_from_feature_spec(feature_spec_for(self._input.feature_columns)))
            _ = raw | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                os.path.join(self._output_dir, "metadata"), next(iter(splits.values())).pipeline)
        return out, written


def summarize_transform(output_dir: str, specs: Optional[Sequence] = None) -> Dict[str, Any]:
    """What the analysis found, read back from the saved transform graph under `output_dir`.

    Returns `{"columns": {column: {...}}, "vocabularies": {name: size}, "outputs": {name: type}}`:
    per column the statistics named with `report_stat` (mean, std, min, max, boundaries,
    fill) and, given the declarative `specs`, its transform, outputs and vocabulary size.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(output_dir)
    feature_spec = tft_output.transformed_feature_spec()
    outputs = {name: _type_name(t) for name, t in output_types(feature_spec).items()}
    for name in feature_spec:
        outputs.setdefault(name, type(feature_spec[name]).__name__)
    assets = tf.io.gfile.join(tft_output.transform_savedmodel_dir, "assets")
    vocabularies = {}
    for name in sorted(tf.io.gfile.listdir(assets)) if tf.io.gfile.exists(assets) else []:
        if not name.startswith(FILL_VOCABULARY_PREFIX):   # those hold one value: the fill, reported as such
            vocabularies[name] = int(tft_output.vocabulary_size_by_name(name))
    columns: Dict[str, Dict[str, Any]] = {}
    for spec in specs or ():
        entry = columns.setdefault(spec.column, {})
        entry.update(transform=spec.kind, outputs=list(spec.output_names))
        if spec.kind in ("vocabulary", "tokens_vocabulary", "tfidf") and tft_output.vocabulary_file_by_name(
                spec.column):
            entry["vocabulary_size"] = int(tft_output.vocabulary_size_by_name(spec.column))
            entry["oov_buckets"] = 1 if spec.kind == "tfidf" else spec.num_oov_buckets
    for (column, stat), value in sorted(read_stats(tft_output.transform_savedmodel_dir).items()):
        columns.setdefault(column, {})[stat] = value
    return {"columns": columns, "vocabularies": vocabularies, "outputs": outputs}


def _type_name(t: Optional[pa.DataType]) -> str:
    """`int64`, `float32`, `string`, `list<int64>`, ...; `other` for sparse or ragged outputs."""
    if t is None:
        return "other"
    if pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return {pa.binary(): "string", pa.float32(): "float32"}.get(t, str(t))


_STAT_OP = re.compile(r"(?:^|/)" + STAT_PREFIX + r"\.([0-9a-f]*)\.([A-Za-z][A-Za-z_]*)$")


def read_stats(transform_savedmodel_dir: str) -> Dict[Tuple[str, str], Any]:
    """{(column, stat): value} for every tensor named by `report_stat` in a saved transform graph.

    The analyser results are constants in the graph (TF1, `force_tf_compat_v1`) or captured
    by the saved function (TF2); the named tensors are evaluated from them alone (a stat that
    needs input data is skipped).
    """
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    tags = [list(m.meta_info_def.tags) for m in loader_impl.parse_saved_model(transform_savedmodel_dir).meta_graphs]
    if tags == [["transform"]]:    # the TF1 graph TFT writes
        with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as session:
            tf.compat.v1.saved_model.loader.load(session, tags[0], transform_savedmodel_dir)
            return _evaluate_stats(g, session)
    loaded = tf.saved_model.load(transform_savedmodel_dir)
    fn = loaded.transform_fn
    if hasattr(fn, "concrete_functions"):
        fn = fn.concrete_functions[0]
    graph = fn.graph
    if not any(_STAT_OP.search(op.name) for op in graph.get_operations()):
        return {}
    constants = {}
    for external, internal in graph.captures:
        if external.dtype != tf.resource and hasattr(external, "numpy"):
            constants[internal.name] = external.numpy()
    with tf.Graph().as_default() as g:
        input_map = {name: tf.constant(value) for name, value in constants.items()}
        tf.compat.v1.import_graph_def(graph.as_graph_def(), input_map=input_map, name="")
        with tf.compat.v1.Session(graph=g) as session:
            return _evaluate_stats(g, session)


def _evaluate_stats(graph, session) -> Dict[Tuple[str, str], Any]:
    """{(column, stat): value} of the `report_stat` tensors in `graph` that need no input."""
    import tensorflow as tf

    out: Dict[Tuple[str, str], Any] = {}
    for op in graph.get_operations():
        m = _STAT_OP.search(op.name)
        if not m:
            continue
        try:
            value = session.run(op.outputs[0])
        except tf.errors.OpError:    # depends on the data, not only on the analysis
            continue
        out[(bytes.fromhex(m.group(1)).decode(), m.group(2))] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """A numpy value → JSON-ready Python (a [1, n] boundaries array → a flat list)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SO":
        items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()]
        return items[0] if arr.ndim == 0 else items
    if arr.dtype == np.float32:     # the shortest text that is still this float32: 38.664, not 38.66400146484375
        items = [float(str(v)) for v in arr.reshape(-1)]
    else:
        items = arr.reshape(-1).tolist()
    return items[0] if arr.ndim == 0 else items
