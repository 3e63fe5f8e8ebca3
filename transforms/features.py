"""Features: TensorFlow Transform analysed on train only, applied to every split.

Record batches go into TFT through a `TensorAdapterConfig`: every column as an Arrow
list array (a null becomes an empty list), features as VarLen tensors, and the label,
example_id, metadata and bookkeeping columns as passthrough keys, so transformed batches
come out already carrying them and nothing is re-joined afterwards.

Declarative transforms (output column `<column>_xf`): a missing numeric value is filled
with the train mean before scaling, a missing string with the empty string.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
    """Converts clean batches into TFT input batches, and back from TFT's output."""

    def __init__(self, feature_columns: Dict[str, str], passthrough: Dict[str, pa.DataType]):
        self.feature_columns = dict(feature_columns)
        self.passthrough = dict(passthrough)

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
        restored = {}
        for name, col in zip(batch.schema.names, batch.columns):
            if name.startswith(PASSTHROUGH_PREFIX):
                original = name[len(PASSTHROUGH_PREFIX):]
                restored[original] = pc.cast(from_list_array(col), self.passthrough[original])
            else:
                names.append(name)
                arrays.append(from_list_array(col))
        for original in self.passthrough:
            names.append(original)
            arrays.append(restored[original])
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _passthrough_type(t: pa.DataType) -> pa.DataType:
    return pa.int8() if pa.types.is_boolean(t) else t


def declarative_preprocessing_fn(specs: Sequence, column_types: Dict[str, str]) -> Callable:
    """The preprocessing_fn for the config's `features:` entries."""

    def preprocessing_fn(inputs):
        import tensorflow as tf
        import tensorflow_transform as tft

        out = {}
        for spec in specs:
            x = inputs[spec.column]
            kind, arg = spec.kind, spec.arg
            if column_types[spec.column] in ("int", "float", "bool"):
                x = tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), x.dense_shape)
                numeric = True
            else:
                numeric = False
            if kind == "passthrough":
                out[spec.output_name] = _dense(x, 0.0 if numeric else "")
            elif kind in ("zscore", "minmax", "log_zscore", "bucketize"):
                if kind == "log_zscore":
                    x = tf.SparseTensor(x.indices, tf.math.log1p(tf.maximum(x.values, 0.0)), x.dense_shape)
                name = f"{kind}_{spec.column}"
                filled = _dense(x, tft.mean(x.values, name=f"fill_{spec.column}"))
                if kind in ("zscore", "log_zscore"):
                    out[spec.output_name] = tft.scale_to_z_score(filled, name=name)
                elif kind == "minmax":
                    out[spec.output_name] = tft.scale_to_0_1(filled, name=name)
                else:
                    out[spec.output_name] = tft.bucketize(filled, num_buckets=arg, name=name)
            elif kind == "vocabulary":
                text = _dense(x, "") if not numeric else tf.strings.as_string(_dense(x, 0.0))
                out[spec.output_name] = tft.compute_and_apply_vocabulary(
                    text, top_k=arg, num_oov_buckets=1, vocab_filename=spec.column, name=f"vocabulary_{spec.column}")
            elif kind == "hash":
                text = _dense(x, "") if not numeric else tf.strings.as_string(_dense(x, 0.0))
                out[spec.output_name] = tft.hash_strings(text, hash_buckets=arg)
            else:  # config validation forbids this; kept as a guard for direct callers
                raise ValueError(f"unknown feature transform {kind!r}")
        return out

    return preprocessing_fn


def _dense(sparse, default):
    """A VarLen feature with at most one value per row → a dense [batch] tensor."""
    import tensorflow as tf

    shaped = tf.SparseTensor(sparse.indices, sparse.values, [sparse.dense_shape[0], 1])
    default = tf.cast(default, sparse.values.dtype)
    return tf.squeeze(tf.sparse.to_dense(shaped, default_value=default), axis=1)


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
    under `output_dir` (`transform_fn/`, `transformed_metadata/`) by `WriteTransformFn`.
    Transformed batches hold the preprocessing_fn outputs plus the passthrough columns.
    """

    def __init__(self, preprocessing_fn: Callable, tft_input: TftInput, temp_dir: str, output_dir: str,
                 train: str = "train"):
        super().__init__()
        self._fn = preprocessing_fn
        self._input = tft_input
        self._temp_dir = temp_dir
        self._output_dir = output_dir
        self._train = train

    def expand(self, splits: Dict[str, beam.PCollection]):
        import tensorflow_transform.beam as tft_beam

        config = self._input.tensor_adapter_config()
        encoded = {name: pcoll | f"ToTft[{name}]" >> beam.Map(self._input.encode)
                   for name, pcoll in splits.items()}
        out = {}
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=set(self._input.passthrough_keys())):
            transform_fn = ((encoded[self._train], config)
                            | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(self._fn))
            for name, pcoll in encoded.items():
                transformed, _ = (((pcoll, config), transform_fn)
                                  | f"Transform[{name}]" >> tft_beam.TransformDataset(output_record_batches=True))
                out[name] = transformed | f"FromTft[{name}]" >> beam.Map(self._input.decode)
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._output_dir)
        return out, written
