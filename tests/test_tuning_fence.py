"""runners/tuning/: the fence around the patches of Beam's (and Python's) private behaviour.

- a run with the patches and one without (`DATAPREP_BEAM_TUNING=0`, in a fresh process) write
  the same files, byte for byte, for the example's config and for Adult with features;
- after a run the process sees plain Beam: every patched name is Beam's own again;
- a patch written for other library versions is not installed (one warning); a patch whose own
  code raises turns itself off (one warning) and the call gets Beam's own answer;
- the off switch installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from runners import tuning
from runners.tuning import fence
from tests.conftest import ROOT, TESTS, example_config

# TensorFlow writes these differently on every run of the same code (see bench/same_outputs.py)
UNSTABLE = ("saved_model.pb", "fingerprint.pb", "report.json", "report.html", "_SUCCESS")


def _digests(run_dir: str) -> dict:
    out = {}
    run_id = os.path.basename(run_dir.rstrip("/"))
    for folder, _, files in os.walk(run_dir):
        for name in files:
            if name in UNSTABLE or "variables" in folder.split(os.sep):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            if name == "label_studio_tasks.json":   # each task names its run (to link an export back)
                data = data.replace(run_id.encode(), b"RUN")
            out[os.path.relpath(path, run_dir)] = hashlib.md5(data).hexdigest()
    return out


def _run_untuned(config: str, out: str) -> dict:
    env = dict(os.environ, DATAPREP_BEAM_TUNING="0", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config, "--output", out, "--store",
                           os.path.join(out, "metadata.sqlite"), "--no-progress"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Beam tuning" not in proc.stderr     # off means off, without a word
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_files(tuned_dir: str, untuned_dir: str) -> int:
    a, b = _digests(tuned_dir), _digests(untuned_dir)
    assert a.keys() == b.keys()
    differ = sorted(k for k in a if a[k] != b[k])
    assert not differ, differ
    return len(a)


def test_adult_with_features_is_byte_identical_with_tuning_off(adult_run, tmp_path):
    summary = _run_untuned(os.path.join(TESTS, "configs", "adult.yaml"), str(tmp_path))
    assert summary["rows"] == adult_run["summary"]["rows"]
    files = _same_files(adult_run["summary"]["output"], summary["output"])
    assert files >= 20 and any(f.startswith("transformed") for f in _digests(summary["output"]))


def test_example_is_byte_identical_with_tuning_off_and_plain_beam_after_the_run(tmp_path):
    import yaml
    from apache_beam.internal import cloudpickle_pickler
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.worker import statesampler
    from apache_beam.transforms import core, userstate

    from pipeline.run import run
    from runners.tuning import memo, release, sampler

    cfg = example_config(tmp_path / "data", 400)
    plain = {"args": core.get_function_args_defaults, "specs": userstate.get_dofn_specs,
             "view_as": PipelineOptions.view_as, "bz2": cloudpickle_pickler.bz2,
             "bundle": fn_runner.FnApiRunner._execute_bundle,
             "sampler": statesampler.StateSampler.__init__.__defaults__, "signal": signal.signal}
    tuned = run(cfg, output=str(tmp_path / "tuned"), store=str(tmp_path / "tuned.sqlite"))
    after = {"args": core.get_function_args_defaults, "specs": userstate.get_dofn_specs,
             "view_as": PipelineOptions.view_as, "bz2": cloudpickle_pickler.bz2,
             "bundle": fn_runner.FnApiRunner._execute_bundle,
             "sampler": statesampler.StateSampler.__init__.__defaults__, "signal": signal.signal}
    assert after == plain
    assert plain["args"] is memo._ORIGINAL_ARGS_DEFAULTS and plain["bz2"] is memo.bz2
    assert not getattr(plain["bundle"], "releases_done_stages", False)
    assert plain["sampler"] == sampler._BEAM_DEFAULTS
    assert not fence.broken()              # no patch turned itself off on the way
    assert release.PATCH.name not in fence._active

    config = tmp_path / "example.yaml"    # the same config, as a file for the fresh process
    data = yaml.safe_load(cfg.raw_text)
    data["inputs"][0]["path"] = cfg.inputs[0].path
    data["labels"]["annotations"]["path"] = cfg.labels.annotations.path
    config.write_text(yaml.safe_dump(data, sort_keys=False))   # the order of columns and splits is meaningful
    untuned = _run_untuned(str(config), str(tmp_path / "untuned"))
    assert untuned["rows"] == tuned["rows"]
    assert _same_files(tuned["output"], untuned["output"]) >= 20


def _patch(name: str, requires=(), log=None, applies=fence._always) -> fence.Patch:
    log = [] if log is None else log
    return fence.Patch(name, "a test patch", tuple(requires), lambda: log.append("install"),
                       lambda: log.append("uninstall"), applies)


@pytest.fixture
def clean_fence():
    yield
    for name in [n for n in fence._broken if n.startswith("test-")]:
        del fence._broken[name]
    fence._warned.difference_update({n for n in fence._warned if n.startswith("test-")})


def test_a_patch_for_other_versions_is_not_installed_and_says_so_once(capsys, clean_fence):
    log = []
    old = _patch("test-old", [("apache-beam", "2.61.0")], log)
    assert "found 2.62.0" in fence.version_mismatch(old)
    for _ in range(2):
        with fence.scoped([old]) as names:
            assert names == ()
    assert log == []
    err = capsys.readouterr().err
    assert err.count("Beam tuning 'test-old' is off: written for apache-beam 2.61.0, found 2.62.0") == 1
    fits = _patch("test-fits", [("apache-beam", "2.62.0")], log)
    with fence.scoped([fits]) as names:
        assert names == ("test-fits",) and fence.active("test-fits")
    assert log == ["install", "uninstall"] and not fence.active("test-fits")


def test_a_patch_applies_only_where_it_says(clean_fence):
    log = []
    direct_only = _patch("test-direct", (), log, applies=lambda runner, options: runner == "DirectRunner")
    with fence.scoped([direct_only], "DataflowRunner"):
        pass
    assert log == []
    with fence.scoped([direct_only], "DirectRunner"):
        pass
    assert log == ["install", "uninstall"]


def test_the_release_and_sampler_patches_are_for_an_in_process_harness():
    from apache_beam.options.pipeline_options import PipelineOptions

    from runners.tuning import release, sampler

    loopback = PipelineOptions(["--environment_type", "LOOPBACK"])
    pool = PipelineOptions(["--environment_type", "EXTERNAL", "--environment_config", "localhost:50000"])
    assert release.PATCH.applies("DirectRunner", None) and not release.PATCH.applies("FlinkRunner", loopback)
    assert not release.PATCH.applies("DataflowRunner", None)
    assert sampler.PATCH.applies("DirectRunner", None) and sampler.PATCH.applies("FlinkRunner", loopback)
    assert not sampler.PATCH.applies("FlinkRunner", pool) and not sampler.PATCH.applies("DataflowRunner", pool)


def test_a_surprise_inside_a_patch_turns_it_off_and_beam_answers(capsys, monkeypatch):
    from apache_beam.transforms import core

    from runners.tuning import memo

    class Broken:
        def get(self, *a):
            raise RuntimeError("a private name moved")

    def f(a, b=2):
        return a

    want = memo._ORIGINAL_ARGS_DEFAULTS(f)
    monkeypatch.setattr(memo, "_signatures", Broken())
    try:
        with fence.scoped([memo.PATCH]) as names:
            assert names == ("memo",) and core.get_function_args_defaults is memo.function_args_defaults
            assert core.get_function_args_defaults(f) == want       # the failing call: Beam's own answer
            assert core.get_function_args_defaults is memo._ORIGINAL_ARGS_DEFAULTS   # removed at once
            assert not fence.active("memo")
        assert fence.broken()["memo"].startswith("RuntimeError: a private name moved")
        with fence.scoped([memo.PATCH]) as names:      # off for the rest of the process
            assert names == ()
        err = capsys.readouterr().err
        assert err.count("Beam tuning 'memo' turned itself off after an error inside it (RuntimeError") == 1
    finally:
        fence._broken.pop("memo", None)
        fence._warned.discard("memo")


def test_the_switch_turns_every_patch_off(monkeypatch):
    from apache_beam.transforms import core

    from runners.tuning import imports, memo

    monkeypatch.setenv(tuning.SWITCH, "0")
    assert not tuning.enabled()
    with tuning.tuned("DirectRunner") as names, tuning.submitting() as submitting:
        assert names == () and submitting == ()
        assert core.get_function_args_defaults is memo._ORIGINAL_ARGS_DEFAULTS
        with imports.lean():
            assert "pymongo" not in sys.modules or sys.modules["pymongo"] is not None
    monkeypatch.setenv(tuning.SWITCH, "1")
    with tuning.tuned("DirectRunner") as names:
        assert names == ("memo", "sampler", "release", "heap")
