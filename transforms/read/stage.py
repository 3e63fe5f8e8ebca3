"""The `ReadInputs` stage: (reader index, file path) → byte ranges → raw record batches
of the wanted columns, reader faults → quarantine."""

import hashlib
import logging
import os
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.batches import (METRICS_NAMESPACE, RECORD, ROW, SOURCE, OrderedThreadPool, as_batches, count_reasons,
                                set_column)
from transforms.read.blocks import BLOCK_BYTES, RANGE_BYTES, ByteRange, _Bounded, line_blocks_at, plan_ranges, split_header
from transforms.read.compressed import is_compressed, open_input
from transforms.read.csv_format import parse_csv_block, parse_header
from transforms.read.encoding import UTF8, as_utf8, canonical, text_encoding
from transforms.read.jsonl_format import parse_jsonl_block
from transforms.read.records import BadRows, ReaderSpec


def report_progress(folder: Optional[str], path: str, done: int) -> None:
    """Bytes of `path` read so far, as a small file in `folder` (local only) that the
    launcher's progress line sums; nothing when `folder` is None."""
    if folder is None:
        return
    name = os.path.join(folder, hashlib.sha1(path.encode()).hexdigest()[:16])
    try:
        os.makedirs(folder, exist_ok=True)
        with open(name + ".tmp", "w", encoding="ascii") as f:
            f.write(str(done))
        os.replace(name + ".tmp", name)
    except OSError:   # a progress line is a courtesy: never a failed read
        pass


class _PlanRangesFn(beam.DoFn):
    """(input index, file path) → the file's `ByteRange`s: one for a small, compressed or
    Parquet file, else about one per `range_bytes` (found by `plan_ranges`' pass)."""

    def __init__(self, specs: Sequence[ReaderSpec], range_bytes: int, block_bytes: int):
        self._specs = list(specs)
        self._range_bytes = range_bytes
        self._block_bytes = block_bytes

    def process(self, element: Tuple[int, str]):
        index, path = element
        spec = self._specs[index]
        whole = ByteRange(index, path, 0, -1, 1, None)
        if spec.format == "parquet" or is_compressed(path) or canonical(spec.encoding) != UTF8:
            yield whole     # a transcoded file's offsets are not its bytes': read whole, as a compressed one
            return
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        if size <= self._range_bytes:
            yield whole
            return
        with open_input(path) as f:
            if text_encoding(f.read(4), None)[0] != UTF8:   # a UTF-16/32 byte-order mark
                yield whole
                return
            f.seek(0)
            yield from plan_ranges(f, index, path, spec, self._range_bytes, self._block_bytes)


class _ReadFileFn(beam.DoFn):
    """A `ByteRange` of an input file → raw record batches; reader faults on the `quarantine` tag."""

    QUARANTINE = "quarantine"

    def __init__(self, specs: Sequence[ReaderSpec], wanted: Sequence[str], block_bytes: int,
                 progress_dir: Optional[str] = None, source_names: Optional[Dict[str, str]] = None):
        self._specs = list(specs)
        self._wanted = list(wanted)
        self._block_bytes = block_bytes
        self._progress_dir = progress_dir
        self._names = dict(source_names or {})
        self._rows = Metrics.counter(METRICS_NAMESPACE, "ingest.rows")

    def process(self, part: ByteRange):
        uri = part.path
        path = self._names.get(uri, uri)   # what rows, faults and messages name: never the credentials
        spec = self._specs[part.index]
        progress_key = uri if part.start == 0 else f"{uri}@{part.start}"
        with open_input(uri, path) as f:   # decompressed, a truncated stream an error naming the file
            if spec.format == "parquet":
                yield from self._parquet(f, path)
                return
            if part.start:
                f.seek(part.start)
            src = f if part.end < 0 else _Bounded(f, part.end - part.start)
            if not part.start:     # the start of the file: a byte-order mark, or the configured encoding
                src, _ = as_utf8(src, spec.encoding)
            quote = spec.quote_char if spec.format == "csv" else None
            blocks = ((b, n) for b, n, _ in line_blocks_at(src, self._block_bytes, quote, part.first_line,
                                                             part.start))
            names = None
            if spec.format == "csv":
                if part.start:
                    names = list(part.names)
                else:
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
                    report_progress(self._progress_dir, progress_key, done)
                for batch, bad in pool.finish():
                    yield from self._emit(batch, bad, path)
                if self._progress_dir is not None:   # the header and line ends too: the whole range
                    size = part.end - part.start if part.end >= 0 else f.tell() - part.start
                    report_progress(self._progress_dir, progress_key, max(done, size))
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


def read_file(path: str, spec: ReaderSpec, wanted: Sequence[str], block_bytes: int = BLOCK_BYTES,
              source_name: Optional[str] = None) -> Iterator[Tuple[str, pa.RecordBatch]]:
    """One whole file read as a read task of `ReadInputs` reads it, without a pipeline:
    ("rows", raw record batch) and ("quarantine", reader faults), lazily and in file order,
    so a caller that needs the first records only (`dataprep validate`, `init`) stops
    early and the rest of the file is never read. `source_name`: what `_source` calls the
    file, where that is not its path (as `ReadInputs`' `source_names`)."""
    fn = _ReadFileFn([spec], wanted, block_bytes, source_names={path: source_name} if source_name else None)
    for out in fn.process(ByteRange(0, path, 0, -1, 1, None)):
        if isinstance(out, pvalue.TaggedOutput):
            yield "quarantine", out.value
        else:
            yield "rows", out


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
    `ReadResult`. `specs[reader index]` says how to read the file; a big uncompressed CSV or
    JSONL file is read as `ByteRange`s of about `range_bytes` by as many tasks (cut at record
    boundaries, so the records and their `_row` are those of reading it whole); with
    `progress_dir` (a local folder), the bytes read of each range are left there as they go
    (`report_progress`). `source_names` (path → name) is what the rows' `_source`, the
    faults and the messages call a file, where that is not its path (a URL with
    credentials, shown without them)."""

    def __init__(self, specs: Sequence[ReaderSpec], wanted: Sequence[str], block_bytes: int = BLOCK_BYTES,
                 progress_dir: Optional[str] = None, range_bytes: int = RANGE_BYTES,
                 source_names: Optional[Dict[str, str]] = None):
        super().__init__()
        self._specs = specs
        self._wanted = wanted
        self._block_bytes = block_bytes
        self._progress_dir = progress_dir     # local folder for the launcher's progress line, or None
        self._range_bytes = range_bytes
        self._source_names = source_names

    def expand(self, files):
        # one shuffle, of the ranges: planning is a size lookup per file (a newline scan for a
        # big one), cheap beside parsing; two reshuffles in a row were one on Flink (the second
        # became a forward edge, and one task read every range of a file)
        parts = as_batches(files
                           | "PlanRanges" >> beam.ParDo(_PlanRangesFn(self._specs, self._range_bytes,
                                                                      self._block_bytes))
                           | "SpreadRanges" >> beam.Reshuffle()
                           | "ReadFiles" >> beam.ParDo(_ReadFileFn(self._specs, self._wanted, self._block_bytes,
                                                                   self._progress_dir, self._source_names))
                           .with_outputs(_ReadFileFn.QUARANTINE, main="rows"), "rows", _ReadFileFn.QUARANTINE)
        return ReadResult(parts.rows, parts[_ReadFileFn.QUARANTINE])
