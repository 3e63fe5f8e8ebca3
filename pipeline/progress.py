"""The progress line a person watches on stderr while a run goes on.

A thread prints the phase (building the job, reading the input, the later stages, the
report, the store), the bytes read of the input's total (from the small files the read
stage leaves, `transforms.read.report_progress`) and the time elapsed, at most once a
second: one line rewritten in place on a terminal, plain lines otherwise (a new one when
the phase or the share read changes, or every 10 s).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional, TextIO


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 or n == 0 else f"{n / 1e3:.0f} kB"


class Progress:
    """`with Progress(total_bytes, folder) as progress: progress.phase("...")`."""

    def __init__(self, total_bytes: int, folder: Optional[str], stream: Optional[TextIO] = None,
                 interval: float = 1.0, enabled: bool = True):
        self._total = max(int(total_bytes), 0)
        self._folder = folder
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval
        self._enabled = enabled
        self._phase = "starting"
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_text = ""
        self._last_time = 0.0

    def phase(self, name: str) -> None:
        self._phase = name
        self._tick(force=True)

    def read_bytes(self) -> int:
        if not self._folder or not os.path.isdir(self._folder):
            return 0
        done = 0
        for name in os.listdir(self._folder):
            if name.endswith(".tmp"):
                continue
            try:
                with open(os.path.join(self._folder, name), encoding="ascii") as f:
                    done += int(f.read() or 0)
            except (OSError, ValueError):
                continue
        return done

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        text = f"dataprep: {self._phase}"
        if self._phase.startswith("running") and self._total:
            done = min(self.read_bytes(), self._total)
            stage = "ingest" if done < self._total else "clean → write"
            text += f" [{stage}]: read {_mb(done)} of {_mb(self._total)} ({100 * done // self._total}%)"
        return f"{text}, {elapsed:.0f} s"

    def _tick(self, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last_time < self._interval and not force:
            return
        line = self.line()
        body = line.rsplit(",", 1)[0]
        if self._tty:
            self._stream.write("\r\033[K" + line)
        elif body != self._last_text or now - self._last_time >= 10:
            self._stream.write(line + "\n")
        else:
            return
        self._stream.flush()
        self._last_text, self._last_time = body, now

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def __enter__(self) -> "Progress":
        if self._enabled:
            self._thread = threading.Thread(target=self._loop, name="dataprep-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._enabled and self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()
