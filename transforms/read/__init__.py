"""Ingest (`stage.py`): input files → Arrow record batches of raw columns, reader faults → quarantine.

A record is one CSV record (RFC 4180: a quoted field may hold newlines), one line of a
JSONL file, or one row of a Parquet file; `_row` is the 1-based line number where it
starts (for CSV with a header, the first record is line 2), so a quarantined row can be
found with `sed -n 'Np'`. A big file is cut into byte ranges at record boundaries, read by
as many tasks. A range is read in blocks of whole records: pyarrow parses a block in one
call (the fast path); a block that pyarrow rejects or that does not come out as one row
per record is re-read record by record, so one broken record costs one block of slow
parsing and never the run.
"""

from transforms.read.blocks import BLOCK_BYTES, RANGE_BYTES, ByteRange, iter_line_blocks, line_blocks_at, plan_ranges, split_header
from transforms.read.csv_format import parse_csv_block, parse_header, record_spans
from transforms.read.jsonl_format import parse_jsonl_block
from transforms.read.records import BadRows, ReaderSpec, escape_bytes, unescape_record
from transforms.read.stage import ReadInputs, ReadResult, read_file, report_progress

__all__ = ["BLOCK_BYTES", "RANGE_BYTES", "BadRows", "ByteRange", "ReadInputs", "ReadResult", "ReaderSpec",
           "escape_bytes", "iter_line_blocks", "line_blocks_at", "parse_csv_block", "parse_header",
           "parse_jsonl_block", "plan_ranges", "read_file", "record_spans", "report_progress", "split_header",
           "unescape_record"]
