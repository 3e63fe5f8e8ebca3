"""What differs per runner: path rules, extra options, and the options recorded for a run.

One module per runner (`dataflow.py`, `flink.py`); this file dispatches to them. Nothing
here knows the config: problems are `RunnerOptionsError`s naming the option, which the
launcher reports as bad arguments (exit 2).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Dict, List, Sequence

if TYPE_CHECKING:   # Beam is imported where it is used: `runners.tuning.imports` must load without it
    from apache_beam.options.pipeline_options import PipelineOptions

_SECRET = re.compile(r"(?i)(password|passwd|secret|token|credential|key)")


class RunnerOptionsError(ValueError):
    """A runner option is missing or wrong, worded as `--option: what is wrong`."""


def unknown_beam_args(beam_args: Sequence[str]) -> List[str]:
    """The arguments no Beam PipelineOptions class declares (Beam would drop them with a
    log warning): a mistyped `--ouput` or `--direct_num_wokers 2`. Parsed as Beam parses
    them, with every options class loaded, this project's (`FlinkBatchOptions`) included.
    A value following an unknown flag is part of it, not reported apart.

    Raises:
      RunnerOptionsError: a known option's value is wrong (`--direct_num_workers abc`), in
        one line naming it, where Beam's parser prints its whole usage (108 lines) first.
    """
    import runners.dataflow  # noqa: F401  (their options classes register on import)
    import runners.flink  # noqa: F401
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class OneLineParser(_BeamArgumentParser):
        def error(self, message: str):
            if message.startswith("ambiguous option: "):   # as Beam's: an unknown option, reported below
                return
            raise RunnerOptionsError(re.sub(r"^argument ([^:]+): ", lambda m: f"{m.group(1).split('/')[0]}: ",
                                            message))

    parser = OneLineParser()
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    _, unknown = parser.parse_known_args(list(beam_args))
    out: List[str] = []
    for arg in unknown:
        if arg.startswith("-") or not out or "=" in out[-1]:
            out.append(arg)
        else:   # the value of the unknown flag before it
            out[-1] = f"{out[-1]} {arg}"
    return out


def is_direct(runner: str) -> bool:
    """`runner` names Beam's DirectRunner (which runs batch jobs on its in-process FnApiRunner)."""
    return runner.lower() in ("", "direct", "directrunner", "switchingdirectrunner")


def check_runner(runner: str) -> None:
    """The runner named by `--runner` exists (as Beam's `create_runner` resolves names).

    Raises:
      RunnerOptionsError: no such runner.
    """
    from apache_beam.runners.runner import _RUNNER_MAP

    path = _RUNNER_MAP.get(runner.lower(), _RUNNER_MAP.get(runner.lower() + "runner", runner))
    if "." in path:
        module, _, name = path.rpartition(".")
        try:
            if hasattr(importlib.import_module(module), name):
                return
        except ImportError:
            pass
    known = ", ".join(sorted({p.rsplit(".", 1)[-1] for p in _RUNNER_MAP.values() if "experimental" not in p}))
    raise RunnerOptionsError(f"--runner: unknown runner {runner!r} (known: {known})")


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


def runner_args(runner: str, beam_args: Sequence[str], user_modules: Sequence[str] = ()) -> List[str]:
    """The Beam arguments with what this runner needs added (--setup_file and the user's
    modules beside the config, `user_modules`, for Dataflow; the job server and
    environment for Flink, whose LOOPBACK workers run here and see the config's folder).

    Raises:
      RunnerOptionsError: the runner cannot run with these options (named in the message).
    """
    from runners.dataflow import dataflow_args, is_dataflow
    from runners.flink import flink_args, is_flink

    beam_args = with_default_pickler(beam_args)
    if is_dataflow(runner):
        return dataflow_args(beam_args, user_modules)
    if is_flink(runner):
        return flink_args(beam_args)
    return list(beam_args)


DEFAULT_PICKLER = "cloudpickle"


def with_default_pickler(beam_args: Sequence[str]) -> List[str]:
    """`beam_args` with `--pickle_library cloudpickle` unless one is given. Beam 2.62's default,
    dill, pickles each DoFn by walking module dictionaries and resets the logging cache at
    every call; building and translating the 10k-row benchmark's ~1,000 transforms took 2 s
    longer with it (bench/RESULTS.md). Workers read the option, so every runner unpickles with
    the library that pickled."""
    args = list(beam_args)
    if not has_flag(args, "--pickle_library"):
        args.append(f"--pickle_library={DEFAULT_PICKLER}")
    return args


def has_flag(args: Sequence[str], flag: str) -> bool:
    """Whether `flag` is among `args`, as `--flag value` or `--flag=value`."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


REDACTED = "<redacted>"
# user:password@ in a URL (the user name stays: it says whose, not how)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]*):[^\s/@'\"]*@")
# key=value or key: value whose key looks secret (`password=`, `api_key: `, `X-Auth-Token=`); a key
# naming where a secret is (`password_env: DATAPREP_MYSQL_PASSWORD`) is not one
_SECRET_VALUE = re.compile(
    r"(?i)(\b[\w.-]*(?:password|passwd|pwd|secret|token|credential|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"authorization)(?![\w.-]*_env\b)[\w.-]*[\"']?\s*[=:]\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&\"'}\]]+)")


def redact(text: str) -> str:
    """`text` with secrets replaced by <redacted>, found by value: URL credentials
    (`scheme://user:pw@host`) and `key=value` / `key: value` pairs whose key looks secret.
    Applied to whatever is recorded or printed: options, `source:` notes, the config text."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    return _SECRET_VALUE.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET.search(str(k)) else _redact_value(v) for k, v in value.items()}
    return value


def sanitized_options(options: PipelineOptions) -> Dict[str, object]:
    """The pipeline options worth recording, with anything secret removed: by the option's
    name (`--db_password`), and by value (`--hdfs_host=http://u:pw@h`, `--labels=password=x`)."""
    out = {}
    for k, v in sorted(options.get_all_options(drop_default=True).items()):
        out[k] = REDACTED if _SECRET.search(k) else _redact_value(v)
    return out
