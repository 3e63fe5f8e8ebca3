"""Beam and TensorFlow imported without the modules they load only in case they are there.

Importing Beam and TensorFlow Transform is half of a small run (bench/RESULTS.md), and some
of it goes to modules a run never uses, which the libraries import if installed and do
without otherwise (each import is guarded by the library with `except ImportError`):

- TensorFlow's GCE cluster resolver imports `googleapiclient.discovery` (for TPU clusters
  found through the GCE API): 0.2 s, with `google.api_core` and `httplib2`;
- Beam's MongoDB connector imports `pymongo` and `bson`: 0.08 s;
- TensorFlow's `import distutils` (to find its plugin folder with
  `distutils.sysconfig.get_python_lib()`) goes through setuptools' shim, which imports
  setuptools and `pkg_resources`, and that reads the metadata of every installed
  distribution: 0.2–0.3 s. Python 3.11's own `distutils` gives the same folder.

Inside `lean()` those imports fail as if the packages were missing; after it they import
normally (nothing else in a run asks for them, and a user's code that does gets them).
Measured: `import pipeline.run, tensorflow_transform.beam` 6.2 → 5.5 s (medians of 10).

Nor does the garbage collector make full passes while they import (`no_full_collections`):
the millions of objects TensorFlow and Beam create at import set off six full collections
of 30 to 200 ms each (0.65 s in a run), which found 85 objects to free. The young
generations are still collected; what was imported is frozen at the end (`gc.freeze`), out
of every later pass.

The patch `imports`: behind the fence (`runners/tuning/fence.py`) like the others, so
`DATAPREP_BEAM_TUNING=0`, or a Beam or TensorFlow of another version than it was written for,
gives plain imports. It changes no library's code, only what an import finds while it lasts.
"""

import contextlib
import gc
import importlib
import sys
import warnings
from typing import Iterator

from runners.tuning import fence

# top-level packages imported only in case (see above); made to fail inside `lean()`
OPTIONAL = ("googleapiclient", "pymongo", "bson")


@contextlib.contextmanager
def lean() -> Iterator[None]:
    """While it lasts, importing an `OPTIONAL` package that is not imported yet fails, and
    `distutils` is Python's own (if not imported yet and Python has it)."""
    if not fence.usable(PATCH):
        yield
        return
    blocked = [name for name in OPTIONAL if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None     # the import system's "not found"
    try:
        with no_full_collections():
            _stdlib_distutils()
            yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """While it lasts, the garbage collector collects its young generations only; at its end,
    every object alive is frozen (`gc.freeze`: left out of later collections)."""
    if not fence.usable(PATCH):
        yield
        return
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.freeze()


def _stdlib_distutils() -> None:
    """Imports Python's `distutils` past setuptools' shim (a finder first on `sys.meta_path`)."""
    if "distutils" in sys.modules:
        return
    shims = [f for f in sys.meta_path if type(f).__module__ == "_distutils_hack"]
    for finder in shims:
        sys.meta_path.remove(finder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # deprecated in 3.10, gone in 3.12
            importlib.import_module("distutils")
    except ImportError:                                             # Python 3.12: the shim's it is
        pass
    except Exception as e:  # noqa: BLE001 - anything else is the patch's surprise: plain imports from now on
        fence.broke(PATCH.name, e)
    finally:
        sys.meta_path[0:0] = shims


def _nothing() -> None:
    """`lean()` and `no_full_collections()` are the patch's scopes: nothing stays installed."""


PATCH = fence.Patch("imports", "Beam and TensorFlow imported without googleapiclient, pymongo, setuptools' distutils, "
                    "and without full garbage collections", (("apache-beam", "2.62.0"), ("tensorflow", "2.16.2")),
                    _nothing, _nothing)
