"""One line for a failed run: what the CLI prints after `dataprep: run failed:` and the run records.

A disk fault anywhere in the error's chain is named with its path; a portable runner's
worker traceback is reduced to the line that names the error; credentials are redacted.
"""

from __future__ import annotations

import errno
import re
from typing import Optional

from pipeline.metadata import without_sql
from runners import redact


class PipelineFailure(RuntimeError):
    """The Beam job or its bookkeeping failed; the run is recorded as FAILED."""


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^:\]\[]+?): '([^']+)'")


def failure_line(e: BaseException) -> str:
    """One line for a failed run, credentials in it redacted (`redact`)."""
    return redact(without_sql(_failure_line(e)))   # no SQL of ML Metadata's in the line


def _failure_line(e: BaseException) -> str:
    """One line for a failed run. A disk fault anywhere in the chain (Beam re-raises a DoFn's
    OSError as a RuntimeError carrying its text) is named with its path: `No space left on
    device: /out/.staging-…/raw/train/part-00000-of-00002.parquet`; otherwise the error's first line."""
    seen = set()
    x: Optional[BaseException] = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in _DISK_ERRNOS and x.filename:
            return f"{x.strerror}: {x.filename}"
        found = _ERRNO_TEXT.search(str(x))
        if found and int(found.group(1)) in _DISK_ERRNOS:
            return f"{found.group(2)}: {found.group(3)}"
        x = x.__cause__ or x.__context__
    lines = [line for line in f"{type(e).__name__}: {e}".splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    first = lines[0]
    if first.endswith(_TRACEBACK) and len(lines) > 1:
        # A portable runner (Flink) reports a worker's failure as its Python traceback: the
        # line that names the error is the first unindented one after the traceback's frames.
        raised = next((line for line in lines[1:] if not line.startswith(" ")), lines[-1])
        return f"{first[:-len(_TRACEBACK)].rstrip()} {raised.strip()}"
    return first


_TRACEBACK = "Traceback (most recent call last):"
