"""The first records of an input, read by the job's own reader without a pipeline: what
`dataprep validate` (`pipeline/preflight.py`) and `dataprep init` (`pipeline/starter.py`)
look at.

The records are those a run reads (`transforms.read.read_file`, the read task of
`ReadInputs`): the same CSV dialect, NA values, trim, faults and line numbers. Reading stops
once `limit` records are in hand, so a big file costs a block or two (1 MB each), never a
whole pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from transforms.batches import QUARANTINE_SCHEMA, ROW, concat_batches
from transforms.read import ReaderSpec, read_file

SAMPLE_ROWS = 10_000        # `validate --sample`, `init --sample`: records read per input
SAMPLE_BLOCK_BYTES = 1 << 20


@dataclass
class Sample:
    """The first records of one input (its files in order): the rows read (`ReadInputs`' rows:
    the wanted columns as read, `_source`, `_row`, `_record`) and the reader faults among them
    (QUARANTINE_SCHEMA, stage `ingest`); per file, how many records and whether it was read whole."""

    rows: pa.Table
    faults: pa.Table
    files: List[Tuple[str, int, bool]] = field(default_factory=list)   # (uri, records, read whole)
    unread_files: int = 0      # files of the input not reached: the limit was met before them

    @property
    def records(self) -> int:
        return self.rows.num_rows + self.faults.num_rows

    @property
    def whole(self) -> bool:
        """Every record of every file matched was read: the sample is the input."""
        return not self.unread_files and all(w for _, _, w in self.files)


def read_sample(paths: Sequence[str], spec: ReaderSpec, wanted: Sequence[str], limit: int = SAMPLE_ROWS,
                source_names: Optional[Dict[str, str]] = None) -> Sample:
    """The first `limit` records of the files `paths`, in order (records: rows and faults alike).

    Raises:
      ValueError: a file lacks a wanted column (the reader's own message).
    """
    names = source_names or {}
    row_parts: List[pa.RecordBatch] = []
    fault_parts: List[pa.RecordBatch] = []
    files: List[Tuple[str, int, bool]] = []
    left = limit
    for path in paths:
        if left <= 0:
            break
        rows, faults, whole = _head(path, spec, wanted, left, names.get(path))
        row_parts += rows
        fault_parts += faults
        n = sum(b.num_rows for b in rows) + sum(b.num_rows for b in faults)
        files.append((names.get(path, path), n, whole))
        left -= n
    rows_table = concat_batches(row_parts) if row_parts else None
    if rows_table is None or not rows_table.num_columns:
        rows_table = _empty_rows(wanted)
    return Sample(rows=rows_table, faults=concat_batches(fault_parts, QUARANTINE_SCHEMA), files=files,
                  unread_files=len(paths) - len(files))


def _head(path: str, spec: ReaderSpec, wanted: Sequence[str], limit: int, source_name: Optional[str]
          ) -> Tuple[List[pa.RecordBatch], List[pa.RecordBatch], bool]:
    """The first `limit` records of one file: (row batches, fault batches, whether the file
    ended within them)."""
    rows: List[pa.RecordBatch] = []
    faults: List[pa.RecordBatch] = []
    seen = 0
    whole = True
    reader = read_file(path, spec, wanted, SAMPLE_BLOCK_BYTES, source_name)
    try:
        for tag, batch in reader:
            # a block's faults come after its rows: stop at the next block's rows, not before
            if seen > limit and tag == "rows":
                whole = False
                break
            (rows if tag == "rows" else faults).append(batch)
            seen += batch.num_rows
    finally:
        reader.close()    # stops the read (and the block parsed ahead on the reader's thread)
    if seen <= limit:
        return rows, faults, whole
    whole = False
    # the records come a block at a time: keep those up to the limit-th line that starts one
    lines = np.sort(np.concatenate([b.column(ROW).to_numpy(zero_copy_only=False) for b in rows + faults]))
    last = lines[limit - 1]
    cut = [b.filter(pa.array(b.column(ROW).to_numpy(zero_copy_only=False) <= last)) for b in rows]
    cut_faults = [b.filter(pa.array(b.column(ROW).to_numpy(zero_copy_only=False) <= last)) for b in faults]
    return [b for b in cut if b.num_rows], [b for b in cut_faults if b.num_rows], False


def _empty_rows(wanted: Sequence[str]) -> pa.Table:
    from transforms.batches import RECORD, SOURCE

    return pa.table({**{c: pa.array([], pa.string()) for c in wanted}, SOURCE: pa.array([], pa.string()),
                     ROW: pa.array([], pa.int64()), RECORD: pa.array([], pa.binary())})
