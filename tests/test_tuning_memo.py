"""runners/tuning/memo.py: the memos answer exactly what Beam's own functions answer, for every
kind of callable Beam inspects and for every DoFn of a real pipeline; and the pickler default."""

import functools
import sys
import types

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  TypeOptions)
from apache_beam.transforms import core, userstate
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec

from runners.tuning import memo as beam_memo
from runners import runner_args, with_default_pickler


@pytest.fixture(autouse=True)
def _memos():
    beam_memo.install()         # as run() does; each test alone sees them too


class _Stateful(beam.DoFn):
    BUFFER = BagStateSpec("buffer", beam.coders.VarIntCoder())
    TIMER = TimerSpec("flush", beam.TimeDomain.WATERMARK)

    def process(self, element, buffer=beam.DoFn.StateParam(BUFFER), timer=beam.DoFn.TimerParam(TIMER),
                side=None, *rest, key_only, **kw):
        yield element

    @classmethod
    def make(cls, a, b=2):
        return cls()

    @staticmethod
    def pure(x, y=3):
        return x


def _plain(a, b, c=1, *args, d, **kw):
    return a


@functools.wraps(_plain)
def _wrapped(*args, **kwargs):
    return _plain(*args, **kwargs)


class _Callable:
    def __call__(self, x, y=0):
        return x


CALLABLES = {
    "plain function": _plain, "lambda": lambda x, y=5: x, "wrapped": _wrapped,
    "bound method": _Stateful().process, "unbound method": _Stateful.process, "classmethod": _Stateful.make,
    "staticmethod": _Stateful.pure, "partial": functools.partial(_plain, 1), "builtin": len,
    "method descriptor": str.strip, "callable object": _Callable(), "class": _Callable,
}


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_args_and_defaults_are_beams_own_and_fresh_each_call(name):
    f = CALLABLES[name]
    want = beam_memo._ORIGINAL_ARGS_DEFAULTS(f)
    first = beam_memo.function_args_defaults(f)
    assert first == want
    first[0].append("mutated")
    first[1].append("mutated")
    assert beam_memo.function_args_defaults(f) == want         # the memo is not the caller's list


def test_a_bound_and_an_unbound_use_of_one_function_differ():
    bound, unbound = beam_memo.function_args_defaults(_Stateful().process), \
        beam_memo.function_args_defaults(_Stateful.process)
    assert unbound[0][0] == "self" and bound[0] == unbound[0][1:]


def test_every_dofn_of_a_real_pipeline_has_the_same_specs(tmp_path):
    """The demo config's whole graph (TFT's ~hundreds of DoFns included), inspected with and without
    the memo: the same state and timer specs, and the same arguments of every method."""
    from pipeline.build import build_pipeline
    from pipeline.inputs import match_inputs
    from pipeline.layout import Layout
    from tests.conftest import example_config

    example = example_config(tmp_path / "vi", rows=300)
    p = beam.Pipeline()
    build_pipeline(p, example, match_inputs(example), Layout(str(tmp_path / "run")))
    dofns = [t.transform.fn for t in _walk(p) if isinstance(t.transform, beam.ParDo)]
    dofns.append(_Stateful())
    assert len(dofns) > 100
    for dofn in dofns:
        methods = [m for m in dir(dofn) if isinstance(getattr(dofn, m, None), types.MethodType)]
        core.get_function_args_defaults = beam_memo._ORIGINAL_ARGS_DEFAULTS
        userstate.get_dofn_specs = beam_memo._ORIGINAL_DOFN_SPECS
        try:
            want_specs = userstate.get_dofn_specs(dofn)
            want_args = [core.get_function_arguments(dofn, m) for m in methods]
        finally:
            beam_memo.install()
        assert userstate.get_dofn_specs(dofn) == want_specs
        assert [core.get_function_arguments(dofn, m) for m in methods] == want_args
    assert userstate.get_dofn_specs(_Stateful()) == ({_Stateful.BUFFER}, {_Stateful.TIMER})


class _Holder:
    def with_state(self, x, buffer=beam.DoFn.StateParam(_Stateful.BUFFER)):
        yield x

    def plain(self, x):
        yield x


def test_dofns_of_one_class_with_different_instance_methods_are_told_apart():
    stateful, plain = core.CallableWrapperDoFn(_Holder().with_state), core.CallableWrapperDoFn(_Holder().plain)
    assert userstate.get_dofn_specs(stateful) == ({_Stateful.BUFFER}, set())
    assert userstate.get_dofn_specs(plain) == (set(), set())
    assert userstate.get_dofn_specs(core.CallableWrapperDoFn(_Holder().with_state)) == ({_Stateful.BUFFER}, set())
    specs = userstate.get_dofn_specs(stateful)
    specs[0].clear()                                   # the caller's set, not the memo's
    assert userstate.get_dofn_specs(stateful) == ({_Stateful.BUFFER}, set())


def _walk(p):
    out = []

    def visit(node):
        out.append(node)
        for part in node.parts:
            visit(part)
    visit(p.transforms_stack[0])
    return out


def test_views_read_and_write_the_same_options():
    options = PipelineOptions(["--runner", "FlinkRunner", "--experiments", "a", "--pickle_library", "dill"])
    typed = options.view_as(TypeOptions)
    assert options.view_as(TypeOptions) is typed                   # built once
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(SetupOptions).pickle_library == "dill"
    options.view_as(DebugOptions).add_experiment("b")
    assert options.view_as(DebugOptions).experiments == ["a", "b"]
    options.view_as(StandardOptions).runner = "DirectRunner"       # a write through one view ...
    assert options.get_all_options()["runner"] == "DirectRunner"   # ... is the options' own
    assert beam_memo._ORIGINAL_VIEW_AS(options, StandardOptions).runner == "DirectRunner"
    other = PipelineOptions([])
    assert other.view_as(StandardOptions).runner is None           # per options object


def test_cloudpickle_is_the_default_pickler_unless_one_is_given():
    assert with_default_pickler([]) == ["--pickle_library=cloudpickle"]
    assert with_default_pickler(["--pickle_library", "dill"]) == ["--pickle_library", "dill"]
    assert with_default_pickler(["--pickle_library=dill"]) == ["--pickle_library=dill"]
    built = PipelineOptions(runner_args("DirectRunner", ["--runner", "DirectRunner"]))
    assert built.view_as(SetupOptions).pickle_library == "cloudpickle"


def test_pickles_are_bz2s_own_bytes_and_load_without_the_memo():
    """Beam's pickler with the memo writes what bz2 writes: a worker without it reads them."""
    import base64
    import bz2

    from apache_beam.internal import cloudpickle_pickler, dill_pickler

    assert cloudpickle_pickler.bz2 is beam_memo.BZ2_MEMO and dill_pickler.bz2 is beam_memo.BZ2_MEMO
    for obj in [(), {}, _Stateful(), beam.Map(len).fn, {"k": list(range(5000))}]:
        for lib in (cloudpickle_pickler, dill_pickler):
            encoded = lib.dumps(obj)
            again = lib.dumps(obj)                              # from the memo
            raw = bz2.decompress(base64.b64decode(encoded))
            assert again == encoded
            assert base64.b64decode(encoded) == bz2.compress(raw, compresslevel=9)
            assert type(lib.loads(encoded)) is type(obj)


def test_the_bz2_memo_answers_as_bz2_and_stays_bounded():
    import bz2
    import os

    memo = beam_memo.Bz2Memo(max_item=1000, max_total=5000)
    payloads = [os.urandom(n) for n in (0, 10, 999, 1000, 1001, 4000)] * 2
    for data in payloads:
        packed = memo.compress(data)
        assert packed == bz2.compress(data, 9)
        assert memo.compress(data, compresslevel=1) == bz2.compress(data, 1)
        assert memo.decompress(packed) == data
        assert memo._total <= 5000 + 1000                           # past the total by one pair at most
    assert all(len(key[1]) + len(value) <= 1000 for key, value in memo._kept.items())
    small = b"x" * 10
    memo.decompress(memo.compress(small))
    assert ("c", small, 9) in memo._kept and ("d", bz2.compress(small, 9), None) in memo._kept
    big = bz2.compress(b"\0" * 100_000)                              # a small input, a large answer: not kept
    assert len(big) < 1000 and memo.decompress(big) == b"\0" * 100_000
    assert ("d", big, None) not in memo._kept
    with pytest.raises(OSError):
        memo.decompress(b"not bz2")


def test_modules_globals_are_objsizes_own_and_follow_new_imports(tmp_path, monkeypatch):
    import importlib

    import numpy as np
    from apache_beam.runners.worker import statecache
    from objsize import traverse

    def stable():   # ids of the globals dicts objsize excludes (a few sys.modules entries are not
        out = set()  # modules, and make a new dict at every vars(): excluding one excludes nothing)
        for module in list(sys.modules.values()):
            try:
                if vars(module) is vars(module):
                    out.add(id(vars(module)))
            except TypeError:
                pass
        return out

    memo = beam_memo.ModulesGlobals()
    assert len(list(memo())) == len(list(beam_memo._ORIGINAL_MODULES_GLOBALS()))
    assert stable() <= {id(d) for d in memo()}
    kept = memo._globals
    assert [id(d) for d in memo()] and memo._globals is kept          # kept between calls
    (tmp_path / "memo_probe_module.py").write_text("BIG = list(range(1000))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("memo_probe_module")
    ids = {id(d) for d in memo()}
    assert id(vars(probe)) in ids and memo._globals is not kept
    assert stable() <= ids and len(ids) >= len(stable())
    # Beam's cache weights, with the memo installed (by the fixture) and without it
    values = [b"/a/path", {"k": np.arange(1000)}, [probe, vars(probe)], (1, "two", 3.0)]
    with_memo = [statecache.get_deep_size(v) for v in values]
    monkeypatch.setattr(traverse, "_iter_modules_globals", beam_memo._ORIGINAL_MODULES_GLOBALS)
    assert with_memo == [statecache.get_deep_size(v) for v in values]
    del sys.modules["memo_probe_module"]
