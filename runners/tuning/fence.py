"""The fence around every patch of a library's private behaviour.

A `Patch` says what it changes, the exact versions of the libraries it was written for and
the runners it applies to; `scoped(patch)` installs it for the length of a block and removes
it after, so code that runs later in the same process (a notebook, a test session, a TFX
component) sees the library as it ships. Three rules keep a patch from ever making a run
wrong:

- **Versions**: a patch whose libraries are not the versions it was written for is not
  installed, with one warning (`written for apache-beam 2.62.0, found 2.63.0`): a private name
  that moved would otherwise fail the run, or worse, not fail it.
- **Surprises**: a patch's own code catches what it raises and calls `broke(name, error)`: the
  patch is removed for the rest of the process, one warning says so, and the library's own
  code does the work (the call that failed included). Errors of the library itself pass
  through untouched.
- **Off switch**: `DATAPREP_BEAM_TUNING=0` (or `false`, `off`, `no`) turns every patch off.

What is in the fence: `runners/tuning/__init__.py` lists the patches. Nothing outside
`runners/tuning/` imports Beam's private runner, worker and pickler modules, or `objsize`
(`tests/test_layers.py`). `tests/test_tuning_fence.py` runs real configs with the patches on and
off and compares every output file byte for byte.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

SWITCH = "DATAPREP_BEAM_TUNING"
_OFF = ("0", "false", "off", "no")


def _always(runner: str, options) -> bool:
    return True


@dataclass(frozen=True)
class Patch:
    """One patch of a library's private behaviour.

    `install` and `uninstall` must be idempotent; `requires` names each distribution it was
    written for with its exact version; `applies(runner, options)` says where it is useful
    (a DirectRunner-only patch answers False for the others)."""

    name: str
    what: str
    requires: Tuple[Tuple[str, str], ...]
    install: Callable[[], None]
    uninstall: Callable[[], None]
    applies: Callable[[str, object], bool] = field(default=_always, compare=False)


_lock = threading.RLock()
_active: Dict[str, Patch] = {}     # installed now, by name
_broken: Dict[str, str] = {}       # turned off for the rest of the process: name → why
_warned: set = set()


def enabled() -> bool:
    """False when `DATAPREP_BEAM_TUNING` turns every patch off."""
    return os.environ.get(SWITCH, "1").strip().lower() not in _OFF


def _warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    print(f"dataprep: warning: {message}", file=sys.stderr, flush=True)


def version_mismatch(patch: Patch) -> Optional[str]:
    """Why `patch` does not fit the installed libraries (`written for apache-beam 2.62.0, found
    2.63.0`), or None when every library is the version it was written for."""
    for dist, wanted in patch.requires:
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return f"written for {dist} {wanted}, which is not installed"
        if found != wanted:
            return f"written for {dist} {wanted}, found {found}"
    return None


def usable(patch: Patch) -> bool:
    """Whether `patch` may be installed now: the switch is on, it has not broken in this
    process and its libraries are the versions it was written for (one warning if not)."""
    if not enabled() or patch.name in _broken:
        return False
    mismatch = version_mismatch(patch)
    if mismatch:
        _warn_once(patch.name, f"Beam tuning {patch.name!r} is off: {mismatch} (runs go on without it)")
        return False
    return True


def active(name: str) -> bool:
    """Whether the patch `name` is installed now."""
    return name in _active


def broke(name: str, error: BaseException) -> None:
    """Called by a patch whose own code raised: the patch is removed for the rest of the
    process and one warning names it and the error; the caller then does the library's own work."""
    with _lock:
        _broken.setdefault(name, f"{type(error).__name__}: {error}")
        patch = _active.pop(name, None)
    if patch is not None:
        try:
            patch.uninstall()
        except Exception:   # noqa: BLE001 - removing a broken patch must not add a second failure
            pass
    _warn_once(name, f"Beam tuning {name!r} turned itself off after an error inside it "
                     f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                     "the run goes on without it")


def broken() -> Dict[str, str]:
    """The patches turned off in this process, with the error that did it."""
    return dict(_broken)


@contextlib.contextmanager
def scoped(patches: Sequence[Patch], runner: str = "", options=None) -> Iterator[Tuple[str, ...]]:
    """Installs the `patches` that apply to `runner` and are `usable`, for the length of the
    block; yields their names. A patch already installed by an enclosing block is left to it."""
    installed = []
    try:
        for patch in patches:
            if patch.name in _active or not patch.applies(runner, options) or not usable(patch):
                continue
            try:
                patch.install()
            except Exception as e:   # noqa: BLE001 - a patch that cannot be installed is one that broke
                _active[patch.name] = patch
                broke(patch.name, e)
                continue
            with _lock:
                _active[patch.name] = patch
            installed.append(patch)
        yield tuple(p.name for p in installed)
    finally:
        for patch in reversed(installed):
            with _lock:
                mine = _active.pop(patch.name, None) is not None
            if mine:
                patch.uninstall()
