"""Property: whatever lines come in, every row ends in exactly one place and quarantined
rows keep their original text (reversibly escaped when it is not UTF-8)."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import HealthCheck, given, settings, strategies as st

from transforms.batches import SOURCE
from transforms.clean import DedupSpec, RuleSpec, ValidateSpec, dedup_table, validate_batch
from transforms.read import ReaderSpec, parse_csv_block, parse_jsonl_block, unescape_record

NAMES = ["id", "x", "y"]
SPEC = ValidateSpec(column_types={"id": "string", "x": "float", "y": "string"}, label="y", id_column="id",
                    rules=(RuleSpec(column="x", min=0),))
DEDUP = DedupSpec(keys=("id",), label="y")

valid_csv = st.builds(lambda i, x, y: f"k{i},{x},{y}", st.integers(0, 30),
                      st.one_of(st.floats(-10, 10, allow_nan=False).map(lambda v: f"{v:.2f}"), st.just("oops"),
                                st.just("")),
                      st.sampled_from(["a", "b", "", '"q,uoted"']))
broken_csv = st.one_of(st.just("only,two"), st.just("a,b,c,d"), st.just('k1,"unclosed,a'),
                       st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\n", b"").decode("latin-1")),
                       st.just("k\\9,\udcff,a"), st.just("   "), st.just(""), st.just("\r"))


def _encode(line: str) -> bytes:
    return line.encode("utf-8", "surrogateescape")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(valid_csv, broken_csv), min_size=1, max_size=60))
def test_csv_rows_end_in_exactly_one_place(lines):
    raw_lines = [_encode(line) for line in lines]
    block = b"\n".join(raw_lines)
    batch, bad = parse_csv_block(block, 1, NAMES, NAMES, ReaderSpec(format="csv", na_values=("",)))
    lines = sum(1 for r in raw_lines if r not in (b"", b"\r"))

    def covered(record: bytes) -> int:      # a record may span lines (a quoted newline)
        return sum(1 for r in record.split(b"\n") if r not in (b"", b"\r"))

    read_q = bad.to_batch("f.csv")
    quarantined = [read_q] if read_q is not None else []
    parsed = 0
    kept = dups = conflicts = clean_q = 0
    if batch is not None:
        parsed = sum(covered(r) for r in batch.column("_record").to_pylist())
        batch = _with_source(batch)
        clean, q = validate_batch(batch, SPEC)
        clean_q = q.num_rows
        quarantined.append(q)
        k, d, c = dedup_table(pa.Table.from_batches([clean]), DEDUP)
        kept, dups, conflicts = k.num_rows, d.num_rows, c.num_rows
        assert batch.num_rows == kept + dups + conflicts + clean_q
    read_lines = 0
    for q in quarantined:
        for row, text, reason in zip(q.column("_row").to_pylist(), q.column("record").to_pylist(),
                                     q.column("reason").to_pylist()):
            raw = unescape_record(text) if reason in ("invalid_utf8", "nul_byte") else text.encode()
            n = raw.count(b"\n") + 1
            original = b"\n".join(raw_lines[row - 1:row - 1 + n])
            assert raw == (original[:-1] if original.endswith(b"\r") else original)
            if q is read_q:
                read_lines += covered(raw)
    assert lines == parsed + read_lines           # every line in exactly one record, every record in one place


json_line = st.one_of(
    st.builds(lambda i, x, y: json.dumps({"id": f"k{i}", "x": x, "y": y}), st.integers(0, 20),
              st.one_of(st.floats(-5, 5, allow_nan=False), st.text(max_size=3), st.none()),
              st.sampled_from(["a", "b", None])),
    st.just("not json"), st.just("[1, 2]"), st.just('{"id": "k1", "x": '), st.just('"just a string"'))


@settings(max_examples=150, deadline=None)
@given(st.lists(json_line, min_size=1, max_size=60))
def test_jsonl_rows_end_in_exactly_one_place(lines):
    block = "\n".join(lines).encode()
    batch, bad = parse_jsonl_block(block, 1, NAMES, ReaderSpec(format="jsonl", na_values=()))
    n_bad = len(bad.rows)
    total = 0
    if batch is not None:
        clean, q = validate_batch(_with_source(batch), SPEC)
        k, d, c = dedup_table(pa.Table.from_batches([clean]), DEDUP)
        total = k.num_rows + d.num_rows + c.num_rows + q.num_rows
        for row, text in zip(q.column("_row").to_pylist(), q.column("record").to_pylist()):
            assert text == lines[row - 1]
    assert len(lines) == total + n_bad
    for row, raw in zip(bad.rows, bad.raw):
        assert raw.decode() == lines[row - 1]


def _with_source(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.append_column(SOURCE, pa.array(["f.csv"] * batch.num_rows)) if hasattr(batch, "append_column") \
        else pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(["f.csv"] * batch.num_rows)],
                                        names=batch.schema.names + [SOURCE])


number_text = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.from_regex(r"[+-]?[0-9]{0,20}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["inf", "-Infinity", "NaN", "nan", "+nan", "1_000", "0x10", "١٢", "1e", ".", "+", "5.", ".5"]),
    st.text(max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(number_text, st.none()), min_size=1, max_size=20), st.sampled_from(["int", "float"]))
def test_arrow_parse_agrees_with_the_regexes(values, kind):
    """coerce's fast path (Arrow's parse of the whole column) gives what the regexes give."""
    import numpy as np
    import pyarrow.compute as pc

    from transforms.clean import validate as clean

    text = pc.utf8_trim_whitespace(pa.array(values, pa.string()))
    fast = clean._strict_cast(text, kind)
    if fast is None:
        return
    ok = pc.fill_null(pc.match_substring_regex(text, clean._INT_RE if kind == "int" else clean._FLOAT_RE), False)
    present = np.asarray(pc.is_valid(text))
    assert np.asarray(ok)[present].all(), values             # nothing Arrow parses is bad for the regex
    slow = pc.cast(pc.replace_substring_regex(text, r"^\+", ""), clean.ARROW_TYPES[kind])
    assert fast.equals(slow) or (kind == "float" and np.allclose(
        np.asarray(fast.to_pandas()), np.asarray(slow.to_pandas()), equal_nan=True, rtol=0, atol=0)), values


padded_number_text = st.tuples(st.sampled_from(["", " ", "\t", "\u00a0", "  "]), number_text,
                               st.sampled_from(["", " ", "\n", "\u2003"])).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(padded_number_text, st.sampled_from(["0X1F", " 0x10 ", "12"]), st.none()), min_size=1,
                max_size=20), st.sampled_from(["int", "float"]), st.integers(0, 3))
def test_coerce_gives_what_the_regexes_give_untrimmed_and_sliced(values, kind, offset):
    """coerce (Arrow's parse tried untrimmed, then trimmed, then the regexes) against the regexes
    alone, on a slice of a longer column (a slice's character buffer holds its neighbours' too)."""
    import numpy as np
    import pyarrow.compute as pc

    from transforms.clean import validate as clean

    column = pa.array(["0x7"] * offset + values + ["0x9"], pa.string()).slice(offset, len(values))
    typed, bad = clean.coerce(column, kind)
    text = pc.utf8_trim_whitespace(column)
    ok = pc.fill_null(pc.match_substring_regex(text, clean._INT_RE if kind == "int" else clean._FLOAT_RE), False)
    if kind == "int":
        ok = pc.and_(ok, pc.invert(clean._past_int64(text)))
    want = pc.cast(pc.if_else(ok, pc.replace_substring_regex(text, r"^\+", ""), pa.scalar(None, pa.string())),
                   clean.ARROW_TYPES[kind])
    assert bad.tolist() == (np.asarray(pc.is_valid(column)) & ~np.asarray(ok)).tolist(), values
    assert typed.equals(want) or (kind == "float" and np.allclose(
        np.asarray(typed.to_pandas(), dtype=float), np.asarray(want.to_pandas(), dtype=float), equal_nan=True,
        rtol=0, atol=0)), values
