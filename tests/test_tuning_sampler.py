"""runners/tuning/sampler.py: samplers made after install() sample every 5 ms, so a bundle's end
waits at most that long for the sampler thread; still measure the time of their steps; and
uninstall() gives Beam's default back."""

import time

import apache_beam as beam
import pytest
from apache_beam.runners.worker import statesampler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.counters import CounterFactory

from runners.tuning import sampler as beam_sampler


@pytest.fixture(autouse=True)
def _as_it_was():
    """Each test starts from Beam's default and leaves the period as it found it (`run()`
    installs the short one for good in the test process)."""
    before = statesampler.StateSampler.__init__.__defaults__
    beam_sampler.uninstall()
    yield
    statesampler.StateSampler.__init__.__defaults__ = before


def _stop_wait(seconds_running: float) -> float:
    sampler = statesampler.StateSampler("test", CounterFactory())
    sampler.start()
    time.sleep(seconds_running)
    start = time.perf_counter()
    sampler.stop()
    return time.perf_counter() - start


def test_installed_period_bounds_the_wait_at_a_bundles_end_and_uninstall_restores_beams():
    beam_default = statesampler.StateSampler("x", CounterFactory()).sampling_period_ms
    assert beam_default == statesampler.DEFAULT_SAMPLING_PERIOD_MS == 200
    beam_sampler.install()
    assert statesampler.StateSampler("x", CounterFactory()).sampling_period_ms == beam_sampler.SAMPLING_PERIOD_MS
    # after 0.4 s Beam's sampler sleeps in ~70 ms steps and stop() waits for the step under way
    # (~50 ms measured here); with 5 ms steps the wait is a few ms (the median of 5, so that one
    # scheduling hiccup on a busy machine does not decide)
    waits = sorted(_stop_wait(0.4) for _ in range(5))
    assert waits[2] < 0.03, waits
    # a period passed explicitly is still honoured
    assert statesampler.StateSampler("x", CounterFactory(), sampling_period_ms=50).sampling_period_ms == 50
    beam_sampler.uninstall()
    assert statesampler.StateSampler("x", CounterFactory()).sampling_period_ms == beam_default


def test_sampler_still_measures_the_time_of_a_step():
    beam_sampler.install()
    sampler = statesampler.StateSampler("test", CounterFactory())
    state = sampler.scoped_state("step", "process")
    sampler.start()
    with state:
        time.sleep(0.3)
    sampler.stop()
    assert 0.25 <= state.sampled_seconds() <= 0.6, state.sampled_seconds()


def test_a_pipeline_runs_the_same_with_the_short_period():
    beam_sampler.install()
    with TestPipeline() as p:
        out = p | beam.Create(range(1000)) | beam.Map(lambda x: x * 2) | beam.CombineGlobally(sum)
        assert_that(out, equal_to([999_000]))
