"""The garbage collector leaves the objects of the libraries and of the built job alone while the
job is built and run (the patch `heap`).

A run holds millions of long-lived objects (TensorFlow, Beam, TFT's traced graphs, the pipeline
itself) that no collection will ever free. Building the graph, running the pipeline and loading
the saved graph allocate enough to set off many full collections, each walking all of them.
`gc.freeze()` moves what is alive out of the collector's sight; at the patch's end
`gc.unfreeze()` gives it back, so the process is as before (bench/RESULTS.md: GC time in a 10k
run 1.06 → 0.40 s with `no_full_collections` at import, the rest here).

`freeze_more()` freezes what was made since (the traced graphs and the pipeline, once built).
"""

import gc

from runners.tuning import fence

NAME = "heap"


def install() -> None:
    gc.freeze()


def uninstall() -> None:
    gc.unfreeze()


def freeze_more() -> None:
    """While the patch is installed: what is alive now is frozen too."""
    if fence.active(NAME):
        gc.freeze()


PATCH = fence.Patch(NAME, "gc.freeze() while the job is built and run (no full collections over the libraries)",
                    (), install, uninstall)
