"""Small Arrow record-batch helpers shared by the stages (vectorised, no per-row Python)."""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Bookkeeping columns every row carries from the reader to the outputs.
SOURCE = "_source"
ROW = "_row"
RECORD = "_record"  # the original text of the row; dropped once the row is validated
EXAMPLE_ID = "example_id"

QUARANTINE_SCHEMA = pa.schema([
    ("record", pa.string()),
    ("reason", pa.string()),
    ("stage", pa.string()),
    (SOURCE, pa.string()),
    (ROW, pa.int64()),
])

DUPLICATES_SCHEMA = pa.schema([
    (EXAMPLE_ID, pa.string()),
    ("kept_example_id", pa.string()),
    (SOURCE, pa.string()),
    (ROW, pa.int64()),
    ("label_conflict", pa.bool_()),
])

METRICS_NAMESPACE = "dataprep"

# A batch keyed by a hash bucket or shard: what every shuffle of this project moves.
KeyedBatch = beam.typehints.Tuple[int, pa.RecordBatch]


def hash_key(seed: int | str) -> str:
    """A 16-character key for pandas' SipHash, derived from a seed."""
    return hashlib.sha256(str(seed).encode()).hexdigest()[:16]


def hash_columns(table: pa.Table | pa.RecordBatch, columns: Sequence[str], seed: int | str = 0) -> np.ndarray:
    """A stable 64-bit hash per row of `columns` (same value → same hash on any worker)."""
    frame = pd.DataFrame({c: table.column(c).to_pandas() for c in columns})
    return pd.util.hash_pandas_object(frame, index=False, hash_key=hash_key(seed)).to_numpy(np.uint64)


def split_by_key(batch: pa.RecordBatch, keys: np.ndarray) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """Yields (key, sub-batch) for each distinct integer key, rows keeping their order."""
    if batch.num_rows == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    for s, e in zip(starts, ends):
        yield int(sorted_keys[s]), batch.take(pa.array(order[s:e]))


def concat_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> pa.Table:
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return (schema or pa.schema([])).empty_table()
    return pa.Table.from_batches(batches).combine_chunks()


def table_to_batches(table: pa.Table, max_rows: int = 65536) -> List[pa.RecordBatch]:
    return [b for b in table.combine_chunks().to_batches(max_chunksize=max_rows) if b.num_rows]


def drop_columns(batch: pa.RecordBatch, names: Iterable[str]) -> pa.RecordBatch:
    names = set(names)
    keep = [i for i, f in enumerate(batch.schema) if f.name not in names]
    return pa.RecordBatch.from_arrays([batch.column(i) for i in keep],
                                      schema=pa.schema([batch.schema.field(i) for i in keep]))


def filter_batch(batch: pa.RecordBatch, mask: np.ndarray) -> pa.RecordBatch:
    return batch.filter(pa.array(mask, pa.bool_()))


def json_records(rows: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
    """The JSON text of each row's values: the quarantine record of a row that no longer
    has its raw line (Parquet input, or a row set aside after cleaning)."""
    import json

    table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
    return pa.array([json.dumps(r, default=str, ensure_ascii=False) for r in table.select(list(columns)).to_pylist()],
                    pa.string())


def value_counts(array: pa.Array) -> Dict[str, int]:
    if len(array) == 0:
        return {}
    counts = pc.value_counts(array)
    return {str(v): int(c) for v, c in zip(counts.field("values").to_pylist(),
                                           counts.field("counts").to_pylist())}


def merge_counts(dicts: Iterable[Dict[str, int]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


class MergeCounts(beam.CombineFn):
    """Sums {key: count} dicts (incrementally, unlike a callable that buffers its inputs)."""

    def create_accumulator(self) -> Dict[str, int]:
        return {}

    def add_input(self, acc: Dict[str, int], counts: Dict[str, int]) -> Dict[str, int]:
        return merge_counts([acc, counts])

    def merge_accumulators(self, accs) -> Dict[str, int]:
        return merge_counts(accs)

    def extract_output(self, acc: Dict[str, int]) -> Dict[str, int]:
        return acc


def set_column(batch: pa.RecordBatch, name: str, array: pa.Array) -> pa.RecordBatch:
    """A new batch with `name` replaced (or appended); the input batch is not modified."""
    idx = batch.schema.get_field_index(name)
    arrays = list(batch.columns)
    fields = list(batch.schema)
    if idx >= 0:
        arrays[idx] = array
        fields[idx] = pa.field(name, array.type)
    else:
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def count_reasons(quarantine: pa.RecordBatch) -> None:
    """Beam counters `<stage>.quarantined.<reason>` in the dataprep namespace."""
    from apache_beam.metrics import Metrics

    keys = pc.binary_join_element_wise(quarantine.column("stage"), quarantine.column("reason"), ".quarantined.")
    for key, n in value_counts(keys).items():
        Metrics.counter(METRICS_NAMESPACE, key).inc(n)


class RecordBatchCoder(beam.coders.Coder):
    """Arrow IPC for record batches between stages: one buffer, decoded without copying
    (pickling a batch copies every buffer twice)."""

    def encode(self, batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.RecordBatch:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return pa.RecordBatch


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)
