"""The record-batch helpers every stage shares (transforms/batches.py): the row hash, the
hash-bucket keying of every shuffle, quarantine rows, set_column, the ordered thread pool."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from transforms.batches import (QUARANTINE_SCHEMA, OrderedThreadPool, hash_columns, key_by_bucket, quarantine_batch,
                                set_column)


def test_hash_columns_equal_values_equal_hashes_whatever_the_layout():
    """The shuffle and split hash depends on the values only: not on slicing, chunking,
    dictionary encoding or the batch a row sits in; -0.0 is 0.0, NaN is NaN, null is null."""
    s = pa.array(["", "a", "a\x00", "ab", "abcdefgh", "abcdefghi", None, "é" * 9, "abcdefgh"])
    f = pa.array([0.0, -0.0, float("nan"), None, 1.5, 1.5, 2.0, float("nan"), 3.0])
    i = pa.array([1, 2, None, 4, 5, 5, 7, 8, 9], pa.int64())
    table = pa.table({"s": s, "f": f, "i": i})
    h = hash_columns(table, ["s", "f", "i"], seed=7)
    for start in range(1, 9):                     # a slice has a buffer offset
        assert (hash_columns(table.slice(start), ["s", "f", "i"], seed=7) == h[start:]).all()
    chunked = pa.table({"s": pa.chunked_array([s[:4], s[4:]]), "f": f, "i": i})
    assert (hash_columns(chunked, ["s", "f", "i"], seed=7) == h).all()
    dictionary = pa.table({"s": pc.dictionary_encode(s), "f": f, "i": i})
    assert (hash_columns(dictionary, ["s", "f", "i"], seed=7) == h).all()
    hs = hash_columns(table, ["s"])
    assert hs[4] == hs[8] and len(set(hs[:8].tolist())) == 8    # equal strings only: prefixes and NUL differ
    hf = hash_columns(table, ["f"])
    assert hf[0] == hf[1] and hf[2] == hf[7] and len(set(hf.tolist())) == 6
    assert not (hash_columns(table, ["s"], seed=8) == hs).any()   # the seed changes every hash
    assert hash_columns(table, ["s", "i"]).tolist() != hash_columns(table, ["i", "s"]).tolist()


@pytest.mark.parametrize("kind", [pa.string(), pa.binary(), pa.large_string()])
def test_repeated_strings_are_hashed_once_each_with_the_same_hashes(kind, monkeypatch):
    """Long arrays of few distinct strings take the dictionary path (each value hashed once);
    the hashes equal the value-by-value ones, whatever the nulls, the slice or the type."""
    import numpy as np

    from transforms import batches

    rng = np.random.default_rng(3)
    values = ["", "Private", "Self-emp-not-inc", "a\x00", "é" * 9, "/data/adult-1000000.csv"]
    picks = rng.integers(0, len(values) + 1, 20_000)
    few = pa.array([values[k] if k < len(values) else None for k in picks], kind)
    many = pa.array([f"row-{k}" for k in range(20_000)], kind)
    paths = []
    real = batches._hash_bytes
    monkeypatch.setattr(batches, "_hash_bytes", lambda a: paths.append(len(a)) or real(a))
    for arr in (few, few.slice(777, 15_000), many):
        encoded = batches._few_distinct(arr)
        assert (encoded is not None) == (arr is not many)
        paths.clear()
        got = hash_columns(pa.table({"s": arr}), ["s"], seed=5)
        assert paths == ([len(encoded.dictionary)] if encoded is not None else [len(arr)])
        monkeypatch.setattr(batches, "_SAMPLE", 10 ** 9)        # the value-by-value path, as the reference
        want = hash_columns(pa.table({"s": arr}), ["s"], seed=5)
        monkeypatch.setattr(batches, "_SAMPLE", 1024)
        assert (got == want).all()
        short = [hash_columns(pa.table({"s": arr.slice(k, 1)}), ["s"], seed=5)[0] for k in (0, 1, 2, 4000)]
        assert [got[k] for k in (0, 1, 2, 4000)] == short             # one value alone: the same hash
    assert batches._few_distinct(pa.array([None] * 5000, kind)) is None

def test_ordered_thread_pool_keeps_order_bounds_the_work_in_flight_and_raises():
    """The helper behind the threaded dedup, write and parse: results in submission order,
    one element ahead at most, a worker's exception raised in the caller."""
    import time

    pool, got = OrderedThreadPool(), []
    for i in range(5):
        got += pool.submit(lambda x: (time.sleep(0.002 * (5 - x)), x)[1], i)
    assert got + pool.finish() == [0, 1, 2, 3, 4]
    pool = OrderedThreadPool()
    assert pool.submit(lambda: 1) == [] and pool.submit(lambda: 2) == [1] and pool.finish() == [2]
    pool = OrderedThreadPool()
    pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pool.finish()


def test_key_by_bucket_puts_equal_keys_in_one_bucket_whatever_the_batch():
    keys = pa.array(["a", "b", "a", None, "c", None, "b"])
    batch = pa.RecordBatch.from_arrays([keys, pa.array(range(7))], names=["k", "i"])
    where = {}
    for start, stop in ((0, 3), (3, 7), (0, 7)):
        part = batch.slice(start, stop - start)
        for bucket, sub in key_by_bucket(part, [part.column("k")], 4):
            assert 0 <= bucket < 4
            for k in sub.column("k").to_pylist():
                assert where.setdefault(k, bucket) == bucket
    rows = sorted(i for _, sub in key_by_bucket(batch, [batch.column("k")], 3) for i in sub.column("i").to_pylist())
    assert rows == list(range(7))                                     # every row in exactly one bucket


def test_split_by_key_against_python_and_parts_carry_only_their_rows():
    """Each key's rows, in input order (a plain-Python grouping as the reference); a part is a
    slice of one reordered copy, and what it costs to ship (IPC bytes, `nbytes`) is its own rows'."""
    import numpy as np

    from transforms.batches import IPC_OPTIONS, split_by_key

    rng = np.random.default_rng(11)
    n = 5000
    batch = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n)), pa.array([f"text-{i}" * (i % 4) for i in range(n)]),
         pa.array([None if i % 7 == 0 else i * 0.5 for i in range(n)])], names=["i", "s", "f"])
    for keys in (rng.integers(0, 64, n), np.zeros(n, np.int64), np.arange(n)[::-1].copy(), rng.integers(5, 7, n)):
        want = {}
        for row, k in enumerate(keys.tolist()):
            want.setdefault(k, []).append(row)
        got = {k: part.column("i").to_pylist() for k, part in split_by_key(batch, keys)}
        assert got == want
    for k, part in split_by_key(batch, rng.integers(0, 8, n)):
        copy = pa.RecordBatch.from_pylist(part.to_pylist(), schema=batch.schema)
        assert part.equals(copy)
        sizes = []
        for b in (part, copy):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, b.schema, options=IPC_OPTIONS) as w:
                w.write_batch(b)
            sizes.append(sink.getvalue().size)
        assert sizes[0] <= 1.05 * sizes[1] + 512 and part.nbytes <= 1.05 * copy.nbytes + 512, (k, sizes)
    assert list(split_by_key(batch.slice(0, 0), np.zeros(0, np.int64))) == []


def test_quarantine_batch_broadcasts_one_reason_and_source():
    q = quarantine_batch(pa.array(["x", "y"]), "bad", "clean", "f.csv", [3, 4])
    assert q.schema == QUARANTINE_SCHEMA
    prefix = hashlib.sha1(b"f.csv").hexdigest()[:12]    # no id given: the default one of source and row
    assert q.to_pydict() == {"record": ["x", "y"], "reason": ["bad", "bad"], "stage": ["clean", "clean"],
                             "_source": ["f.csv", "f.csv"], "_row": [3, 4],
                             "example_id": [f"{prefix}-3", f"{prefix}-4"]}
    with_ids = quarantine_batch(pa.array(["x", "y"]), "bad", "clean", "f.csv", [3, 4], pa.array(["a", None]))
    assert with_ids.column("example_id").to_pylist() == ["a", f"{prefix}-4"]   # a null id: the default
    per_row = quarantine_batch(pa.chunked_array([["z"]]), pa.array(["r1"]), "labels",
                               pa.chunked_array([["g.csv"]]), pa.chunked_array([pa.array([9], pa.int64())]))
    assert per_row.to_pydict()["reason"] == ["r1"] and per_row.to_pydict()["_row"] == [9]
    empty = quarantine_batch(pa.array([], pa.string()), [], "labels", pa.chunked_array([], pa.string()),
                             pa.chunked_array([], pa.int64()))
    assert empty.num_rows == 0 and empty.schema == QUARANTINE_SCHEMA


def test_set_column_replaces_or_appends_without_touching_the_input():
    batch = pa.RecordBatch.from_arrays([pa.array([1, 2])], names=["a"])
    replaced = set_column(batch, "a", pa.array(["x", "y"]))
    appended = set_column(batch, "b", pa.array([0.5, 1.5]))
    assert replaced.schema.names == ["a"] and replaced.column(0).to_pylist() == ["x", "y"]
    assert appended.schema.names == ["a", "b"] and batch.schema.names == ["a"]
    table = set_column(pa.table({"a": [1]}), "b", pa.array([True]))
    assert isinstance(table, pa.Table) and table.column("b").to_pylist() == [True]
