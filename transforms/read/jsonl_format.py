"""JSON lines of a block → string columns; a missing key is a null value."""

import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from transforms.batches import RECORD, ROW
from transforms.read.records import BadRows, ReaderSpec, _finish_strings, block_lines


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
    _, _, blank = block_lines(block)
    bad = BadRows()
    values: Dict[str, List[Optional[str]]] = {c: [] for c in wanted}
    rows: List[int] = []
    records: List[bytes] = []
    for i in np.flatnonzero(~blank):
        line = lines[i]
        n = first_line + int(i)
        if b"\0" in line:
            bad.add(n, line, "nul_byte")
            continue
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
        texts = [_json_text(obj.get(c)) for c in wanted]
        if b"\\u0000" in line and any(t is not None and "\0" in t for t in texts):   # a NUL written as \u0000
            bad.add(n, line, "nul_byte")
            continue
        for c, t in zip(wanted, texts):
            values[c].append(t)
        rows.append(n)
        records.append(line)
    if not rows:
        return None, bad
    columns = _finish_strings({c: pa.array(values[c], pa.string()) for c in wanted}, spec)
    arrays = [columns[c] for c in wanted] + [pa.array(rows, pa.int64()), pa.array(records, pa.binary())]
    return pa.RecordBatch.from_arrays(arrays, names=list(wanted) + [ROW, RECORD]), bad
