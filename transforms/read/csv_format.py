"""CSV records (RFC 4180) of a block → string columns: pyarrow's parse of the whole block (the
fast path), else record by record with Python's csv module; the header line's names."""

import csv
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from transforms.batches import RECORD, ROW
from transforms.read.records import BadRows, ReaderSpec, _finish_strings, block_lines, lines_array


def parse_csv_block(block: bytes, first_line: int, names: Sequence[str], wanted: Sequence[str],
                    spec: ReaderSpec) -> Tuple[Optional[pa.RecordBatch], BadRows]:
    """Parses whole CSV lines into a batch of `wanted` string columns + `_row` + `_record`.

    `block` holds complete lines without the final newline; `first_line` is the
    1-based line number of its first line. Blank lines are not records. A record holding a
    NUL byte is quarantined (`nul_byte`): pyarrow would keep it inside the field.
    """
    if b"\0" in block:     # memchr: nothing measurable on a block without one
        return _parse_around_nul_records(block, first_line, names, wanted, spec)
    bad = BadRows()
    starts, ends, blank = block_lines(block)
    line_numbers = first_line + np.flatnonzero(~blank)
    if not len(line_numbers):
        return None, bad
    table = _parse_csv_fast(block, names, wanted, spec, expected_rows=len(line_numbers))
    if table is not None:
        records = lines_array(block, starts, ends, blank)
        rows = line_numbers
    else:
        # A quoted field may hold newlines (RFC 4180): the block's records, not its lines
        starts, ends, start_lines = record_spans(block, spec.quote_char)
        spans = [(first_line + int(n), block[a:b]) for a, b, n in zip(starts, ends, start_lines)]
        spans = [(n, r) for n, r in spans if r and r != b"\r"]
        table = None
        if len(spans) < len(line_numbers):
            table = _parse_csv_fast(block, names, wanted, spec, expected_rows=len(spans), newlines_in_values=True)
            if table is not None and not _field_counts_hold(spans, len(names), spec):
                table = None
        if table is not None:
            rows, records = [n for n, _ in spans], [r for _, r in spans]
        else:
            table, rows, records = _parse_csv_slow(spans, names, wanted, spec, bad)
        if table is None:
            return None, bad
    columns = _finish_strings({c: table.column(c).combine_chunks() for c in wanted}, spec)
    if not isinstance(records, pa.Array):
        records = pa.array(records, pa.binary())
    arrays = [columns[c] for c in wanted] + [pa.array(rows, pa.int64()), records]
    return pa.RecordBatch.from_arrays(arrays, names=list(wanted) + [ROW, RECORD]), bad


def _parse_around_nul_records(block: bytes, first_line: int, names: Sequence[str], wanted: Sequence[str],
                              spec: ReaderSpec) -> Tuple[Optional[pa.RecordBatch], BadRows]:
    """`parse_csv_block` of a block holding NUL bytes: each record holding one is quarantined
    (`nul_byte`) and the lines between them are parsed as blocks of their own, with their
    line numbers. A record spanning lines that is not one valid record (a stray quote) is not
    one: only its lines holding a NUL are taken out, the others read as usual."""
    starts, ends, start_lines = record_spans(block, spec.quote_char)
    nul = np.flatnonzero(np.frombuffer(block, np.uint8) == 0)
    kw = _csv_module_options(spec, strict=True)
    spans = []      # (start, end, line) of each record (or line) to quarantine, in order
    for i in np.unique(np.searchsorted(starts, nul, side="right") - 1):
        a, b, line = int(starts[i]), int(ends[i]), first_line + int(start_lines[i])
        raw = block[a:b]
        if b"\n" not in raw or _parses(raw.replace(b"\0", b""), len(names), kw, lines=True):
            spans.append((a, b, line))
            continue
        offset = a
        for k, piece in enumerate(raw.split(b"\n")):
            if b"\0" in piece:
                spans.append((offset, offset + len(piece), line + k))
            offset += len(piece) + 1
    bad = BadRows()
    batches = []
    at, line = 0, first_line
    for x, y, n in spans + [(len(block) + 1, len(block) + 1, None)]:
        if x > at:    # the lines before this record: a block of their own (without the newline before it)
            batch, more = parse_csv_block(block[at:x - 1], line, names, wanted, spec)
            batches += [batch] if batch is not None else []
            bad.extend(more)
        if n is not None:
            bad.add(n, block[x:y], "nul_byte")
            at, line = y + 1, n + block.count(b"\n", x, y) + 1
    if not batches:
        return None, bad
    return pa.RecordBatch.from_arrays([pa.concat_arrays([b.column(i) for b in batches])
                                       for i in range(batches[0].num_columns)], names=batches[0].schema.names), bad


def record_spans(block: bytes, quote_char: Optional[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the CSV records of `block` are: (start offsets, end offsets, 0-based line of each
    start). A newline ends a record unless an odd number of quote characters precede it (it
    is inside a quoted field; a doubled quote counts twice). Vectorised: the quotes' and
    newlines' positions, one searchsorted."""
    data = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(data == 10)
    if quote_char and newlines.size:
        quotes = np.flatnonzero(data == ord(quote_char))
        newlines_out = newlines[(np.searchsorted(quotes, newlines) & 1) == 0]
    else:
        newlines_out = newlines
    starts = np.concatenate([[0], newlines_out + 1])
    ends = np.concatenate([newlines_out, [len(block)]])
    return starts, ends, np.searchsorted(newlines, starts)


def _field_counts_hold(spans: Sequence[Tuple[int, bytes]], n_fields: int, spec: ReaderSpec) -> bool:
    """Every record spanning lines has the header's field count: otherwise its quote is more
    likely a stray one (`5" screen`) than a quoted newline, and its lines are read one by one."""
    kw = _csv_module_options(spec, strict=True)
    for _, raw in spans:
        if b"\n" in raw:
            try:
                if len(next(csv.reader([raw.decode("utf-8")], **kw))) != n_fields:
                    return False
            except (csv.Error, UnicodeDecodeError, StopIteration):
                return False
    return True


def _parse_csv_fast(block: bytes, names: Sequence[str], wanted: Sequence[str], spec: ReaderSpec,
                    expected_rows: int, newlines_in_values: bool = False) -> Optional[pa.Table]:
    """pyarrow's parse of a whole block, or None when any line needs the slow path.

    No invalid-row handler: pyarrow raises on the first bad row, and a row count that
    differs from the line count catches a quote that swallowed a newline.
    """
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(block),
            read_options=pa_csv.ReadOptions(column_names=list(names), use_threads=False,
                                            block_size=max(len(block) + 1, 1 << 20)),
            parse_options=pa_csv.ParseOptions(
                delimiter=spec.delimiter, quote_char=spec.quote_char if spec.quote_char else False,
                ignore_empty_lines=True, newlines_in_values=newlines_in_values),
            convert_options=pa_csv.ConvertOptions(
                include_columns=list(wanted), column_types={c: pa.string() for c in wanted},
                strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[]),
        )
    except pa.ArrowInvalid:
        return None
    return table if table.num_rows == expected_rows else None


def _parse_csv_slow(spans: Sequence[Tuple[int, bytes]], names: Sequence[str], wanted: Sequence[str],
                    spec: ReaderSpec, bad: BadRows):
    """Record by record, with Python's csv module: (table, rows, records). `spans` are
    (start line, raw bytes) of each record. A record spanning lines that is not valid CSV
    (a stray quote, not a quoted newline) is read again line by line, so the quote does not
    swallow the lines after it, unless none of its lines parses alone: then it is one broken
    record, quarantined once; one that is valid CSV but has the wrong number of fields is
    one record, quarantined once (`csv_field_count`)."""
    index = {n: i for i, n in enumerate(names)}
    picks = [index[c] for c in wanted]
    kw = _csv_module_options(spec, strict=True)
    values: List[List[str]] = []
    rows: List[int] = []
    records: List[bytes] = []

    def one(n: int, record: bytes, lines_on_failure: bool) -> None:
        raw = record[:-1] if record.endswith(b"\r") else record
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        fields = None
        reason = "invalid_utf8"
        if text is not None:
            try:
                fields = next(csv.reader([text], **kw))
                reason = "csv_field_count"
            except csv.Error:
                reason = "csv_malformed"
        if fields is not None and len(fields) == len(names):
            values.append([fields[p] for p in picks])
            rows.append(n)
            records.append(record)
        elif lines_on_failure and reason != "csv_field_count":
            for k, piece in _pieces(record.split(b"\n"), len(names), kw, spec.quote_char):
                one(n + k, piece, False)
        else:
            bad.add(n, raw, reason)

    for n, record in spans:
        one(n, record, b"\n" in record)
    if not values:
        return None, rows, records
    cols = list(zip(*values))
    table = pa.table({c: pa.array(cols[j], pa.string()) for j, c in enumerate(wanted)})
    return table, rows, records


def _pieces(lines: Sequence[bytes], n_fields: int, kw: dict, quote_char: Optional[str]
            ) -> Iterator[Tuple[int, bytes]]:
    """A span of lines that is not one valid record, cut into (line offset, piece). A line that
    opens a quote (an odd number of them) and does not parse alone is one broken record with
    the lines up to the one that closes the quote, when no line between parses alone; else its
    quote is a stray one and every line is a piece of its own (a stray quote swallows no valid
    line). So a broken multi-line record is quarantined once, and makes up no row."""
    quote = quote_char.encode() if quote_char else b"\0"
    odd = [line.count(quote) % 2 == 1 for line in lines]
    k = 0
    while k < len(lines):
        j = k + 1
        if odd[k] and not _parses(lines[k], n_fields, kw):
            close = next((m for m in range(k + 1, len(lines)) if odd[m]), None)
            if close is not None and not any(_parses(lines[m], n_fields, kw) for m in range(k + 1, close)):
                j = close + 1
        piece = b"\n".join(lines[k:j])
        if piece and piece != b"\r":
            yield k, piece
        k = j


def _parses(line: bytes, n_fields: int, kw: dict, lines: bool = False) -> bool:
    """Whether one line alone (with `lines`, a record of several lines) is a valid CSV record
    of `n_fields` fields."""
    try:
        reader = csv.reader([line.rstrip(b"\r").decode("utf-8")], **kw)
        fields = next(reader)
        return len(fields) == n_fields and (not lines or next(reader, None) is None)
    except (csv.Error, UnicodeDecodeError, StopIteration):
        return False


def _csv_module_options(spec: ReaderSpec, strict: bool) -> dict:
    kw = dict(delimiter=spec.delimiter, strict=strict)
    if spec.quote_char:
        kw["quotechar"] = spec.quote_char
    else:
        kw["quoting"] = csv.QUOTE_NONE
    return kw


def parse_header(head: bytes, spec: ReaderSpec) -> List[str]:
    kw = _csv_module_options(spec, strict=False)
    return [n.strip() for n in next(csv.reader([head.decode("utf-8", "replace")], **kw))]
