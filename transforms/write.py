"""Write: record batches → `part-00000-of-00004.parquet` shards, byte-identical across runs.

A row's shard is a hash of its example_id (or of its source and row), and each shard is
sorted by (_source, _row) before it is written, so the same rows always give the same
files whatever the bundle order or runner. Every shard is written, empty ones included,
so readers can rely on the `-of-N` count.
"""

from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from transforms.batches import EXAMPLE_ID, ROW, SOURCE, KeyedBatch, concat_batches, hash_columns, split_by_key


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def shard_keys(batch: pa.RecordBatch) -> List[str]:
    names = batch.schema.names
    return [EXAMPLE_ID] if EXAMPLE_ID in names else [c for c in (SOURCE, ROW) if c in names]


def sort_for_output(table: pa.Table) -> pa.Table:
    keys = [(c, "ascending") for c in (SOURCE, ROW, EXAMPLE_ID) if c in table.schema.names]
    if not keys or table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=keys))


def write_parquet(table: pa.Table, path: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    with FileSystems.create(path) as f:
        f.write(sink.getvalue().to_pybytes())


class _FirstSchema(beam.CombineFn):
    """The schema of the batches (the one with the smallest text, for determinism)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, schema):
        return self.merge_accumulators([acc, schema])

    def merge_accumulators(self, accs):
        present = [a for a in accs if a is not None]
        return min(present, key=lambda s: s.to_string()) if present else None

    def extract_output(self, acc):
        return acc


class _WriteShardFn(beam.DoFn):
    def __init__(self, directory: str, count: int, fallback: Optional[pa.Schema]):
        self._directory = directory
        self._count = count
        self._fallback = fallback

    def process(self, element, schema):
        index, batches = element
        schema = schema or self._fallback or pa.schema([])
        table = concat_batches([b for b in batches if b.num_rows], schema)
        table = sort_for_output(table.select(schema.names).cast(schema)) if table.num_rows else schema.empty_table()
        path = FileSystems.join(self._directory, shard_name(index, self._count))
        write_parquet(table, path)
        yield path, table.num_rows


class WriteShards(beam.PTransform):
    """Batches → `directory/part-SSSSS-of-NNNNN.parquet`.

    Output: a PCollection of (path, rows) per shard written. `schema` is used when no
    batch arrives at all (an empty split); otherwise the batches' own schema is used.
    """

    def __init__(self, directory: str, num_shards: int, schema: Optional[pa.Schema] = None):
        super().__init__()
        self._directory = directory
        self._count = num_shards
        self._schema = schema

    def expand(self, batches):
        count = self._count
        schema = (batches
                  | "Schema" >> beam.Map(lambda b: b.schema)
                  | "OneSchema" >> beam.CombineGlobally(_FirstSchema()))

        def by_shard(batch: pa.RecordBatch):
            keys = hash_columns(batch, shard_keys(batch)) % np.uint64(count)
            yield from split_by_key(batch, keys.astype(np.int64))

        keyed = batches | "ByShard" >> beam.FlatMap(by_shard).with_output_types(KeyedBatch)
        # An empty batch per shard, so that every shard is written even when no row goes to it.
        nothing = pa.RecordBatch.from_arrays([], names=[])
        every = batches.pipeline | "AllShards" >> beam.Create(
            [(i, nothing) for i in range(count)]).with_output_types(KeyedBatch)
        return ((keyed, every)
                | "WithEmpty" >> beam.Flatten()
                | "GroupShards" >> beam.GroupByKey()
                | "WriteParquet" >> beam.ParDo(_WriteShardFn(self._directory, count, self._schema),
                                               pvalue.AsSingleton(schema)))
