"""SIGINT and SIGTERM during a run: `RunCanceled`, raised where the launcher is, and checked again
at each of its next steps, so that a canceled run is closed CANCELED and never reaches COMPLETE.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import List, Optional


class RunCanceled(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the launcher: the run is recorded CANCELED and its files
    removed; the CLI exits 128 + the signal's number (130, 143).

    A KeyboardInterrupt, because that is what library code lets through where it catches
    everything else (Beam's IPython probe, run on every `apply`, swallowed a plain
    BaseException, and the run went on to COMPLETE)."""

    # (message, signum) as args: Beam re-raises an exception from a DoFn as
    # type(e)(e.args[0] + " [while running ...]", *e.args[1:])
    def __init__(self, message: str, signum: int, run_id: Optional[str] = None):
        super().__init__(message, signum)
        self.signum = signum
        self.run_id = run_id

    @classmethod
    def by(cls, signum: int) -> "RunCanceled":
        return cls(f"canceled by {signal.Signals(signum).name}", signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def cancel_on_signals():
    """SIGINT and SIGTERM become RunCanceled in the main thread (where the DirectRunner's job
    and this launcher run), so the run is closed as CANCELED, not left RUNNING or FAILED
    with a traceback. Elsewhere (a run started from a thread) the handlers stay as they are.

    Yields `check()`, which raises RunCanceled again if a signal came: the first one is
    raised wherever the main thread is, and code there may swallow it (a bare `except:`);
    the run checks at its next steps, so a canceled run never reaches COMPLETE."""
    received: List[int] = []

    def check() -> None:
        if received:
            raise RunCanceled.by(received[0])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def cancel(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        # Beam logs an exception leaving a DoFn with its traceback: a cancel is one line.
        logging.disable(logging.ERROR)
        received.append(signum)
        raise RunCanceled.by(signum)

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
