"""Write: record batches → `part-00000-of-00004.parquet` shards, byte-identical across runs.

A row's shard is a hash of its example_id (or of its source and row), and each shard is
sorted by (_source, _row) before it is written, so the same rows always give the same
files whatever the bundle order or runner. Every shard is written, empty ones included,
so readers can rely on the `-of-N` count. A folder may also have a TFRecord twin: the same
ordered shard table is then written a second time, as `part-00000-of-00004.tfrecord.gz` of
GZIP tf.Examples (`transforms/examples.py`), in the same shuffle.
"""

from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms.batches import EXAMPLE_ID, ROW, SOURCE, Bucketed, MergeCounts, OrderedThreadPool, bucketed, naming
from transforms.examples import write_tfrecord_gzip
from transforms.spill import GroupBySpilled


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def tfrecord_shard_name(index: int, count: int) -> str:
    # `.gz`: TFX's readers (tfx_bsl) choose GZIP from the file name
    return f"part-{index:05d}-of-{count:05d}.tfrecord.gz"


def shard_keys(batch: pa.RecordBatch) -> List[str]:
    names = batch.schema.names
    return [EXAMPLE_ID] if EXAMPLE_ID in names else [c for c in (SOURCE, ROW) if c in names]


def sort_for_output(table: pa.Table) -> pa.Table:
    """The rows in output order, as one chunk. A table of many chunks (a shard's batches, not
    concatenated) is gathered column by column: one column's concatenation at a time, not a
    copy of the whole table before its sorted copy."""
    keys = [(c, "ascending") for c in (SOURCE, ROW, EXAMPLE_ID) if c in table.schema.names]
    if not keys or table.num_rows == 0:
        return table.combine_chunks()
    order = _source_row_order(table)
    if order is None:
        order = pc.sort_indices(table, sort_keys=keys)
    elif len(order) == 0:
        return table.combine_chunks()
    return table.take(order)


def _source_row_order(table: pa.Table) -> Optional[np.ndarray]:
    """The order of `pc.sort_indices` by (_source, _row, example_id), found by numpy on one
    integer per row when the (_source, _row) pairs are distinct, as they are for rows read from
    files: Arrow compares the strings of every pair of rows, and a shard is a few runs already in
    `_row` order (the bundles of the stage before), which numpy's stable sort merges. An empty
    array when the rows are in order already; None when this does not apply (nulls, negative or
    repeated pairs: Arrow sorts)."""
    names = table.schema.names
    if SOURCE not in names or ROW not in names or table.num_rows < 2:
        return None
    source, row = table.column(SOURCE), table.column(ROW)
    if (source.null_count or row.null_count or not pa.types.is_integer(row.type)
            or not (pa.types.is_string(source.type) or pa.types.is_large_string(source.type))):
        return None
    rows = row.to_numpy().astype(np.int64, copy=False)
    if rows.min() < 0:
        return None
    encoded = pc.dictionary_encode(source.chunk(0) if source.num_chunks == 1 else source.combine_chunks())
    rank = np.empty(len(encoded.dictionary), np.int64)            # a source's place among the sources
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
    span = int(rows.max()) + 1
    if len(rank) > (1 << 62) // span:
        return None
    key = rank[encoded.indices.to_numpy()] * span + rows if len(rank) > 1 else rows
    if (key[1:] > key[:-1]).all():
        return np.zeros(0, np.int64)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    return order if (ordered[1:] > ordered[:-1]).all() else None


def write_parquet(table: pa.Table, path: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    with naming(path), FileSystems.create(path) as f:
        f.write(memoryview(sink.getvalue()))       # the buffer itself, not a copy as bytes


class SchemaDrift(ValueError):
    """A batch reached a write with other columns than its folder's declared schema."""


class _WriteShardFn(beam.DoFn):
    """Writes each shard's sorted table on a thread while the next is gathered
    (`OrderedThreadPool`); a target with a TFRecord folder has the same table written there
    too, on a second thread. A file's (path, rows) comes out once it is written: from a later
    `process` call, or at the end of the bundle."""

    def __init__(self, targets: List[Tuple[str, int, pa.Schema, Optional[str]]]):
        self._targets = targets

    def start_bundle(self):
        self._pool = OrderedThreadPool(width=2 if any(t[3] for t in self._targets) else 1)

    def process(self, element):
        (target, index), batches = element
        directory, count, schema, tfrecords = self._targets[target]
        # ordered here and encoded on the thread: the gather and the Parquet encoding take about
        # as long each, so both cores work (sorted on the thread, the DoFn waited for it)
        table = _shard_table(batches, schema)
        path = FileSystems.join(directory, shard_name(index, count))
        yield from self._pool.submit(_write_shard, table, path)
        if tfrecords:
            yield from self._pool.submit(_write_tfrecords, table, FileSystems.join(tfrecords,
                                                                                  tfrecord_shard_name(index, count)))

    def finish_bundle(self):
        for path_rows in self._pool.finish():
            yield GlobalWindows.windowed_value(path_rows)


def _shard_table(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """A shard's rows in output order, in the folder's declared schema; its batches are let go
    on return (read from their spill files, nothing else holds them while the previous shard
    is still being written).

    Raises:
      SchemaDrift: a batch has other columns than the schema (a stage that adds or drops a
        column without its declared schema saying so), or a column that does not cast.
    """
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return schema.empty_table()
    table = pa.Table.from_batches(batches)
    if table.schema.names != schema.names:
        missing = [c for c in schema.names if c not in table.schema.names]
        extra = [c for c in table.schema.names if c not in schema.names]
        if missing or extra:
            raise SchemaDrift(f"rows for a folder of columns {schema.names} came with missing {missing}, extra {extra}")
        table = table.select(schema.names)
    if not table.schema.equals(schema):
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaDrift(f"rows do not fit their folder's schema: {e}") from None
    return sort_for_output(table)


def _write_shard(table: pa.Table, path: str) -> Tuple[str, int]:
    write_parquet(table, path)
    return path, table.num_rows


def _write_tfrecords(table: pa.Table, path: str) -> Tuple[str, int]:
    return path, write_tfrecord_gzip(table, path)


def _by_shard(batch: pa.RecordBatch, target: int, count: int) -> Bucketed:
    return bucketed(batch, [batch.column(c) for c in shard_keys(batch)], count, tag=target)


_ShardBatch = Tuple[Tuple[int, int], pa.RecordBatch]


class WriteResult(NamedTuple):
    """`WriteAllShards`' output."""

    shards: beam.PCollection   # (path, rows) of every shard written, empty ones included
    rows: beam.PCollection     # one {directory: rows written}, every directory included


def _folder_rows(path_rows: Tuple[str, int]) -> Dict[str, int]:
    path, rows = path_rows
    return {path.rsplit("/", 1)[0]: rows}


class WriteAllShards(beam.PTransform):
    """{directory: batches} → `directory/part-SSSSS-of-NNNNN.parquet` for every directory, in one shuffle.

    `targets` maps each directory to (number of shards, schema): the schema its stage declares,
    known when the graph is built. Every shard is written in it (an empty split too); a batch
    with other columns fails the job naming them (`SchemaDrift`), never a silent drop. One
    grouping for all the outputs of a run instead of one per folder: on the DirectRunner each
    shuffle is a few stages of fixed cost. With `spill`, a folder, the shuffle moves files of
    batches (`transforms/spill.py`): the runner does not hold every output row. `tfrecords`
    maps a directory to a second one that gets the same shards as GZIP tf.Example TFRecords
    (`part-SSSSS-of-NNNNN.tfrecord.gz`, the same rows in the same order). Returns a
    `WriteResult`: the files written and the rows of each directory (TFRecord twins included).
    """

    def __init__(self, targets: Dict[str, Tuple[int, pa.Schema]], spill: Optional[str] = None,
                 tfrecords: Optional[Dict[str, str]] = None):
        super().__init__()
        for directory, (_, schema) in targets.items():
            if not isinstance(schema, pa.Schema):
                raise TypeError(f"{directory}: a write needs the folder's Arrow schema, got {schema!r}")
        tfrecords = tfrecords or {}
        self._targets = [(d, n, schema, tfrecords.get(d)) for d, (n, schema) in sorted(targets.items())]
        self._spill = spill

    def expand(self, pcolls):
        keyed = []
        for i, (directory, count, _, _) in enumerate(self._targets):
            batches = pcolls[directory]
            keyed.append(batches | f"ByShard[{i}]" >> beam.Map(_by_shard, i, count).with_output_types(Bucketed))
        # An empty batch per shard, so that every shard is written even when no row goes to it.
        nothing = pa.RecordBatch.from_arrays([], names=[])
        p = next(iter(pcolls.values())).pipeline
        keyed.append(p | "AllShards" >> beam.Create(
            [((i, k), nothing) for i, (_, count, _, _) in enumerate(self._targets) for k in range(count)]
        ).with_output_types(_ShardBatch))
        # a tuple: each output is spilled in the stage that makes it, not first gathered by a Flatten
        shards = (tuple(keyed)
                  | "GroupShards" >> GroupBySpilled(self._spill)
                  | "WriteParquet" >> beam.ParDo(_WriteShardFn(self._targets)).with_output_types(Tuple[str, int]))
        rows = (shards
                | "FolderRows" >> beam.Map(_folder_rows)
                | "SumFolderRows" >> beam.CombineGlobally(MergeCounts()))
        return WriteResult(shards, rows)


class WriteShards(beam.PTransform):
    """Batches → `directory/part-SSSSS-of-NNNNN.parquet` (`WriteAllShards` for one folder)."""

    def __init__(self, directory: str, num_shards: int, schema: pa.Schema, spill: Optional[str] = None):
        super().__init__()
        self._directory = directory
        self._target = (num_shards, schema)
        self._spill = spill

    def expand(self, batches):
        return {self._directory: batches} | WriteAllShards({self._directory: self._target}, self._spill)
