"""Write (transforms/write.py): every shard written, rows sorted, the same bytes whatever
the batching or bundle order."""

from __future__ import annotations

import hashlib
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.examples import read_tfrecord_gzip
from transforms.write import (WriteAllShards, WriteShards, _source_row_order, shard_name, sort_for_output,
                              tfrecord_shard_name)


def _rows(n: int) -> pa.Table:
    return pa.table({"example_id": [f"e{i}" for i in range(n)], "x": list(range(n)),
                     "_source": ["b.csv" if i % 3 else "a.csv" for i in range(n)], "_row": [n - i for i in range(n)]})


def _digests(folder) -> dict:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))}


def test_shard_names_and_output_order():
    assert shard_name(3, 16) == "part-00003-of-00016.parquet"
    table = sort_for_output(_rows(6))
    assert list(zip(table.column("_source").to_pylist(), table.column("_row").to_pylist())) == [
        ("a.csv", 3), ("a.csv", 6), ("b.csv", 1), ("b.csv", 2), ("b.csv", 4), ("b.csv", 5)]


def test_the_fast_order_is_arrows_order():
    """`sort_for_output` orders by numpy where (_source, _row) pairs are distinct; the reference
    is Arrow's own sort by the three keys, on sources that sort differently as bytes and as
    first seen, a shard made of sorted runs, rows already in order, and ties."""
    rng = np.random.default_rng(7)
    keys = [("_source", "ascending"), ("_row", "ascending"), ("example_id", "ascending")]

    def table(sources, rows):
        return pa.table({"example_id": [f"e{rng.integers(1000)}" for _ in rows], "x": np.arange(len(rows)),
                         "_source": sources, "_row": pa.array(rows, pa.int64())})

    names = ["b.csv", "a.csv", "Z.csv", "ä.csv"]
    runs = np.concatenate([np.sort(run) for run in np.split(rng.choice(10**6, 4200, replace=False), 6)])
    cases = {
        "sorted runs": (["one.csv"] * len(runs), runs),
        "reversed": (["one.csv"] * 700, np.sort(rng.choice(10**6, 700, replace=False))[::-1]),
        "sources": ([names[i % 4] for i in range(4000)], rng.permutation(4000)),
        "in order": (["a.csv"] * 500, np.arange(500)),
        "ties": ([names[i % 2] for i in range(3000)], rng.integers(0, 200, 3000)),
    }
    for name, (sources, rows) in cases.items():
        t = table(sources, rows)
        want = t.take(pc.sort_indices(t, sort_keys=keys))
        assert sort_for_output(t).equals(want), name
        chunked = sort_for_output(pa.Table.from_batches(t.to_batches(max_chunksize=333)))   # a shard's batches
        assert chunked.equals(want) and {c.num_chunks for c in chunked.columns} == {1}, name
        fast = _source_row_order(t)
        assert (fast is None) == (name == "ties"), name               # the fast path was the one taken
        assert (fast is not None and len(fast) == 0) == (name == "in order"), name
    with_null = table(["a.csv", None, "b.csv"], [3, 2, 1])
    assert _source_row_order(with_null) is None
    assert sort_for_output(with_null).equals(with_null.take(pc.sort_indices(with_null, sort_keys=keys)))


def test_same_bytes_whatever_the_batching_and_every_shard_written(tmp_path):
    table = _rows(200)
    for name, batches, spill in (("one", table.to_batches(), None),
                                 ("many", table.to_batches(max_chunksize=7)[::-1], None),
                                 ("spilled", table.to_batches(max_chunksize=7), str(tmp_path / "spill"))):
        with TestPipeline() as p:
            _ = p | beam.Create(batches) | WriteShards(str(tmp_path / name), 5, table.schema, spill=spill)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "many") == _digests(tmp_path / "spilled")
    assert os.listdir(tmp_path / "spill")          # the shuffle went through files
    assert sorted(os.listdir(tmp_path / "one")) == [shard_name(i, 5) for i in range(5)]
    shards = [pq.read_table(tmp_path / "one" / shard_name(i, 5)) for i in range(5)]
    assert sum(t.num_rows for t in shards) == 200
    for t in shards:
        assert t.equals(sort_for_output(t))
    ids = [set(t.column("example_id").to_pylist()) for t in shards]
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])


def test_tfrecord_twins_hold_each_parquet_shards_rows_in_order_with_the_same_bytes_every_time(tmp_path):
    """With a TFRecord folder, the same ordered shard table is written twice: shard k of the
    TFRecords is Parquet shard k, row by row; the bytes do not depend on batching or spilling;
    an empty shard is an empty (valid) file; both files' paths come back."""
    from tensorflow.core.example import example_pb2

    table = _rows(200)
    for name, batches, spill in (("one", table.to_batches(), None),
                                 ("many", table.to_batches(max_chunksize=7)[::-1], str(tmp_path / "spill"))):
        with TestPipeline() as p:
            written = ({str(tmp_path / name / "pq"): p | beam.Create(batches)}
                       | WriteAllShards({str(tmp_path / name / "pq"): (5, table.schema)}, spill,
                                        tfrecords={str(tmp_path / name / "pq"): str(tmp_path / name / "tf")}))
            assert_that(written.shards | beam.Map(lambda pr: (os.path.basename(pr[0]), pr[1])) | beam.Keys(),
                        equal_to([shard_name(i, 5) for i in range(5)] + [tfrecord_shard_name(i, 5) for i in range(5)]))
    assert _digests(tmp_path / "one" / "tf") == _digests(tmp_path / "many" / "tf")
    assert sorted(os.listdir(tmp_path / "one" / "tf")) == [tfrecord_shard_name(i, 5) for i in range(5)]
    assert tfrecord_shard_name(3, 16) == "part-00003-of-00016.tfrecord.gz"
    for i in range(5):
        rows = pq.read_table(tmp_path / "one" / "pq" / shard_name(i, 5)).to_pylist()
        records = [example_pb2.Example.FromString(r).features.feature
                   for r in read_tfrecord_gzip(str(tmp_path / "one" / "tf" / tfrecord_shard_name(i, 5)))]
        assert [(f["example_id"].bytes_list.value[0].decode(), f["x"].int64_list.value[0],
                 f["_source"].bytes_list.value[0].decode(), f["_row"].int64_list.value[0]) for f in records] == \
            [(r["example_id"], r["x"], r["_source"], r["_row"]) for r in rows]
    with TestPipeline() as p:
        empty = p | beam.Create([]).with_output_types(pa.RecordBatch)
        _ = {str(tmp_path / "e"): empty} | WriteAllShards({str(tmp_path / "e"): (2, table.schema)},
                                                          tfrecords={str(tmp_path / "e"): str(tmp_path / "etf")})
    assert [read_tfrecord_gzip(str(tmp_path / "etf" / tfrecord_shard_name(i, 2))) for i in range(2)] == [[], []]


def test_empty_output_gets_typed_empty_shards_and_paths_and_rows_come_back(tmp_path):
    schema = pa.schema([("example_id", pa.string()), ("x", pa.int64())])
    with TestPipeline() as p:
        empty = p | "Nothing" >> beam.Create([]).with_output_types(pa.RecordBatch)
        full = p | "Rows" >> beam.Create(_rows(10).to_batches())
        written = {str(tmp_path / "empty"): empty, str(tmp_path / "full"): full} | WriteAllShards(
            {str(tmp_path / "empty"): (2, schema), str(tmp_path / "full"): (1, _rows(10).schema)})
        assert_that(written.shards | beam.Map(lambda pr: (os.path.basename(os.path.dirname(pr[0])), pr[1])),
                    equal_to([("empty", 0), ("empty", 0), ("full", 10)]), label="Shards")
        assert_that(written.rows, equal_to([{str(tmp_path / "empty"): 0, str(tmp_path / "full"): 10}]), label="Rows")
    for i in range(2):
        t = pq.read_table(tmp_path / "empty" / shard_name(i, 2))
        assert t.num_rows == 0 and t.schema.remove_metadata() == schema


def test_a_batch_that_drifts_from_its_folders_schema_fails_naming_the_columns(tmp_path):
    """The schema is the one its stage declares: a batch with a column more (or less) is an error
    naming the columns, not a silent drop of the column; a type that casts is cast."""
    from transforms.write import SchemaDrift, _shard_table

    rows = _rows(6)
    declared = rows.schema
    extra = rows.append_column("surprise", pa.array(range(6)))
    with pytest.raises(SchemaDrift, match=r"missing \[\], extra \['surprise'\]"):
        _shard_table(extra.to_batches(), declared)
    with pytest.raises(SchemaDrift, match=r"missing \['example_id'\]"):
        _shard_table(rows.drop(["example_id"]).to_batches(), declared)
    reordered = rows.select(list(reversed(rows.schema.names)))
    assert _shard_table(reordered.to_batches(), declared).equals(sort_for_output(rows))
    with pytest.raises(TypeError, match="needs the folder's Arrow schema"):
        WriteAllShards({str(tmp_path / "x"): (1, None)})
