"""tf.Examples and TFRecord files (transforms/examples.py), against independent readers and
encoders: protobuf's tf.train.Example, tfx_bsl's encoder, Beam's TFRecord framing, TF's reader."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from transforms.examples import (UnsupportedColumn, encode_examples, read_tfrecord_gzip, tfrecord_frames, tfx_column,
                                 tfx_record_batch, write_tfrecord_gzip)


def _batch() -> pa.RecordBatch:
    """Every kind of column a dataprep output has, with nulls, empty lists, big and negative
    integers, a float past float32's range, long and empty strings, non-ASCII names."""
    return pa.RecordBatch.from_pydict({
        "s": pa.array(["a", None, "ccc", "", "é" * 200]),
        "i": pa.array([1, -2, None, 300, 2 ** 62]),
        "f": pa.array([1.5, None, 2.0, -1e300, 0.1]),
        "bo": pa.array([True, False, None, True, False]),
        "l": pa.array([[1.0, 2.0], [], None, [3.0], [0.25] * 40], pa.list_(pa.float32())),
        "li": pa.array([[1, 2 ** 40], [], None, [-1], list(range(200))], pa.list_(pa.int64())),
        "lb": pa.array([[b"x", b""], [], None, [b"y" * 300], [b"z"]], pa.list_(pa.binary())),
        "ün": pa.array(["é", "b", "c", "d", "e"]),
        "A": pa.array([1, 2, 3, 4, 5], pa.int32()),
        "label": pa.array(["none", "scratch", None, "none", "x"]),
    })


def _example(data: bytes):
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(data)


def _without_empty_features(example):
    """tfx_bsl writes a null as a Feature with no kind; dataprep leaves the feature out. TFX's
    decoder reads both as missing: compare them as that."""
    for key in [k for k, v in example.features.feature.items() if v.WhichOneof("kind") is None]:
        del example.features.feature[key]
    return example


def test_tfx_columns_hold_what_a_tf_example_holds():
    batch = tfx_record_batch(_batch())
    assert {n: str(t) for n, t in zip(batch.schema.names, batch.schema.types)} == {
        "s": "list<item: binary>", "i": "list<item: int64>", "f": "list<item: float>", "bo": "list<item: int64>",
        "l": "list<item: float>", "li": "list<item: int64>", "lb": "list<item: binary>", "ün": "list<item: binary>",
        "A": "list<item: int64>", "label": "list<item: binary>"}
    assert batch.column("i").to_pylist() == [[1], [-2], None, [300], [2 ** 62]]      # a null is a null list
    assert batch.column("bo").to_pylist() == [[1], [0], None, [1], [0]]
    assert batch.column("f").to_pylist()[3] == [-np.inf]                           # float32 has no -1e300
    assert batch.column("s").to_pylist()[3] == [b""]                                 # an empty string is a value
    with pytest.raises(UnsupportedColumn, match="'t'"):
        tfx_column(pa.array([1], pa.timestamp("s")), "t")
    with pytest.raises(UnsupportedColumn, match="nested lists"):
        tfx_column(pa.array([[[1]]]), "n")


def test_examples_equal_tfx_bsls_and_read_back_as_the_rows():
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    batch = _batch()
    ours = encode_examples(batch).to_pylist()
    reference = RecordBatchToExamplesEncoder().encode(tfx_record_batch(batch))
    assert len(ours) == len(reference) == batch.num_rows
    for mine, theirs in zip(ours, reference):
        assert _example(mine) == _without_empty_features(_example(theirs))
    row = _example(ours[0]).features.feature
    assert list(row["li"].int64_list.value) == [1, 2 ** 40] and list(row["s"].bytes_list.value) == [b"a"]
    assert row["A"].int64_list.value == [1] and row["ün"].bytes_list.value == ["é".encode()]
    empty = _example(ours[1]).features.feature
    assert empty["l"].WhichOneof("kind") == "float_list" and len(empty["l"].float_list.value) == 0
    assert "f" not in empty and "s" not in empty                                      # nulls are missing
    assert set(_example(ours[2]).features.feature) == {"s", "f", "ün", "A"}


def test_feature_order_is_by_name_and_the_bytes_are_the_same_in_every_process():
    """tfx_bsl's encoder orders a row's features by a per-process seeded hash (three processes
    gave other digests in every process); ours gives one."""
    code = ("import hashlib, pyarrow as pa, transforms; from transforms.examples import encode_examples; "
            "from tests.test_examples import _batch; "
            "print(hashlib.sha256(b''.join(encode_examples(_batch()).to_pylist())).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(2)}
    assert len(digests) == 1
    for record in encode_examples(_batch()).to_pylist():
        keys = _feature_keys(record)
        assert keys == sorted(keys, key=str.encode) and len(keys) >= 4


def _varint(data: bytes, i: int):
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _feature_keys(record: bytes):
    """The feature names of a serialized Example, in the order its map entries were written."""
    _, i = _varint(record, 1)                  # Example.features: tag, length
    keys = []
    while i < len(record):
        length, start = _varint(record, i + 1)     # Features.feature entry: tag, length
        entry = record[start:start + length]
        key_length, key_start = _varint(entry, 1)
        keys.append(entry[key_start:key_start + key_length].decode())
        i = start + length
    return keys


def test_tfrecord_framing_is_beams_and_tensorflow_reads_the_gzip_file(tmp_path):
    from apache_beam.io.tfrecordio import _TFRecordUtil

    records = encode_examples(_batch())
    expected = io.BytesIO()
    for r in records.to_pylist():
        _TFRecordUtil.write_record(expected, r)
    assert tfrecord_frames(records).to_pybytes() == expected.getvalue()
    assert tfrecord_frames(records.slice(2)).to_pybytes() == expected.getvalue()[sum(len(r) + 16 for r in
                                                                                    records.to_pylist()[:2]):]

    import tensorflow as tf

    table = pa.Table.from_batches([_batch()] * 3)
    path = str(tmp_path / "part-00000-of-00001.tfrecord.gz")
    assert write_tfrecord_gzip(table, path, chunk_rows=4) == 15
    assert (tmp_path / "part-00000-of-00001.tfrecord.gz").read_bytes()[:2] == b"\x1f\x8b"   # one gzip stream
    read = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]   # CRCs checked
    assert read == records.to_pylist() * 3 == read_tfrecord_gzip(path)
    empty = str(tmp_path / "empty.tfrecord.gz")
    assert write_tfrecord_gzip(table.schema.empty_table(), empty) == 0
    assert list(tf.data.TFRecordDataset(empty, compression_type="GZIP")) == []
