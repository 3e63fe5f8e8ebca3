"""The period of Beam's state sampler, shortened so that a bundle's end does not wait for it.

Every bundle the Python SDK harness runs starts a `StateSampler` thread that measures the time
spent in each step. In Beam 2.62 the thread sleeps in steps that start at 2 ms and grow by 1.2×
up to `sampling_period_ms` (200 ms), and the bundle's end joins it: it waits for the sleep under
way to finish, about a twelfth of the bundle's length and up to 200 ms, with the GIL free and
nothing done. The DirectRunner runs its fused stages one after another, each as a bundle (113
for the benchmark's config then), so at 10k rows a run waited 0.3 s in total, and 0.7 s at 1M
rows (bench/RESULTS.md).

With a 5 ms period the wait is at most 5 ms; the thread wakes 200 times a second to add the
elapsed time to the current step (a lock and a few additions, outside the GIL). What the
sampler reports (milliseconds per step, lull detection) is unchanged, only finer grained.

The patch `sampler`, installed for the job where the SDK harness runs in the launching process:
the DirectRunner's, and a portable runner's LOOPBACK worker; separate worker processes (Flink's
worker pool, Dataflow) keep Beam's default.
"""

from apache_beam.runners.worker import statesampler

from runners.tuning import fence

SAMPLING_PERIOD_MS = 5
_BEAM_DEFAULTS = statesampler.StateSampler.__init__.__defaults__


def install(period_ms: int = SAMPLING_PERIOD_MS) -> None:
    """New `StateSampler`s sample every `period_ms` at most (idempotent)."""
    statesampler.StateSampler.__init__.__defaults__ = (period_ms,)


def uninstall() -> None:
    """Beam's own default again."""
    statesampler.StateSampler.__init__.__defaults__ = _BEAM_DEFAULTS


def in_process_harness(runner: str, options) -> bool:
    """The SDK harness runs in this process: the DirectRunner, or a LOOPBACK environment."""
    from apache_beam.options.pipeline_options import PortableOptions

    from runners import is_direct

    if is_direct(runner) or options is None:
        return True

    return (options.view_as(PortableOptions).environment_type or "").upper() == "LOOPBACK"


PATCH = fence.Patch("sampler", "Beam's state sampler sleeps at most 5 ms, so a bundle's end does not wait up to 200 ms",
                    (("apache-beam", "2.62.0"),), install, uninstall, applies=in_process_harness)
