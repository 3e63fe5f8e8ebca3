"""The DirectRunner lets go of a stage's DoFns once the stage is done.

Beam 2.62's FnApiRunner keeps the bundle processor of every fused stage it has run, for reuse,
until the job ends (the embedded worker shuts down processors idle for 60 s; a job shorter than
that keeps them all). A processor holds its DoFns, and the invoker of a DoFn with side inputs
keeps its argument list between calls: the last element it processed and its side inputs stay
referenced. Here those are record batches and sorted shards, 10-30 MB each at a million rows:
108 MiB of Arrow memory was still held after the last stage of a 1M-row run, and the run's peak
was 1,168 MiB (bench/RESULTS.md, eighth session).

After each bundle the runner executes, if its stage can no longer run (its inputs and side
inputs complete, nothing of it queued: no residual, timer or pending input), the processors
cached for that stage are shut down (`DoFn.teardown`, then dropped), as Beam does to idle
ones. Were the stage to run again all the same, Beam would build a new processor: the cost
of a wrong guess is time, never a result.

The patch `release`, installed for DirectRunner jobs only (the FnApiRunner is the DirectRunner's);
on Flink and Dataflow the SDK harness keeps its own cache. A surprise inside the release (a
private name of the runner that moved) turns the patch off; the bundle's own result stands.
"""

from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.worker.sdk_worker import BundleProcessorCache
from apache_beam.utils import timestamp

from runners.tuning import fence

NAME = "release"


def _stage_done(context, stage_name: str) -> bool:
    """No input of the stage can still come, and none is queued for it."""
    node = context.watermark_manager.get_stage_node(stage_name)
    if node.input_watermark() < timestamp.MAX_TIMESTAMP:
        return False
    queues = context.queues
    if any(key == stage_name for key, _ in queues.ready_inputs._q):
        return False
    for queue in (queues.watermark_pending_inputs, queues.time_pending_inputs):
        if any(key[0] == stage_name for key, _ in queue._q):
            return False
    return True


def release_done_stage(context, bundle_context_manager) -> None:
    """Shuts down the cached processors of the stage if it is done."""
    if not _stage_done(context, bundle_context_manager.stage.name):
        return
    descriptor_id = bundle_context_manager.process_bundle_descriptor.id
    for handler in bundle_context_manager.worker_handlers:
        cache = getattr(handler, "bundle_processor_cache", None)   # the embedded (in-process) worker
        if cache is not None and descriptor_id in cache.cached_bundle_processors:
            BundleProcessorCache._shutdown_cached_bundle_processors(cache.cached_bundle_processors[descriptor_id])


def install() -> None:
    """Wraps the runner's `_execute_bundle` as it is now (idempotent)."""
    inner = fn_runner.FnApiRunner._execute_bundle
    if getattr(inner, "releases_done_stages", False):
        return

    def execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        result = inner(self, runner_execution_context, bundle_context_manager, bundle_input)
        try:
            release_done_stage(runner_execution_context, bundle_context_manager)
        except Exception as e:  # noqa: BLE001 - the patch's own surprise: off, and the bundle's result stands
            fence.broke(NAME, e)
        return result

    execute_bundle.releases_done_stages = True
    execute_bundle.wrapped = inner
    fn_runner.FnApiRunner._execute_bundle = execute_bundle


def uninstall() -> None:
    """The runner's `_execute_bundle` as it was before `install()`."""
    current = fn_runner.FnApiRunner._execute_bundle
    if getattr(current, "releases_done_stages", False):
        fn_runner.FnApiRunner._execute_bundle = current.wrapped


def _direct(runner: str, options) -> bool:
    from runners import is_direct

    return is_direct(runner)


PATCH = fence.Patch(NAME, "the DirectRunner tears down a done stage's DoFns instead of at the job's end",
                    (("apache-beam", "2.62.0"),), install, uninstall, applies=_direct)
