"""runners/tuning/release.py: once a stage of the DirectRunner is done, its DoFns are torn down
and let go, so that the last element a DoFn with a side input processed is not held until
the job ends (Beam's invoker keeps it in its argument list). Beam's own behaviour is the
reference: without `install()` the element is still alive in the next stage."""

import gc
import weakref

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import fn_runner

from runners.tuning import release as beam_release

_SEEN = []      # weak references to the elements _HoldFn processed
_TORN = []      # one entry per _HoldFn.teardown
_CHECKED = []   # (teardowns, elements alive) seen from the next stage


class _Big:
    def __init__(self, n: int):
        self.n = n
        self.payload = bytearray(1 << 20)


class _HoldFn(beam.DoFn):
    def process(self, element, side):
        _SEEN.append(weakref.ref(element))
        yield element.n + side

    def teardown(self):
        _TORN.append(True)


def _check(_):
    gc.collect()
    _CHECKED.append((len(_TORN), sum(ref() is not None for ref in _SEEN)))


def _run() -> tuple:
    for seen in (_SEEN, _TORN, _CHECKED):
        seen.clear()
    with beam.Pipeline(runner="DirectRunner") as p:
        side = p | "Side" >> beam.Create([10])
        _ = (p | "Rows" >> beam.Create([1, 2, 3])
             | "Big" >> beam.Map(_Big)
             | "Hold" >> beam.ParDo(_HoldFn(), beam.pvalue.AsSingleton(side))   # same stage as Big
             | "Key" >> beam.Map(lambda n: (0, n))
             | "Group" >> beam.GroupByKey()                                       # the next stage
             | "Check" >> beam.Map(_check))
    assert len(_SEEN) == 3 and len(_CHECKED) == 1
    return _CHECKED[0]


def test_a_done_stage_is_torn_down_and_its_last_element_let_go():
    was = getattr(fn_runner.FnApiRunner._execute_bundle, "releases_done_stages", False)
    try:
        beam_release.uninstall()
        assert _run() == (0, 1)     # Beam alone: not torn down yet, its last element alive
        beam_release.install()
        beam_release.install()      # idempotent: one wrapper
        assert not getattr(fn_runner.FnApiRunner._execute_bundle.wrapped, "releases_done_stages", False)
        assert _run() == (1, 0)     # torn down before the next stage ran, nothing held
    finally:
        (beam_release.install if was else beam_release.uninstall)()
