"""Every patch of a library's private behaviour, in one fenced package (see `fence.py`).

| patch | file | applies to | what it changes |
|---|---|---|---|
| `memo` | `memo.py` | every runner | memos of the introspection Beam repeats for every transform, bz2 of pickles, objsize's module list |
| `sampler` | `sampler.py` | an SDK harness in this process (DirectRunner, LOOPBACK) | Beam's state sampler period, 200 → 5 ms |
| `release` | `release.py` | DirectRunner | a done stage's DoFns torn down when it is done, not at the job's end |
| `heap` | `heap.py` | every runner | `gc.freeze()` while the job is built and run |
| `signals` | `signals.py` | around `Pipeline.run()` | the launcher's SIGINT/SIGTERM handlers kept (Beam's Flink job server takes SIGINT) |
| `imports` | `imports.py` | the CLI's and the run's imports | Beam and TensorFlow imported without what they load only in case, no full collections |

`tuned(runner, options)` installs the first four for building and running one job and removes
them after; `submitting()` is the `signals` patch around `Pipeline.run()`; `lean()` and
`no_full_collections()` (from `imports.py`) are scopes of their own. `DATAPREP_BEAM_TUNING=0`
turns every one off. Each checks the exact library versions it was written for and turns itself
off (one warning) on a mismatch or on any exception inside it.

Imported lazily: `from runners.tuning import ...` loads no Beam module; each patch's module is
loaded when first used.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

from runners.tuning import fence
from runners.tuning.fence import SWITCH, broken, enabled


def job_patches() -> Tuple[fence.Patch, ...]:
    """The patches installed around building and running a job, in installation order."""
    from runners.tuning import heap, memo, release, sampler

    return memo.PATCH, sampler.PATCH, release.PATCH, heap.PATCH


@contextlib.contextmanager
def tuned(runner: str, options=None) -> Iterator[Tuple[str, ...]]:
    """The job patches that apply to `runner`, installed for the block; yields their names."""
    with fence.scoped(job_patches(), runner, options) as names:
        yield names


@contextlib.contextmanager
def submitting() -> Iterator[Tuple[str, ...]]:
    """The `signals` patch, for `Pipeline.run()`: the launcher keeps its signal handlers."""
    from runners.tuning import signals

    with fence.scoped((signals.PATCH,)) as names:
        yield names


def freeze_more() -> None:
    """What was made since the block began (the built pipeline, TFT's graphs) frozen too, when
    the `heap` patch is on."""
    from runners.tuning import heap

    heap.freeze_more()


__all__ = ["SWITCH", "broken", "enabled", "freeze_more", "submitting", "tuned"]
