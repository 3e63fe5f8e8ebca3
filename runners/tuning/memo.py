"""Memos for the introspection Beam 2.62 repeats for every transform (the patch `memo`).

Building and translating the pipeline costs more than running it on small data, and much of
that is Beam asking the same questions again (profile of the 10k-row benchmark, bench/RESULTS.md):

- `apache_beam.transforms.core.get_function_args_defaults` runs `inspect.signature` on every
  method of a DoFn each time `userstate.get_dofn_specs` looks for state and timers: about 30
  methods, 8 times per ParDo (construction, two `to_runner_api` passes, the DirectRunner's
  checks, each bundle processor), for about 1,000 ParDos, most of them TFT's. A function's
  signature does not change, so it is computed once per function (and once per bound/unbound
  use: binding drops the first parameter).
- `userstate.get_dofn_specs` itself lists and wraps every method of the DoFn each time; its
  answer depends only on the DoFn's class and on the methods set on the instance (a `Map`'s
  function), so it is computed once per such pair.
- Beam's picklers compress every pickle with bz2 at level 9 and decompress it on every load:
  about 3,300 compressions and 4,200 decompressions at 10k rows, of only ~900 and ~800 distinct
  payloads (a ParDo's empty `args` and `kwargs` are pickled again for every ParDo, a DoFn
  again for its `DoFnInfo` and for each bundle processor). bz2's output depends only on its
  input, so each payload is compressed (and each compressed payload expanded) once; the bytes
  are the ones bz2 gives, so a worker without the memo reads them unchanged.
- `PipelineOptions.view_as` builds an `ArgumentParser` of every option Beam knows, twice per
  `Pipeline.apply`. A view stores nothing of its own (reads and writes go to the options' shared
  `_all_options`), so the view of one class is built once per options object.
- The SDK harness weighs every side input it caches with `objsize`, which first lists the
  globals dict of every module in `sys.modules` to leave them out of the size: ~5,600 modules
  with TensorFlow loaded, 3.5 ms a side input, 0.4 s for the 118 of a 10k-row run. The list
  only changes when `sys.modules` does, so it is kept until then.

Each returns what the original returns: fresh lists from the memo, bz2's own bytes, and a view
that reads and writes the same options. `tests/test_tuning_memo.py` checks them against the originals.

A memo whose own code raises hands the call to Beam's function and turns the patch off
(`fence.broke`): the call's answer is Beam's, whatever happened in the memo.
"""

import bz2
import sys
import threading
import types
import weakref
from typing import Any, List, Tuple

from apache_beam.internal import cloudpickle_pickler, dill_pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, userstate
from objsize import traverse as objsize_traverse

from runners.tuning import fence

NAME = "memo"
_ORIGINAL_ARGS_DEFAULTS = core.get_function_args_defaults
_ORIGINAL_VIEW_AS = PipelineOptions.view_as
_ORIGINAL_DOFN_SPECS = userstate.get_dofn_specs
_ORIGINAL_MODULES_GLOBALS = objsize_traverse._iter_modules_globals

_signatures: "weakref.WeakKeyDictionary[types.FunctionType, dict]" = weakref.WeakKeyDictionary()
_specs: dict = {}
_views: "weakref.WeakKeyDictionary[PipelineOptions, dict]" = weakref.WeakKeyDictionary()
_MISSING = object()


def function_args_defaults(f: Any) -> Tuple[List[str], List[Any]]:
    """`core.get_function_args_defaults(f)`, computed once per plain or bound function."""
    try:
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            func, bound = f.__func__, True
        elif isinstance(f, types.FunctionType):
            func, bound = f, False
        else:                                   # builtins, partials, callable objects: not memoised
            func = None
        found = _signatures.get(func, {}).get(bound, _MISSING) if func is not None else _MISSING
    except Exception as e:  # noqa: BLE001 - the memo's own surprise: Beam answers
        fence.broke(NAME, e)
        return _ORIGINAL_ARGS_DEFAULTS(f)
    if found is _MISSING:
        found = _ORIGINAL_ARGS_DEFAULTS(f)
        if func is not None:
            _signatures.setdefault(func, {})[bound] = found
    args, defaults = found
    return list(args), list(defaults)


def dofn_specs(dofn: Any):
    """`userstate.get_dofn_specs(dofn)`, computed once per DoFn class and instance methods."""
    try:
        own = tuple(sorted((name, value.__func__) for name, value in vars(dofn).items()
                           if isinstance(value, types.MethodType)))
        key = (type(dofn), own)
        hash(key)
    except TypeError:                       # no __dict__, or an unhashable function: not memoised
        return _ORIGINAL_DOFN_SPECS(dofn)
    except Exception as e:  # noqa: BLE001
        fence.broke(NAME, e)
        return _ORIGINAL_DOFN_SPECS(dofn)
    if key not in _specs:
        _specs[key] = _ORIGINAL_DOFN_SPECS(dofn)
    states, timers = _specs[key]
    return set(states), set(timers)


def view_as(self: PipelineOptions, cls: type) -> PipelineOptions:
    """`PipelineOptions.view_as(cls)`, built once per options object and class."""
    try:
        per = _views.setdefault(self, {})
        view = per.get(cls)
    except Exception as e:  # noqa: BLE001 - an options object that cannot be weakly referenced, say
        fence.broke(NAME, e)
        return _ORIGINAL_VIEW_AS(self, cls)
    if view is None:
        view = per[cls] = _ORIGINAL_VIEW_AS(self, cls)
    return view


class ModulesGlobals:
    """objsize's `_iter_modules_globals()` (the `vars()` of every module in `sys.modules`), listed
    again only when `sys.modules` has changed (its size or its newest entry)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._globals: tuple = ()

    def __call__(self):
        try:
            key = (len(sys.modules), next(reversed(sys.modules), None))
            if key != self._key:
                with self._lock:
                    self._globals = tuple(_ORIGINAL_MODULES_GLOBALS())
                    self._key = key
            return iter(self._globals)
        except Exception as e:  # noqa: BLE001
            fence.broke(NAME, e)
            return _ORIGINAL_MODULES_GLOBALS()


MODULES_GLOBALS = ModulesGlobals()


class Bz2Memo:
    """`bz2.compress` and `bz2.decompress` for Beam's picklers, each answer kept by its input.

    A pair of input and answer of up to `max_item` bytes together is remembered, until the
    kept bytes pass `max_total`; then the memo starts again empty (the payloads of one
    pipeline are a few MB). The bound counts the answer too: a small compressed input can
    expand to a large pickle. Everything else of the `bz2` module is bz2's own."""

    def __init__(self, max_item: int = 1 << 20, max_total: int = 64 << 20):
        self._max_item, self._max_total = max_item, max_total
        self._lock = threading.Lock()
        self._kept: dict = {}
        self._total = 0

    def __getattr__(self, name: str):
        return getattr(bz2, name)

    def _memo(self, key, compute):
        value = self._kept.get(key)
        if value is None:
            value = compute()
            size = len(key[1]) + len(value)
            if size <= self._max_item:
                with self._lock:
                    if self._total > self._max_total:
                        self._kept.clear()
                        self._total = 0
                    self._kept[key] = value
                    self._total += size
        return value

    def compress(self, data, compresslevel: int = 9) -> bytes:
        data = bytes(data)
        return self._memo(("c", data, compresslevel), lambda: bz2.compress(data, compresslevel))

    def decompress(self, data) -> bytes:
        data = bytes(data)
        return self._memo(("d", data, None), lambda: bz2.decompress(data))


BZ2_MEMO = Bz2Memo()


def install() -> None:
    """Puts the memos in place of Beam's functions (idempotent)."""
    core.get_function_args_defaults = function_args_defaults
    userstate.get_dofn_specs = dofn_specs
    PipelineOptions.view_as = view_as
    cloudpickle_pickler.bz2 = dill_pickler.bz2 = BZ2_MEMO
    objsize_traverse._iter_modules_globals = MODULES_GLOBALS


def uninstall() -> None:
    """Beam's functions again; the memos are emptied (a later install starts afresh)."""
    core.get_function_args_defaults = _ORIGINAL_ARGS_DEFAULTS
    userstate.get_dofn_specs = _ORIGINAL_DOFN_SPECS
    PipelineOptions.view_as = _ORIGINAL_VIEW_AS
    cloudpickle_pickler.bz2 = dill_pickler.bz2 = bz2
    objsize_traverse._iter_modules_globals = _ORIGINAL_MODULES_GLOBALS
    _specs.clear()
    _views.clear()


PATCH = fence.Patch(NAME, "memos of the introspection Beam repeats per transform, bz2 of pickles, objsize's "
                          "module list", (("apache-beam", "2.62.0"), ("objsize", "0.7.1")), install, uninstall)
