"""What the readers share: how an input is read (`ReaderSpec`), a block's reader faults
(`BadRows`), the escaped text of a raw record, blank lines and NA values."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.batches import quarantine_batch


@dataclass(frozen=True)
class ReaderSpec:
    """How to read one input's files: the format and, for CSV, its dialect and NA values;
    `encoding` of a CSV or JSONL file when it is not UTF-8 (a byte-order mark overrides it)."""

    format: str
    header: bool = True
    delimiter: str = ","
    quote_char: Optional[str] = '"'
    na_values: Tuple[str, ...] = ("",)
    trim: bool = False
    names: Optional[Tuple[str, ...]] = None
    encoding: Optional[str] = None


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

    def extend(self, other: "BadRows") -> None:
        self.rows += other.rows
        self.raw += other.raw
        self.reasons += other.reasons

    def to_batch(self, source: str, stage: str = "ingest") -> Optional[pa.RecordBatch]:
        if not self.rows:
            return None
        return quarantine_batch(pa.array([escape_bytes(r) for r in self.raw], pa.string()), self.reasons, stage,
                                source, self.rows)


def escape_bytes(raw: bytes) -> str:
    """The text of a raw record (line terminator removed).

    Valid UTF-8 without a NUL comes back as it is. Otherwise (reasons `invalid_utf8`,
    `nul_byte`) backslashes are doubled and every undecodable byte and every NUL becomes
    `\\xNN`, which `unescape_record` reverses.
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace").replace("\0", "\\x00")
    if "\0" in text:
        return text.replace("\\", "\\\\").replace("\0", "\\x00")
    return text


def unescape_record(text: str) -> bytes:
    """The original bytes of an `invalid_utf8` or `nul_byte` record from its escaped text."""
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


def block_lines(block: bytes) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, blank) of the lines of `block`, the pieces of `block.split(b"\\n")`, found
    with numpy (no bytes object per line): blank lines (empty, or a lone "\\r") are not records;
    a line of spaces is one (and is broken)."""
    data = np.frombuffer(block, np.uint8)
    newlines = np.flatnonzero(data == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    lengths = ends - starts
    blank = lengths == 0
    one = np.flatnonzero(lengths == 1)
    blank[one] = data[starts[one]] == 13
    return starts, ends, blank


def lines_array(block: bytes, starts: np.ndarray, ends: np.ndarray, blank: np.ndarray) -> pa.Array:
    """The non-blank lines of `block` (`block_lines`) as one binary array: its bytes without the
    newlines and the blank lines, with their offsets (what `pa.array([lines...], pa.binary())` gives)."""
    data = np.frombuffer(block, np.uint8)
    drop = np.zeros(len(data), bool)
    drop[ends[:-1]] = True                                  # every newline
    drop[starts[blank & (ends > starts)]] = True            # the "\r" of a blank line
    kept = ~blank
    offsets = np.zeros(int(kept.sum()) + 1, np.int32)
    np.cumsum(ends[kept] - starts[kept], out=offsets[1:])
    values = data[np.logical_not(drop, out=drop)]
    return pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def _trimmed(arr: pa.Array) -> pa.Array:
    """`utf8_trim_whitespace(arr)`, or `arr` itself when trimming would change nothing: ASCII text
    whose every value starts and ends with a printable character (a scan of the bytes, 1 ms per
    million values; the trim copies every value, 15-20 ms)."""
    if pa.types.is_string(arr.type) and len(arr) and arr.buffers()[2] is not None:
        offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2], np.uint8)
        starts, ends = offsets[:-1], offsets[1:]
        values = ends > starts
        first, last = data[starts[values]], data[ends[values] - 1]
        text = data[offsets[0]:offsets[-1]]
        if (not len(text) or text.max() < 0x7F) and (first > 0x20).all() and (last > 0x20).all():
            return arr
    return pc.utf8_trim_whitespace(arr)


def _finish_strings(columns: Dict[str, pa.Array], spec: ReaderSpec) -> Dict[str, pa.Array]:
    """Applies the reader's `trim` and `na_values` to raw string columns."""
    na = pa.array(list(spec.na_values), pa.string())
    out = {}
    for name, arr in columns.items():
        if spec.trim:
            arr = _trimmed(arr)
        if len(na):
            missing = pc.is_in(arr, value_set=na)
            if pc.any(missing).as_py():     # most columns have none: no copy of their text
                arr = pc.if_else(missing, pa.scalar(None, pa.string()), arr)
        out[name] = arr
    return out
