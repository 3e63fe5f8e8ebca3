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
