"""Arrow ↔ TFT: clean record batches into TFT's input batches, and TFT's output back.

Record batches go into TFT through a `TensorAdapterConfig`: every column as an Arrow
list array (a null becomes an empty list), features as VarLen tensors, and the label,
example_id, metadata and bookkeeping columns as passthrough keys, so transformed batches
come out already carrying them and nothing is re-joined afterwards.

Which outputs are scalars and which are lists is decided once, from TFT's transformed
feature spec, not per batch: a list column whose rows all hold one token stays a list.
"""

from typing import Any, Dict, List, Optional, Tuple

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
        """Every feature a `VarLenSparseTensor` of its list column, said outright: inferred from
        a schema, a feature without a shape gets the same, with a log line per feature."""
        from tensorflow_metadata.proto.v0 import schema_pb2
        from tfx_bsl.tfxio import tensor_adapter

        varlen = schema_pb2.TensorRepresentation.VarLenSparseTensor
        reps = {c: schema_pb2.TensorRepresentation(varlen_sparse_tensor=varlen(column_name=c))
                for c in self.feature_columns}
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
