"""Ingest: input files → Arrow record batches of raw columns, reader faults → quarantine.

A record is one physical line of a CSV/JSONL file (or one row of a Parquet file);
`_row` is its 1-based line number (for CSV with a header, the first record is line 2),
so a quarantined row can be found with `sed -n 'Np'`. Files are read in blocks of whole
lines: pyarrow parses a block in one call (the fast path); a block that pyarrow rejects
or that does not come out as one row per line is re-read line by line, so one broken
line costs one block of slow parsing and never the run.
"""

import csv
import json
import logging
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.batches import (METRICS_NAMESPACE, RECORD, ROW, SOURCE, OrderedThreadPool, as_batches, count_reasons,
                                quarantine_batch, set_column)

BLOCK_BYTES = 8 << 20
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ReaderSpec:
    """How to read one input's files: the format and, for CSV, its dialect and NA values."""

    format: str
    header: bool = True
    delimiter: str = ","
    quote_char: Optional[str] = '"'
    na_values: Tuple[str, ...] = ("",)
    trim: bool = False
    names: Optional[Tuple[str, ...]] = None


@dataclass
class BadRows:
    """Reader faults of one block: line numbers, the raw bytes, and a reason code each."""

    rows: List[int] = field(default_factory=list)
    raw: List[bytes] = field(default_factory=list)
    reasons: List[str] = field(default_factory=list)

    def add(self, row: int, raw: bytes, reason: str) -> None:
        self.rows.append(row)
        self.raw.append(raw)
        self.reasons.append(reason)

    def to_batch(self, source: str, stage: str = "ingest") -> Optional[pa.RecordBatch]:
        if not self.rows:
            return None
        return quarantine_batch(pa.array([escape_bytes(r) for r in self.raw], pa.string()), self.reasons, stage,
                                source, self.rows)


def escape_bytes(raw: bytes) -> str:
    """The text of a raw record (line terminator removed).

    Valid UTF-8 comes back as it is. Otherwise (reason `invalid_utf8`) backslashes are
    doubled and every undecodable byte becomes `\\xNN`, which `unescape_record` reverses.
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")


def unescape_record(text: str) -> bytes:
    """The original bytes of an `invalid_utf8` record from its escaped text."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif text.startswith("\\x", i):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            j = i
            while j < len(text) and text[j] != "\\":
                j += 1
            out += text[i:j].encode("utf-8")
            i = j
    return bytes(out)


def _line_lengths(lines: Sequence[bytes]) -> np.ndarray:
    return np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))


def _blank_mask(lines: Sequence[bytes]) -> np.ndarray:
    """Empty lines (or a lone "\\r") are not records; a line of spaces is one (and is broken)."""
    lens = _line_lengths(lines)
    blank = lens == 0
    for i in np.flatnonzero(lens == 1):
        blank[i] = lines[i] == b"\r"
    return blank


def _finish_strings(columns: Dict[str, pa.Array], spec: ReaderSpec) -> Dict[str, pa.Array]:
    """Applies the reader's `trim` and `na_values` to raw string columns."""
    na = pa.array(list(spec.na_values), pa.string())
    out = {}
    for name, arr in columns.items():
        if spec.trim:
            arr = pc.utf8_trim_whitespace(arr)
        if len(na):
            missing = pc.is_in(arr, value_set=na)
            if pc.any(missing).as_py():     # most columns have none: no copy of their text
                arr = pc.if_else(missing, pa.scalar(None, pa.string()), arr)
        out[name] = arr
    return out


def parse_csv_block(block: bytes, first_line: int, names: Sequence[str], wanted: Sequence[str],
                    spec: ReaderSpec) -> Tuple[Optional[pa.RecordBatch], BadRows]:
    """Parses whole CSV lines into a batch of `wanted` string columns + `_row` + `_record`.

    `block` holds complete lines without the final newline; `first_line` is the
    1-based line number of its first line. Blank lines are not records.
    """
    lines = block.split(b"\n")
    blank = _blank_mask(lines)
    line_numbers = first_line + np.flatnonzero(~blank)
    bad = BadRows()
    if not len(line_numbers):
        return None, bad
    table = _parse_csv_fast(block, names, wanted, spec, expected_rows=len(line_numbers))
    if table is not None:
        records = [lines[i] for i in np.flatnonzero(~blank)]
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
    arrays = [columns[c] for c in wanted] + [pa.array(rows, pa.int64()), pa.array(records, pa.binary())]
    return pa.RecordBatch.from_arrays(arrays, names=list(wanted) + [ROW, RECORD]), bad


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
    swallow the lines after it; one that is valid CSV but has the wrong number of fields is
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
            for k, line in enumerate(record.split(b"\n")):
                if line and line != b"\r":
                    one(n + k, line, False)
        else:
            bad.add(n, raw, reason)

    for n, record in spans:
        one(n, record, b"\n" in record)
    if not values:
        return None, rows, records
    cols = list(zip(*values))
    table = pa.table({c: pa.array(cols[j], pa.string()) for j, c in enumerate(wanted)})
    return table, rows, records


def _csv_module_options(spec: ReaderSpec, strict: bool) -> dict:
    kw = dict(delimiter=spec.delimiter, strict=strict)
    if spec.quote_char:
        kw["quotechar"] = spec.quote_char
    else:
        kw["quoting"] = csv.QUOTE_NONE
    return kw


def _json_text(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, sort_keys=True)


def parse_jsonl_block(block: bytes, first_line: int, wanted: Sequence[str],
                      spec: ReaderSpec) -> Tuple[Optional[pa.RecordBatch], BadRows]:
    """Parses JSON-lines into `wanted` string columns; a missing key is a null value."""
    lines = block.split(b"\n")
    blank = _blank_mask(lines)
    bad = BadRows()
    values: Dict[str, List[Optional[str]]] = {c: [] for c in wanted}
    rows: List[int] = []
    records: List[bytes] = []
    for i in np.flatnonzero(~blank):
        line = lines[i]
        n = first_line + int(i)
        try:
            obj = json.loads(line)
        except UnicodeDecodeError:
            bad.add(n, line, "invalid_utf8")
            continue
        except ValueError:
            bad.add(n, line, "json_invalid")
            continue
        if not isinstance(obj, dict):
            bad.add(n, line, "json_not_object")
            continue
        for c in wanted:
            values[c].append(_json_text(obj.get(c)))
        rows.append(n)
        records.append(line)
    if not rows:
        return None, bad
    columns = _finish_strings({c: pa.array(values[c], pa.string()) for c in wanted}, spec)
    arrays = [columns[c] for c in wanted] + [pa.array(rows, pa.int64()), pa.array(records, pa.binary())]
    return pa.RecordBatch.from_arrays(arrays, names=list(wanted) + [ROW, RECORD]), bad


def iter_line_blocks(f, block_bytes: int = BLOCK_BYTES, quote_char: Optional[str] = None
                     ) -> Iterator[Tuple[bytes, int]]:
    """Yields (block of whole lines without the last newline, first line number).

    With `quote_char` (CSV), a block ends at a newline outside quotes (an even number of
    quote characters before it), so a record whose quoted field holds a newline is never
    cut in two. A quote that never closes (a stray one) stops holding the cut back once
    the block is 4 x `block_bytes`: then the last newline is taken, as without quotes.
    """
    quote = quote_char.encode() if quote_char else None
    pending = b""
    line_no = 1
    first = True
    while True:
        chunk = f.read(block_bytes)
        if first:
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
            first = False
        if not chunk:
            if pending:
                yield pending, line_no
            return
        pending += chunk
        cut = pending.rfind(b"\n")
        if quote is not None and cut >= 0 and len(pending) < 4 * block_bytes:
            cut = _last_newline_outside_quotes(pending, cut, quote)
        if cut < 0:
            continue
        block, pending = pending[:cut], pending[cut + 1:]
        yield block, line_no
        line_no += block.count(b"\n") + 1


def _last_newline_outside_quotes(data: bytes, cut: int, quote: bytes) -> int:
    """The last newline at or before `cut` with an even number of quotes before it, or -1."""
    if quote not in data:
        return cut
    quotes = data.count(quote, 0, cut)
    while cut >= 0 and quotes % 2:
        previous = data.rfind(b"\n", 0, cut)
        quotes -= data.count(quote, previous + 1, cut)
        cut = previous
    return cut


def split_header(blocks: Iterator[Tuple[bytes, int]]) -> Tuple[Optional[bytes], Iterator[Tuple[bytes, int]]]:
    """Takes the first line off a stream of line blocks: (header line or None, the rest)."""
    for block, first_line in blocks:
        head, sep, rest = block.partition(b"\n")

        def remaining(rest=rest, sep=sep, first=first_line + 1):
            if sep:
                yield rest, first
            yield from blocks
        return head.rstrip(b"\r"), remaining()
    return None, iter(())


def parse_header(head: bytes, spec: ReaderSpec) -> List[str]:
    kw = _csv_module_options(spec, strict=False)
    return [n.strip() for n in next(csv.reader([head.decode("utf-8", "replace")], **kw))]


def report_progress(folder: Optional[str], path: str, done: int) -> None:
    """Bytes of `path` read so far, as a small file in `folder` (local only) that the
    launcher's progress line sums; nothing when `folder` is None."""
    if folder is None:
        return
    import hashlib
    import os

    name = os.path.join(folder, hashlib.sha1(path.encode()).hexdigest()[:16])
    try:
        os.makedirs(folder, exist_ok=True)
        with open(name + ".tmp", "w", encoding="ascii") as f:
            f.write(str(done))
        os.replace(name + ".tmp", name)
    except OSError:   # a progress line is a courtesy: never a failed read
        pass


class _ReadFileFn(beam.DoFn):
    """(input index, file path) → raw record batches; reader faults on the `quarantine` tag."""

    QUARANTINE = "quarantine"

    def __init__(self, specs: Sequence[ReaderSpec], wanted: Sequence[str], block_bytes: int,
                 progress_dir: Optional[str] = None):
        self._specs = list(specs)
        self._wanted = list(wanted)
        self._block_bytes = block_bytes
        self._progress_dir = progress_dir
        self._rows = Metrics.counter(METRICS_NAMESPACE, "ingest.rows")

    def process(self, element: Tuple[int, str]):
        index, path = element
        spec = self._specs[index]
        with FileSystems.open(path) as f:
            if spec.format == "parquet":
                yield from self._parquet(f, path)
                return
            quote = spec.quote_char if spec.format == "csv" else None
            blocks = iter_line_blocks(f, self._block_bytes, quote)
            names = None
            if spec.format == "csv":
                names = list(spec.names) if spec.names else None
                if spec.header:
                    head, blocks = split_header(blocks)
                    if head is None:
                        logging.warning("%s: empty file, no rows", path)
                        return
                    names = parse_header(head, spec)
                missing = [c for c in self._wanted if c not in names]
                if missing:
                    raise ValueError(f"{path}: the file has no column(s) {missing}; it has {names}")
            # the next block is parsed on a thread while this one goes downstream
            pool = OrderedThreadPool()
            done = 0
            try:
                for block, first_line in blocks:
                    if spec.format == "csv":
                        parsed = pool.submit(parse_csv_block, block, first_line, names, self._wanted, spec)
                    else:
                        parsed = pool.submit(parse_jsonl_block, block, first_line, self._wanted, spec)
                    for batch, bad in parsed:
                        yield from self._emit(batch, bad, path)
                    done += len(block)
                    report_progress(self._progress_dir, path, done)
                for batch, bad in pool.finish():
                    yield from self._emit(batch, bad, path)
                if self._progress_dir is not None:   # the header and line ends too: the whole file
                    report_progress(self._progress_dir, path, max(done, f.tell()))
            finally:
                pool.close()

    def _emit(self, batch: Optional[pa.RecordBatch], bad: BadRows, path: str):
        if batch is not None and batch.num_rows:
            self._rows.inc(batch.num_rows)
            yield _with_source(batch, path)
        qbatch = bad.to_batch(path)
        if qbatch is not None:
            count_reasons(qbatch)
            yield pvalue.TaggedOutput(self.QUARANTINE, qbatch)

    def _parquet(self, f, path: str):
        pf = pq.ParquetFile(f)
        present = set(pf.schema_arrow.names)
        missing = [c for c in self._wanted if c not in present]
        if missing:
            raise ValueError(f"{path}: the file has no column(s) {missing}; it has {sorted(present)}")
        first = 1
        for batch in pf.iter_batches(batch_size=65536, columns=self._wanted):
            n = batch.num_rows
            arrays = list(batch.columns) + [pa.array(np.arange(first, first + n), pa.int64()),
                                            pa.nulls(n, pa.binary())]
            first += n
            self._rows.inc(n)
            yield _with_source(pa.RecordBatch.from_arrays(arrays, names=self._wanted + [ROW, RECORD]), path)


def _with_source(batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
    source = pa.DictionaryArray.from_arrays(pa.array(np.zeros(batch.num_rows, np.int32)),
                                            pa.array([path])).cast(pa.string())
    return set_column(batch, SOURCE, source)


class ReadResult(NamedTuple):
    """`ReadInputs`' outputs, both PCollections of record batches."""

    rows: beam.PCollection         # the `wanted` columns (raw strings; Parquet's own types) + _source, _row, _record
    quarantine: beam.PCollection   # QUARANTINE_SCHEMA: reader faults, stage "ingest"


@beam.typehints.with_input_types(beam.typehints.Tuple[int, str])
@beam.typehints.with_output_types(pa.RecordBatch)
class ReadInputs(beam.PTransform):
    """(reader index, file path) pairs, the files already matched by the launcher → a
    `ReadResult`. `specs[reader index]` says how to read the file; with `progress_dir` (a
    local folder), the bytes read of each file are left there as they go (`report_progress`)."""

    def __init__(self, specs: Sequence[ReaderSpec], wanted: Sequence[str], block_bytes: int = BLOCK_BYTES,
                 progress_dir: Optional[str] = None):
        super().__init__()
        self._specs = specs
        self._wanted = wanted
        self._block_bytes = block_bytes
        self._progress_dir = progress_dir     # local folder for the launcher's progress line, or None

    def expand(self, files):
        parts = as_batches(files
                           | "Spread" >> beam.Reshuffle()
                           | "ReadFiles" >> beam.ParDo(_ReadFileFn(self._specs, self._wanted, self._block_bytes,
                                                                   self._progress_dir))
                           .with_outputs(_ReadFileFn.QUARANTINE, main="rows"), "rows", _ReadFileFn.QUARANTINE)
        return ReadResult(parts.rows, parts[_ReadFileFn.QUARANTINE])
