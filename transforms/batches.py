"""Small Arrow record-batch helpers shared by the stages (vectorised, no per-row Python)."""

import contextlib
import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
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
    # the row's example_id, so `dataprep lineage --example` finds a quarantined row; a row that
    # has none (unparsed at ingest, or a missing id) gets the default one, `default_example_ids`
    (EXAMPLE_ID, pa.string()),
])

DUPLICATES_SCHEMA = pa.schema([
    (EXAMPLE_ID, pa.string()),
    ("kept_example_id", pa.string()),
    (SOURCE, pa.string()),
    (ROW, pa.int64()),
    ("label_conflict", pa.bool_()),
])

METRICS_NAMESPACE = "dataprep"


def quarantine_batch(records: pa.Array | pa.ChunkedArray, reasons: str | Sequence[str] | pa.Array, stage: str,
                     sources: str | pa.Array | pa.ChunkedArray,
                     rows: Sequence[int] | pa.Array | pa.ChunkedArray,
                     example_ids: Optional[pa.Array | pa.ChunkedArray] = None) -> pa.RecordBatch:
    """Rows set aside, as QUARANTINE_SCHEMA: the one place quarantine rows are built.

    `records` is each row's original text; `reasons` one reason code for all or one per
    row; `sources` one file for all or one per row; `rows` their line numbers;
    `example_ids` the rows' ids, where known: a row without one (None, or a null id) gets
    `default_example_ids` of its source and row, the id it would have had without `schema.id`.
    """
    n = len(records)
    columns = [records,
               pa.array([reasons] * n, pa.string()) if isinstance(reasons, str) else reasons,
               pa.array([stage] * n, pa.string()),
               pa.array([sources] * n, pa.string()) if isinstance(sources, str) else sources,
               rows]
    arrays = []
    for column, f in zip(columns, QUARANTINE_SCHEMA):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks else pa.array([], f.type)
        elif not isinstance(column, pa.Array):
            column = pa.array(column, f.type)
        arrays.append(column)
    ids = default_example_ids(arrays[3], arrays[4])
    if example_ids is not None:
        if isinstance(example_ids, pa.ChunkedArray):
            example_ids = example_ids.combine_chunks() if example_ids.num_chunks else pa.array([], pa.string())
        ids = pc.coalesce(pc.cast(example_ids, pa.string()), ids)
    arrays.append(ids)
    return pa.RecordBatch.from_arrays(arrays, schema=QUARANTINE_SCHEMA)


def default_example_ids(sources: pa.Array, rows: pa.Array) -> pa.Array:
    """The example_id of rows without a `schema.id`: `<sha1(source)[:12]>-<row>`, stable for a
    file and line (sources hashed once per distinct file)."""
    if len(sources) == 0:
        return pa.array([], pa.string())
    encoded = pc.dictionary_encode(sources)
    prefixes = pa.array([hashlib.sha1(s.encode()).hexdigest()[:12] for s in encoded.dictionary.to_pylist()],
                        pa.string())
    return pc.binary_join_element_wise(prefixes.take(encoded.indices), pc.cast(rows, pa.string()), "-")


def empty_quarantine() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in QUARANTINE_SCHEMA], schema=QUARANTINE_SCHEMA)

# A batch keyed by a hash bucket or shard: what every shuffle of this project moves.
KeyedBatch = beam.typehints.Tuple[int, pa.RecordBatch]


def hash_key(seed: int | str) -> str:
    """A 64-bit hash key (16 hex characters) derived from a seed."""
    return hashlib.sha256(str(seed).encode()).hexdigest()[:16]


def hash_columns(table: pa.Table | pa.RecordBatch, columns: Sequence[str], seed: int | str = 0) -> np.ndarray:
    """A stable 64-bit hash per row of `columns` (same value → same hash on any worker)."""
    return hash_arrays([table.column(c) for c in columns], table.num_rows, seed)


def hash_arrays(arrays: Sequence[pa.Array | pa.ChunkedArray], num_rows: int, seed: int | str = 0) -> np.ndarray:
    """A stable 64-bit hash per row of the aligned `arrays` (each `num_rows` long).

    Vectorised over the Arrow buffers (no Python object per value): strings are hashed
    eight bytes at a time, numbers by their int64/float64 bits (-0.0 as 0.0, one NaN),
    nulls as one constant, and each value's hash goes through the SplitMix64 finaliser.
    """
    with np.errstate(over="ignore"):
        h = np.full(num_rows, _mix64(np.array([int(hash_key(seed), 16)], np.uint64))[0], np.uint64)
        for arr in arrays:
            h = _mix64((h * _PRIME) ^ _hash_array(arr))
    return h


def key_by_bucket(batch: pa.RecordBatch, keys: Sequence[pa.Array | pa.ChunkedArray],
                  buckets: int) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """(bucket, sub-batch) for each bucket that `batch`'s rows fall in: the bucket is the
    (unseeded) 64-bit hash of the row's `keys` modulo `buckets`. The one keying step of
    every shuffle here (dedup, the annotation join, groups, output shards): whole
    sub-batches travel, never one element per row, and equal keys meet in one bucket."""
    yield from bucketed(batch, keys, buckets).pairs()


def bucketed(batch: pa.RecordBatch, keys: Sequence[pa.Array | pa.ChunkedArray], buckets: int,
             tag=None) -> "Bucketed":
    """`key_by_bucket`'s buckets, not yet split: for `GroupBySpilled`, which splits the batch on
    its writer thread. With `tag`, the keys are (tag, bucket)."""
    bucket = hash_arrays(keys, batch.num_rows) % np.uint64(buckets)
    return Bucketed(batch, bucket.astype(np.int64), tag)


class Bucketed:
    """A batch and an integer code per row, to be grouped by key: the key of code `c` is `c`,
    or `(tag, c)` with a tag. `pairs()` gives the (key, sub-batch) elements of a `GroupByKey`
    (`split_by_key`); left whole, the split (a gather of every row into key order, as long as
    compressing them) can happen where the parts are written, on another thread than the stage's.
    Between stages it travels with `BucketedCoder`."""

    __slots__ = ("batch", "codes", "tag")

    def __init__(self, batch: pa.RecordBatch, codes: np.ndarray, tag=None):
        self.batch, self.codes, self.tag = batch, codes, tag

    def key(self, code: int):
        return code if self.tag is None else (self.tag, code)

    def distinct(self) -> np.ndarray:
        return np.unique(self.codes)

    def pairs(self) -> Iterator[Tuple[object, pa.RecordBatch]]:
        for code, part in split_by_key(self.batch, self.codes):
            yield self.key(code), part


_PRIME = np.uint64(0x100000001B3)             # FNV-1a's 64-bit prime
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2 ** 64 - 1], np.uint64)


def _mix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _hash_array(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if pa.types.is_dictionary(t):
        h = _hash_array(arr.dictionary)[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        encoded = _few_distinct(arr)
        h = _hash_bytes(arr) if encoded is None else \
            _hash_bytes(encoded.dictionary)[encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    elif pa.types.is_floating(t):
        f = pc.cast(arr, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0   # -0.0 → 0.0
        f[np.isnan(f)] = np.nan
        h = _mix64(f.view(np.uint64) ^ np.uint64(0xF))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        i = pc.cast(arr, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        h = _mix64(i.view(np.uint64))
    else:   # lists, structs, decimals: by their JSON text
        import json

        h = _hash_bytes(pa.array([json.dumps(v, sort_keys=True, default=str) for v in arr.to_pylist()], pa.string()))
    if arr.null_count:
        h = np.where(arr.is_null().to_numpy(zero_copy_only=False), _NULL_HASH, h)
    return h


_SAMPLE = 1024


def _few_distinct(arr: pa.Array) -> Optional[pa.DictionaryArray]:
    """`arr` dictionary-encoded when it repeats its values (a category, a file name), so each
    distinct value is hashed once; None when it does not (judged on its first `_SAMPLE` values)
    or is too short to gain. The hashes are the same either way."""
    n = len(arr)
    if n < 4 * _SAMPLE or len(pc.unique(arr.slice(0, _SAMPLE))) > _SAMPLE // 8:
        return None
    encoded = pc.dictionary_encode(arr)
    return encoded if 0 < len(encoded.dictionary) <= n // 4 else None


def _hash_bytes(arr: pa.Array) -> np.ndarray:
    """A hash per value of a string/binary array, from its offsets and data buffers."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64 if large else np.int32)[arr.offset:arr.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    # this array's bytes only (a slice shares its parent's buffer), padded so an 8-byte read never runs off
    data = np.concatenate([data[offsets[0]:offsets[-1]], np.zeros(8, np.uint8)])
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    h = _mix64(lengths.astype(np.uint64) + np.uint64(0xB))
    # the 8 bytes starting at every byte offset, as little-endian uint64 (an unaligned view, no copy)
    at = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    live = np.flatnonzero(lengths > 0)
    pos = 0
    while len(live):
        words = at[starts[live] + pos] & _BYTE_MASKS[np.minimum(lengths[live] - pos, 8)]   # past the end → 0
        h[live] = (h[live] ^ words) * _PRIME
        pos += 8
        live = live[lengths[live] > pos]
    return _mix64(h)


@contextlib.contextmanager
def naming(path: str):
    """An OSError raised inside without a file name (pyarrow's `Error writing bytes to file`, a
    write to a full disk) raised again naming `path`, so a failed run's one line says which
    file: `No space left on device: /out/.staging-…/tmp/spill/….arrow`."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno:
            raise OSError(e.errno, os.strerror(e.errno), path) from e
        raise


class OrderedThreadPool:
    """A DoFn's heavy per-element work on `width` threads, results in submission order.

    One element is computed while the DoFn's thread gathers and decodes the next: Arrow,
    numpy and the Parquet writer release the GIL, so the in-process runner uses a second core.

    `submit` returns the results it had to wait for to keep at most `width` in flight
    (each in-flight element is a table in memory: one is enough for two cores); `finish`
    returns the rest. Results come in submission order. Emit outputs and Beam metrics from
    the DoFn's own thread (metrics are per thread).
    """

    def __init__(self, width: int = 1):
        self._width = width
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: Deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> List:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._width)
        ready = []
        while len(self._pending) >= self._width:
            ready.append(self._pending.popleft().result())
        self._pending.append(self._pool.submit(fn, *args))
        return ready

    def finish(self) -> List:
        try:
            return [self._pending.popleft().result() for _ in range(len(self._pending))]
        finally:
            self.close()

    def close(self) -> None:
        """Drops what is still pending (after a failure) and stops the thread."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._pool = None
        self._pending.clear()


def as_batches(outputs, *tags: str):
    """Declares outputs of a multi-output ParDo as record batches, and returns them.

    Beam types every output of `.with_outputs(...)` as Any, main one included, which
    gives them a pickling coder; and Beam pickles sampled elements of such a PCollection
    only to estimate their size. Typed, they use `RecordBatchCoder` (its size is `nbytes`).
    """
    for tag in tags:
        outputs[tag].element_type = pa.RecordBatch
    return outputs


def split_by_key(batch: pa.RecordBatch, keys: np.ndarray) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """Yields (key, sub-batch) for each distinct integer key, rows keeping their order.

    One `take` puts the rows in key order and each key's rows are a zero-copy slice of it
    (one take per key cost 2.7× as much at 64 keys); Arrow's IPC writer and `nbytes` count a
    slice's own rows only."""
    if batch.num_rows == 0:
        return
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    if len(bounds) == 0:
        yield int(sorted_keys[0]), batch
        return
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    ordered = batch.take(pa.array(order))
    for s, e in zip(starts, ends):
        yield int(sorted_keys[s]), ordered.slice(int(s), int(e - s))


def concat_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> pa.Table:
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return (schema or pa.schema([])).empty_table()
    return pa.Table.from_batches(batches).combine_chunks()


def table_to_batches(table: pa.Table, max_rows: int = 65536) -> List[pa.RecordBatch]:
    return [b for b in table.combine_chunks().to_batches(max_chunksize=max_rows) if b.num_rows]


def without_fields(schema: pa.Schema, names: Iterable[str]) -> pa.Schema:
    """`schema` less the fields `names` (the schema of `drop_columns`' result)."""
    names = set(names)
    return pa.schema([f for f in schema if f.name not in names])


def with_field(schema: pa.Schema, field: pa.Field) -> pa.Schema:
    """`schema` with `field` replaced where its name is, else appended (the schema of `set_column`'s result)."""
    idx = schema.get_field_index(field.name)
    return schema.set(idx, field) if idx >= 0 else schema.append(field)


def drop_columns(batch: pa.RecordBatch, names: Iterable[str]) -> pa.RecordBatch:
    names = set(names)
    keep = [i for i, f in enumerate(batch.schema) if f.name not in names]
    return pa.RecordBatch.from_arrays([batch.column(i) for i in keep],
                                      schema=pa.schema([batch.schema.field(i) for i in keep]))


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


def set_column(batch: pa.RecordBatch | pa.Table, name: str, array: pa.Array) -> pa.RecordBatch | pa.Table:
    """A new batch (or table) with `name` replaced (or appended); the input is not modified."""
    idx = batch.schema.get_field_index(name)
    if isinstance(batch, pa.Table):
        return batch.set_column(idx, name, array) if idx >= 0 else batch.append_column(name, array)
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


IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


class RecordBatchCoder(beam.coders.Coder):
    """Arrow IPC for record batches between stages, its buffers zstd-compressed.

    zstd makes tabular rows several times smaller for about the cost of copying them
    uncompressed: less to move through the runner's data plane, to
    hold in memory between stages (the DirectRunner keeps whole PCollections) and to
    shuffle over the network (Flink, Dataflow).
    """

    def encode(self, batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema, options=IPC_OPTIONS) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.RecordBatch:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()

    def estimate_size(self, batch: pa.RecordBatch) -> int:
        # Beam's default encodes the element a second time just to measure it
        return batch.nbytes

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return pa.RecordBatch


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)


class BucketedCoder(beam.coders.Coder):
    """`Bucketed` between stages (where a runner does not fuse its producer with
    `GroupBySpilled`): the batch as `RecordBatchCoder` writes it, the codes and the tag
    pickled beside it; its size for Beam's estimates is the batch's and the codes' bytes."""

    def encode(self, value: Bucketed) -> bytes:
        import pickle

        return pickle.dumps((value.tag, value.codes, RecordBatchCoder().encode(value.batch)), protocol=5)

    def decode(self, data: bytes) -> Bucketed:
        import pickle

        tag, codes, batch = pickle.loads(data)
        return Bucketed(RecordBatchCoder().decode(batch), codes, tag)

    def estimate_size(self, value: Bucketed) -> int:
        return value.batch.nbytes + value.codes.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Bucketed


beam.coders.registry.register_coder(Bucketed, BucketedCoder)
