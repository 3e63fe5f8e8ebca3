"""What differs per runner: path rules, extra options, and the options recorded for a run.

One module per runner (`dataflow.py`, `flink.py`); this file dispatches to them. Nothing
here knows the config: problems are `RunnerOptionsError`s naming the option, which the
launcher reports as bad arguments (exit 2).
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

_SECRET = re.compile(r"(?i)(password|passwd|secret|token|credential|key)")


class RunnerOptionsError(ValueError):
    """A runner option is missing or wrong, worded as `--option: what is wrong`."""


def check_runner_paths(runner: str, output: str, inputs: Sequence[str] = (), dry_run: bool = False) -> None:
    """A remote runner's workers cannot see this machine's disk: refuse local paths.

    Flink and Direct runners here run on this machine, so local paths are fine for them.

    Raises:
      RunnerOptionsError: output (or, for a real submission, an input) is a local path on Dataflow.
    """
    from runners.dataflow import is_dataflow

    if not is_dataflow(runner):
        return
    if "://" not in output:
        raise RunnerOptionsError(f"output.path: {runner} workers cannot write the local path {output}; "
                                 "use a gs:// path (--output gs://bucket/dir)")
    for i, path in enumerate(inputs):
        if "://" not in path and not dry_run:
            raise RunnerOptionsError(f"inputs[{i}].path: {runner} workers cannot read the local path {path}; "
                                     "copy it to gs:// first")


def runner_args(runner: str, beam_args: Sequence[str]) -> List[str]:
    """The Beam arguments with what this runner needs added (--setup_file for Dataflow,
    the job server and environment for Flink).

    Raises:
      RunnerOptionsError: the runner cannot run with these options (named in the message).
    """
    from runners.dataflow import dataflow_args, is_dataflow
    from runners.flink import flink_args, is_flink

    if is_dataflow(runner):
        return dataflow_args(beam_args)
    if is_flink(runner):
        return flink_args(beam_args)
    return list(beam_args)


def sanitized_options(options: PipelineOptions) -> Dict[str, object]:
    """The pipeline options worth recording, with anything secret-looking removed."""
    out = {}
    for k, v in sorted(options.get_all_options(drop_default=True).items()):
        out[k] = "<redacted>" if _SECRET.search(k) else v
    return out
