"""What differs per runner: path rules and the options recorded for a run."""

from __future__ import annotations

import re
from typing import Dict

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import ConfigError

LOCAL_RUNNERS = {"DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                 "PrismRunner"}
_SECRET = re.compile(r"(?i)(password|passwd|secret|token|credential|key)")


def is_local(runner: str) -> bool:
    return runner.split(".")[-1] in LOCAL_RUNNERS


def check_runner_paths(runner: str, output: str) -> None:
    """A remote runner's workers cannot see this machine's disk: refuse a local output.

    Raises:
      ConfigError: output is a local path and the runner is not local.
    """
    if not is_local(runner) and "://" not in output and runner.split(".")[-1] == "DataflowRunner":
        raise ConfigError(f"output.path: {runner} workers cannot write the local path {output}; "
                          "use a gs:// path (--output gs://bucket/dir)")


def sanitized_options(options: PipelineOptions) -> Dict[str, object]:
    """The pipeline options worth recording, with anything secret-looking removed."""
    out = {}
    for k, v in sorted(options.get_all_options(drop_default=True).items()):
        out[k] = "<redacted>" if _SECRET.search(k) else v
    return out
