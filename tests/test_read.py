"""The reader: line numbers, blank lines, fast and slow CSV paths, JSONL, Parquet."""

from __future__ import annotations

import io

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.read import (ReaderSpec, ReadInputs, iter_line_blocks, parse_csv_block, parse_jsonl_block,
                             parse_header, split_header)

CSV = ReaderSpec(format="csv", header=True, na_values=("", "?"))
NAMES = ["a", "b", "c"]


def test_fast_path_keeps_line_numbers_and_records():
    block = b"1,x,2.5\n\n3,y,4\r\n5,?,6"
    batch, bad = parse_csv_block(block, 10, NAMES, ["a", "b"], CSV)
    assert not bad.rows
    assert batch.column("_row").to_pylist() == [10, 12, 13]          # the blank line 11 is not a record
    assert batch.column("a").to_pylist() == ["1", "3", "5"]
    assert batch.column("b").to_pylist() == ["x", "y", None]          # "?" is a missing value
    assert batch.column("_record").to_pylist()[0] == b"1,x,2.5"


def test_lines_and_records_by_numpy_are_split_by_bytes():
    """`block_lines` and `lines_array` against `block.split(b"\\n")` and a list of bytes: blank
    lines (empty, a lone "\\r"), CRLF endings, no final newline, a block of nothing."""
    from transforms.read.records import block_lines, lines_array

    for block in (b"", b"\n", b"\r", b"\n\n\r\n", b"a", b"a\n", b"1,x\r\n\r\n\n2,y\r\n\r", b"\r\n3,z\n \n\r\r\n4",
                  "é,ü\n\nx".encode()):
        lines = block.split(b"\n")
        want_blank = [line in (b"", b"\r") for line in lines]
        starts, ends, blank = block_lines(block)
        assert [block[a:b] for a, b in zip(starts, ends)] == lines, block
        assert blank.tolist() == want_blank, block
        got = lines_array(block, starts, ends, blank)
        want = pa.array([line for line, b in zip(lines, want_blank) if not b], pa.binary())
        got.validate(full=True)
        assert got.equals(want), block


def test_trim_is_skipped_only_where_it_changes_nothing():
    """`_trimmed` gives `utf8_trim_whitespace`'s values whatever the text (ASCII and Unicode
    spaces at either end, control characters, nulls, empty strings, a slice), and returns its
    input unchanged only for printable ASCII with nothing to trim."""
    import pyarrow.compute as pc

    from transforms.read.records import _trimmed

    cases = {
        "clean": (["Private", "HS-grad", "", None, "a b"], True),
        "lead": ([" Private", "x"], False), "trail": (["x", "y\t"], False),
        "unicode space": (["x\u3000", "\u00a0y"], False), "unicode text": (["é", "ü"], False),
        "control": (["\x1fx"], False), "all null": ([None, None], True), "empty": ([], False),
    }
    for name, (values, untouched) in cases.items():
        arr = pa.array(values, pa.string())
        got = _trimmed(arr)
        assert got.equals(pc.utf8_trim_whitespace(arr)), name
        assert (got is arr) == untouched, name
    sliced = pa.array([" a", "b", "c", " d"], pa.string()).slice(1, 2)
    assert _trimmed(sliced) is sliced and _trimmed(sliced).to_pylist() == ["b", "c"]


def test_broken_lines_go_to_quarantine_with_their_text():
    block = (b"1,x,2\n"
             b"2,y\n"                      # too few fields
             b'3,"z,4\n'                   # unbalanced quote
             b"4,\xff\xfe,5\n"             # invalid UTF-8
             b"5,w,6,7\n"                  # too many fields
             b'6,"q,q",7')
    batch, bad = parse_csv_block(block, 2, NAMES, NAMES, CSV)
    assert batch.column("_row").to_pylist() == [2, 7]
    assert batch.column("b").to_pylist() == ["x", "q,q"]
    assert dict(zip(bad.rows, bad.reasons)) == {3: "csv_field_count", 4: "csv_malformed", 5: "invalid_utf8",
                                                6: "csv_field_count"}
    q = bad.to_batch("file.csv")
    texts = dict(zip(q.column("_row").to_pylist(), q.column("record").to_pylist()))
    assert texts[4] == '3,"z,4'
    assert texts[5] == "4,\\xff\\xfe,5"                           # escaped, never lost
    assert set(q.column("stage").to_pylist()) == {"ingest"}


def test_trim_then_na_values():
    spec = ReaderSpec(format="csv", header=False, na_values=("?",), trim=True)
    batch, _ = parse_csv_block(b"1, ?, x\n2, b ,?", 1, NAMES, NAMES, spec)
    assert batch.column("b").to_pylist() == [None, "b"]
    assert batch.column("c").to_pylist() == ["x", None]


def test_blocks_cover_every_line_once():
    text = b"".join(b"line%d\n" % i for i in range(1, 1001)) + b"tail-without-newline"
    seen = []
    for block, first in iter_line_blocks(io.BytesIO(text), block_bytes=97):
        for offset, line in enumerate(block.split(b"\n")):
            seen.append((first + offset, line))
    assert seen[0] == (1, b"line1") and seen[999] == (1000, b"line1000") and seen[-1] == (1001, b"tail-without-newline")
    assert [n for n, _ in seen] == list(range(1, 1002))


def test_header_split_and_bom():
    blocks = iter_line_blocks(io.BytesIO(b"\xef\xbb\xbfa,b\n1,2\n3,4\n"), block_bytes=4)
    head, rest = split_header(blocks)
    assert parse_header(head, CSV) == ["a", "b"]
    assert [(b, n) for b, n in rest][0][1] == 2


def test_jsonl_faults_and_types():
    block = b'{"a": 1, "b": "x"}\nnot json\n[1,2]\n{"a": true}\n{"a": 2.5, "b": null}'
    batch, bad = parse_jsonl_block(block, 1, ["a", "b"], ReaderSpec(format="jsonl", na_values=()))
    assert batch.column("a").to_pylist() == ["1", "true", "2.5"]
    assert batch.column("b").to_pylist() == ["x", None, None]
    assert dict(zip(bad.rows, bad.reasons)) == {2: "json_invalid", 3: "json_not_object"}


def test_read_inputs_pipeline_all_formats(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"a,b,c\n1,x,2\n2,y\n3,z,4\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"a": 5, "b": "v", "c": 1}\n{oops\n')
    pq.write_table(pa.table({"a": [7, 8], "b": ["p", "q"], "c": [1.5, None], "extra": [0, 0]}),
                   str(tmp_path / "c.parquet"))
    specs = [CSV, ReaderSpec(format="jsonl"), ReaderSpec(format="parquet")]
    files = [(0, str(tmp_path / "a.csv")), (1, str(tmp_path / "b.jsonl")), (2, str(tmp_path / "c.parquet"))]
    with TestPipeline() as p:
        out = p | beam.Create(files) | ReadInputs(specs, ["a", "b"])
        rows = out.rows | "R" >> beam.FlatMap(
            lambda b: [(s.rsplit("/", 1)[1], r, str(a)) for s, r, a in
                       zip(b.column("_source").to_pylist(), b.column("_row").to_pylist(), b.column("a").to_pylist())])
        faults = out.quarantine | "Q" >> beam.FlatMap(
            lambda b: list(zip(b.column("_row").to_pylist(), b.column("reason").to_pylist())))
        assert_that(rows, equal_to([("a.csv", 2, "1"), ("a.csv", 4, "3"), ("b.jsonl", 1, "5"),
                                    ("c.parquet", 1, "7"), ("c.parquet", 2, "8")]), label="rows")
        assert_that(faults, equal_to([(3, "csv_field_count"), (2, "json_invalid")]), label="faults")


def test_empty_files_give_zero_rows(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header_only.csv").write_bytes(b"a,b,c\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    files = [(0, str(tmp_path / "empty.csv")), (0, str(tmp_path / "header_only.csv")), (1, str(tmp_path / "empty.jsonl"))]
    with TestPipeline() as p:
        out = p | beam.Create(files) | ReadInputs([CSV, ReaderSpec(format="jsonl")], ["a"])
        n = (out.rows, out.quarantine) | beam.Flatten() | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
        assert_that(n, equal_to([0]))


def test_counters_per_stage_and_reason(tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.clean import ValidateRows, ValidateSpec

    (tmp_path / "a.csv").write_bytes(b"a,b,c\n1,x,2\nbroken\n2,,3\nq,y,4\n")
    p = TestPipeline()
    read = p | beam.Create([(0, str(tmp_path / "a.csv"))]) | ReadInputs([CSV], ["a", "b"])
    read.rows | ValidateRows(ValidateSpec(column_types={"a": "int", "b": "string"}, label="b", id_column=None))
    result = p.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed for m in
                result.metrics().query(MetricsFilter().with_namespace("dataprep"))["counters"]}
    assert counters["ingest.quarantined.csv_field_count"] == 1
    assert counters["clean.quarantined.missing_label"] == 1
    assert counters["clean.quarantined.type:a"] == 1
    assert counters["ingest.rows"] == 3 and counters["clean.rows"] == 1


def _ranged_text() -> bytes:
    """A CSV with a BOM, blank lines, quoted newlines and doubled quotes, a broken record and
    a bad UTF-8 byte: every kind of record boundary a cut must respect."""
    lines = [b"\xef\xbb\xbfa,b,c"]
    for i in range(400):
        if i % 37 == 5:
            lines.append(b'%d,"two\nlines, ""quoted""",%d' % (i, i))
        elif i % 53 == 7:
            lines.append(b"")
        elif i % 71 == 9:
            lines.append(b"%d,\xff,broken,extra" % i)
        else:
            lines.append(b"%d,v%d,%d" % (i, i, i * 3))
    return b"\n".join(lines) + b"\n"


def test_ranges_cover_the_file_at_record_boundaries():
    from transforms.read import plan_ranges

    text = _ranged_text()
    ranges = list(plan_ranges(io.BytesIO(text), 0, "f.csv", CSV, range_bytes=300, block_bytes=64))
    assert len(ranges) > 5 and ranges[0].start == 0 and ranges[-1].end == -1
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))              # contiguous, no gap
    assert ranges[0].names is None and {r.names for r in ranges[1:]} == {("a", "b", "c")}
    for r in ranges[1:]:
        before = text[:r.start]
        assert before.endswith(b"\n") and before.count(b'"') % 2 == 0               # never inside quotes
        assert r.first_line == before.count(b"\n") + 1                              # its line number


def test_reading_in_ranges_gives_the_records_of_reading_whole(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(_ranged_text())
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_bytes(b"".join(b'{"a": %d, "b": "x%d"}\n' % (i, i) if i % 50 else b"{bad\n" for i in range(300)))
    specs = [CSV, ReaderSpec(format="jsonl")]
    files = [(0, str(path)), (1, str(jsonl))]

    def records(range_bytes):
        # the two DoFns of ReadInputs, called as a runner would: plan the ranges, read each
        from apache_beam import pvalue

        from transforms.read.stage import _PlanRangesFn, _ReadFileFn

        plan, read = _PlanRangesFn(specs, range_bytes, 64), _ReadFileFn(specs, ["a", "b"], 64)
        parts = [r for f in files for r in plan.process(f)]
        rows, bad = [], []
        for part in parts:
            for out in read.process(part):
                if isinstance(out, pvalue.TaggedOutput):
                    b = out.value
                    bad += zip(b.column("_source").to_pylist(), b.column("_row").to_pylist(),
                               b.column("reason").to_pylist(), b.column("record").to_pylist())
                else:
                    rows += zip(out.column("_source").to_pylist(), out.column("_row").to_pylist(),
                                out.column("a").to_pylist(), out.column("b").to_pylist(),
                                out.column("_record").to_pylist())
        return len(parts), sorted(rows), sorted(bad)

    n_whole, whole_rows, whole_bad = records(1 << 30)
    n_split, split_rows, split_bad = records(256)
    assert n_whole == 2 and n_split > 10
    assert len(whole_rows) == 400 - 8 - 6 + 300 - 6 and len(whole_bad) == 6 + 6
    assert (split_rows, split_bad) == (whole_rows, whole_bad)
    quoted = [r for r in whole_rows if r[0].endswith("a.csv") and r[2] == "5"]
    assert quoted[0][1] == 7 and quoted[0][3] == 'two\nlines, "quoted"'         # _row: the line it starts on


def test_count_byte_is_bytes_count():
    """The vectorised count of the block scans against bytes.count: empty data, an end of 0,
    of half the data and of all of it, newlines and quotes."""
    import random

    from transforms.read.blocks import count_byte

    rng = random.Random(5)
    samples = [b"", b"a", b"\n", b'a\n"b"\n\n', bytes(rng.choice(b'ab\n"\r') for _ in range(10_000))]
    for data in samples:
        for end in (None, 0, len(data) // 2, len(data)):
            for byte in (b"\n", b'"'):
                assert count_byte(data, byte, end) == data.count(byte, 0, len(data) if end is None else end)


# ---- issue 35: compressed inputs, encodings, NUL bytes ---------------------------------------------------

def _compressors():
    import bz2
    import gzip
    import lzma
    import zlib

    import zstandard

    return {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda d: zstandard.ZstdCompressor().compress(d), ".deflate": zlib.compress}


def _rows_text(n: int) -> bytes:
    return b"a,b\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(n))


def test_every_compression_reads_whole_and_a_truncated_or_corrupt_stream_is_an_error(tmp_path):
    """A `.gz`/`.bz2`/`.xz`/`.zst`/`.deflate` file reads as its decompressed bytes; cut in half
    it raises `CorruptInput` naming the file (Beam's CompressedFile returned the half as a
    whole file); a flipped byte in a gzip's body or its CRC is an error too."""
    import pytest

    from transforms.read.compressed import CorruptInput, open_input

    data = _rows_text(5000)
    for suffix, compress in _compressors().items():
        packed = compress(data)
        whole, cut = tmp_path / f"whole.csv{suffix}", tmp_path / f"cut.csv{suffix}"
        whole.write_bytes(packed)
        cut.write_bytes(packed[:len(packed) // 2])
        with open_input(str(whole)) as f:
            assert b"".join(iter(lambda: f.read(1000), b"")) == data, suffix
        with pytest.raises(CorruptInput, match=rf"^{cut}: .* truncated or corrupt"):
            with open_input(str(cut), str(cut)) as f:
                while f.read(1 << 16):
                    pass
    import gzip

    packed = bytearray(gzip.compress(data))
    packed[-6] ^= 0xFF                                   # the CRC-32 of the trailer
    bad = tmp_path / "crc.csv.gz"
    bad.write_bytes(bytes(packed))
    with pytest.raises(CorruptInput, match="is corrupt"):
        with open_input(str(bad)) as f:
            f.read(-1)


def test_concatenated_gzip_members_padding_and_empty_files_read_as_gzip_reads_them(tmp_path):
    import gzip

    from transforms.read.compressed import open_input

    cases = {"members": gzip.compress(b"a,b\n1,x\n") + gzip.compress(b"2,y\n"),
             "padded": gzip.compress(b"a,b\n1,x\n") + b"\0" * 512, "empty": b""}
    for name, packed in cases.items():
        path = tmp_path / f"{name}.csv.gz"
        path.write_bytes(packed)
        with open_input(str(path)) as f:
            assert f.read(-1) == (gzip.decompress(packed) if packed else b""), name


def test_the_reader_fails_on_a_truncated_gzip_instead_of_reading_a_short_file(tmp_path):
    """The issue's reproduction, scaled down: half of a gzip of a few thousand rows, read by
    `ReadInputs` as the job does: the pipeline fails naming the file (before the fix: the
    first half as rows and the cut record quarantined as csv_field_count)."""
    import gzip

    import pytest

    data = _rows_text(4000)
    for suffix, spec in ((".csv.gz", ReaderSpec("csv")), (".jsonl.gz", ReaderSpec("jsonl"))):
        if suffix == ".jsonl.gz":
            data = b"".join(b'{"a": "%d", "b": "row %d"}\n' % (i, i) for i in range(4000))
        packed = gzip.compress(data)
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(packed[:len(packed) // 2])
        with pytest.raises(Exception, match=rf"{path}: the gzip data ends before its end-of-stream marker"):
            with TestPipeline() as p:
                p | beam.Create([(0, str(path))]) | ReadInputs([spec], ["a", "b"])


def test_a_bom_decides_the_encoding_else_the_configured_one():
    from transforms.read.encoding import canonical, text_encoding

    assert text_encoding(b"\xef\xbb\xbfa,b", None) == ("utf-8", 0)         # skipped by line_blocks_at
    assert text_encoding(b"\xff\xfea\x00", None) == ("utf-16-le", 2)
    assert text_encoding(b"\xfe\xff\x00a", "latin-1") == ("utf-16-be", 2)   # a BOM wins
    assert text_encoding(b"\xff\xfe\x00\x00", None) == ("utf-32-le", 4)
    assert text_encoding(b"a,b\n", "latin-1") == ("iso8859-1", 0)
    assert text_encoding(b"a,b\n", None) == ("utf-8", 0)
    assert canonical("UTF8") == canonical("utf-8-sig") == "utf-8"


def test_transcoded_files_read_as_their_text_in_utf8_blocks():
    """Latin-1, cp1252 and UTF-16 LE/BE (BOM) text, read in small blocks: the blocks are the
    UTF-8 text with its line numbers, whatever the cuts between source bytes (a UTF-16 code
    unit, a surrogate pair cut in two); a UTF-8 file (with or without its BOM) is not transcoded."""
    import codecs

    from transforms.read.encoding import as_utf8

    text = "id,city\n" + "".join(f"{i},{c}\n" for i, c in enumerate(["Zürich", "Genève", "Köln €", "😀 x"] * 50))
    ascii_ish = text.replace("€", "E").replace("😀", ":)")
    cases = [  # (configured encoding, file bytes, its text, transcoded)
        ("latin-1", ascii_ish.encode("latin-1"), ascii_ish, True),
        ("cp1252", text.replace("😀", ":)").encode("cp1252"), text.replace("😀", ":)"), True),
        (None, text.encode("utf-16"), text, True),
        (None, codecs.BOM_UTF16_BE + text.encode("utf-16-be"), text, True),
        ("latin-1", codecs.BOM_UTF16_LE + text.encode("utf-16-le"), text, True),   # the BOM wins
        (None, codecs.BOM_UTF8 + text.encode(), text, False),
        ("utf-8", text.encode(), text, False),
    ]
    for configured, raw, want, transcoded in cases:
        for block_bytes in (3, 7, 64):
            stream, was = as_utf8(io.BytesIO(raw), configured)
            blocks = list(iter_line_blocks(stream, block_bytes))
            assert "\n".join(b.decode() for b, _ in blocks) + "\n" == want, (configured, raw[:4], block_bytes)
            assert was == transcoded
            assert [n for _, n in blocks] == [1 + sum(b.count(b"\n") + 1 for b, _ in blocks[:i])
                                              for i in range(len(blocks))]


def test_bytes_not_valid_in_the_encoding_make_their_record_invalid():
    """A lone UTF-16 surrogate becomes bytes that are not UTF-8, so its record is quarantined
    as invalid_utf8 (and the records around it are read)."""
    from transforms.read.encoding import as_utf8

    raw = b"\xff\xfe" + "a,b\n1,x\n".encode("utf-16-le") + b"2\x00,\x00\x00\xd8\n\x00" + "3,z\n".encode("utf-16-le")
    stream, _ = as_utf8(io.BytesIO(raw), None)
    head, blocks = split_header(iter_line_blocks(stream, 64))
    batch, bad = parse_csv_block(b"\n".join(b for b, _ in blocks), 2, ["a", "b"], ["a", "b"], ReaderSpec("csv"))
    assert batch.column("a").to_pylist() == ["1", "3"] and (bad.rows, bad.reasons) == ([3], ["invalid_utf8"])


def test_a_nul_byte_quarantines_its_record_and_no_other():
    """A NUL in a field (pyarrow keeps it: it reached an example_id) quarantines the record,
    `nul_byte`, with its line number; a quoted record spanning lines goes whole, a stray
    quote's lines do not; the records after keep their line numbers."""
    spec = ReaderSpec("csv", header=False)
    block = b'1,a\x00b,x\n2,fine,y\n3,"multi\nline\x00",z\n4,after,w\n5,"stray\x00,v\n6,ok,u'
    batch, bad = parse_csv_block(block, 10, NAMES, NAMES, spec)
    assert batch.column("a").to_pylist() == ["2", "4", "6"] and batch.column("_row").to_pylist() == [11, 14, 16]
    assert list(zip(bad.rows, bad.reasons)) == [(10, "nul_byte"), (12, "nul_byte"), (15, "nul_byte")]
    q = bad.to_batch("f.csv").to_pylist()
    assert [r["record"] for r in q] == ["1,a\\x00b,x", '3,"multi\nline\\x00",z', '5,"stray\\x00,v']
    from transforms.read import unescape_record

    assert unescape_record(q[0]["record"]) == b"1,a\x00b,x"


def test_a_nul_in_a_json_line_raw_or_escaped_is_quarantined():
    block = b'{"a": "1", "b": "x"}\n{"a": "2\x00", "b": "y"}\n{"a": "3\\u0000", "b": "z"}\n{"a": "\\\\u0000", "b": "w"}'
    batch, bad = parse_jsonl_block(block, 1, ["a", "b"], ReaderSpec("jsonl"))
    assert batch.column("a").to_pylist() == ["1", "\\u0000"]
    assert list(zip(bad.rows, bad.reasons)) == [(2, "nul_byte"), (3, "nul_byte")]


def test_a_utf16_file_is_not_cut_into_ranges(tmp_path):
    """Byte ranges are offsets of the file's bytes; a transcoded file is read whole (as a
    compressed one), and gives the rows of its text."""
    from transforms.read.stage import _PlanRangesFn

    text = "a,b\n" + "".join(f"{i},Zürich {i}\n" for i in range(500))
    path = tmp_path / "u16.csv"
    path.write_bytes(text.encode("utf-16"))
    latin = tmp_path / "l1.csv"
    latin.write_bytes(text.encode("latin-1"))
    plain = tmp_path / "u8.csv"
    plain.write_bytes(text.encode())
    spec = ReaderSpec("csv")
    assert len(list(_PlanRangesFn([spec], 300, 64).process((0, str(path))))) == 1
    assert len(list(_PlanRangesFn([ReaderSpec("csv", encoding="latin-1")], 300, 64).process((0, str(latin))))) == 1
    assert len(list(_PlanRangesFn([spec], 300, 64).process((0, str(plain))))) > 5
    with TestPipeline() as p:
        out = (p | beam.Create([(0, str(path)), (1, str(latin))])
               | ReadInputs([spec, ReaderSpec("csv", encoding="latin-1")], ["a", "b"], block_bytes=64, range_bytes=300))
        rows = out.rows | beam.FlatMap(lambda b: zip(b.column("b").to_pylist(), b.column("_row").to_pylist()))
        assert_that(rows, equal_to([(f"Zürich {i}", i + 2) for i in range(500)] * 2))
