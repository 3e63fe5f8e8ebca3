"""Issue 15: bad arguments, bad inputs and half-done outputs, each from the issue's reproduction."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.conftest import run_cli


def _config(tmp_path, lines=None, name="rel", **extra):
    """A small CSV config in `tmp_path` (config beside its data), written to c.yaml."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if lines is None:
        lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c{i}" for i in range(60)]
    (data / "in.csv").write_text("\n".join(lines) + "\n")
    cfg = {"name": name, "inputs": [{"path": "data/in.csv", "format": "csv"}],
           "schema": {"id": "id", "label": "label",
                      "columns": {"id": "string", "label": "string", "x": "float", "n": "int", "comment": "string"}},
           "split": {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}}, "output": {"shards": 1}}
    cfg.update(extra)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _store_is_empty(store) -> bool:
    return not os.path.exists(store) or os.path.getsize(store) == 0 or _no_runs(store)


def _no_runs(store) -> bool:
    from pipeline.metadata import StoreLocation, open_store

    s = open_store(StoreLocation.parse(str(store)))
    try:
        return not s.get_contexts_by_type("pipeline_run")
    except Exception:  # the type was never registered: nothing recorded
        return True


# ---- (6) arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--ouput", "/x"], "--ouput /x"),
    (["--direct_num_wokers", "2"], "--direct_num_wokers 2"),
    (["--direct_num_wokers=2", "--flink_mastr", "h:1"], "--direct_num_wokers=2 --flink_mastr h:1"),
])
def test_unknown_flags_exit_2_naming_them_before_anything_is_recorded(tmp_path, capsys, flags, named):
    path = _config(tmp_path)
    store = tmp_path / "m.sqlite"
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store", str(store)] + flags,
                             capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert _store_is_empty(store) and not (tmp_path / "out").exists()


def test_beam_and_flink_options_are_known(tmp_path):
    from runners import unknown_beam_args

    assert unknown_beam_args(["--direct_num_workers", "2", "--direct_running_mode=multi_processing",
                              "--runner", "FlinkRunner", "--flink_master", "h:8081",
                              "--execution_mode_for_batch", "BATCH_FORCED", "--dry_run", "True"]) == []


def test_unknown_runner_exits_2_before_anything_is_recorded(tmp_path, capsys):
    path = _config(tmp_path)
    store = tmp_path / "m.sqlite"
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store", str(store),
                              "--runner", "NoSuchRunner"], capsys)
    assert code == 2 and "--runner: unknown runner 'NoSuchRunner'" in err and err.count("\n") == 1
    assert _store_is_empty(store) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("filters, message", [
    (["no_such_module_15:f"], "clean.filters[0]: no_such_module_15:f: cannot import 'no_such_module_15'"),
    (["os:sep"], "clean.filters[0]: os:sep: os.sep is a str, not a function"),
    (["os:no_such_function"], "clean.filters[0]: os:no_such_function: os has no function 'no_such_function'"),
    (["broken15:f"], "clean.filters[0]: broken15:f: cannot import 'broken15' (ZeroDivisionError"),
])
def test_validate_imports_filters_and_checks_callables(tmp_path, capsys, filters, message):
    (tmp_path / "broken15.py").write_text("x = 1 / 0\n")
    path = _config(tmp_path, clean={"filters": filters})
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    store = tmp_path / "m.sqlite"
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store", str(store)], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert _store_is_empty(store)


def test_validate_checks_preprocessing_fn(tmp_path, capsys):
    path = _config(tmp_path, features={"preprocessing_fn": "os:sep"})
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 2 and "features.preprocessing_fn: os:sep: os.sep is a str, not a function" in err


def test_a_filter_module_beside_the_config_is_found(tmp_path, capsys):
    (tmp_path / "beside15.py").write_text(
        "import numpy as np\n\ndef odd(batch):\n"
        "    n = batch.column('n').to_numpy(zero_copy_only=False)\n    return n % 2 == 1\n")
    # the odd rows are every row labelled b: the class may go (else the class gate fails the run, as it should)
    path = _config(tmp_path, clean={"filters": ["beside15:odd"]}, expect={"classes": ["a"]})
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 0, err
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store",
                              str(tmp_path / "m.sqlite")], capsys)
    assert code == 0, err
    import json

    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert rows["quarantined"] == 30 and rows["input"] == 60


# ---- (2) types ----------------------------------------------------------------------------------------

def _run(tmp_path, capsys, path, *flags):
    import json

    # --no-progress: these tests count the lines of a failure's message; the progress lines
    # before it are tests/test_progress.py's.
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store",
                              str(tmp_path / "m.sqlite"), "--no-progress", *flags], capsys)
    summary = json.loads(out.strip().splitlines()[-1]) if code == 0 else None
    return code, summary, err


def _quarantine(summary):
    import glob

    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(summary["output"], "quarantine", "*.parquet")))
    return pq.ParquetDataset(files).read().to_pylist() if files else []


def _split_rows(summary, kind="raw"):
    import glob

    import pyarrow.parquet as pq

    rows = []
    for split in ("train", "dev", "test"):
        for f in sorted(glob.glob(os.path.join(summary["output"], kind, split, "*.parquet"))):
            rows += pq.read_table(f).to_pylist()
    return rows


def test_the_full_int64_range_is_accepted(tmp_path):
    import pyarrow as pa

    from transforms.clean.validate import coerce

    values = ["1234567890123456789", str(2**63 - 1), str(-2**63), "+" + str(2**63 - 1), "007",
              str(2**63), str(-2**63 - 1), "12345678901234567890"]
    typed, bad = coerce(pa.array(values), "int")
    assert typed.to_pylist()[:5] == [1234567890123456789, 2**63 - 1, -2**63, 2**63 - 1, 7]
    assert bad.tolist() == [False] * 5 + [True] * 3
    typed, bad = coerce(pa.array(values[:3]), "int")   # Arrow's own parse of the whole column
    assert typed.to_pylist() == [1234567890123456789, 2**63 - 1, -2**63] and not bad.any()


def test_19_digit_ids_pass_end_to_end(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{v},c" for i, v in
                                        enumerate([1234567890123456789, 2**63 - 1, -2**63] * 10)]
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path, lines))
    assert code == 0, err
    assert summary["rows"]["quarantined"] == 0
    assert sorted({r["n"] for r in _split_rows(summary)}) == [-2**63, 1234567890123456789, 2**63 - 1]


def test_non_finite_floats_are_quarantined_by_default(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c" for i in range(30)] + [
        "f1,a,NaN,1,c", "f2,b,inf,2,c", "f3,a,1e309,3,c", "f4,b,-Infinity,4,c"]
    path = _config(tmp_path, lines, features={"x": "zscore"})
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 0, err
    q = _quarantine(summary)
    assert sorted((r["reason"], r["_row"]) for r in q) == [("non_finite:x", 32), ("non_finite:x", 33),
                                                           ("non_finite:x", 34), ("non_finite:x", 35)]
    import math

    assert all(math.isfinite(r["x_xf"]) for r in _split_rows(summary, "transformed"))


def test_allow_non_finite_keeps_them(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c" for i in range(30)] + [
        "f1,a,NaN,1,c", "f2,b,inf,2,c"]
    path = _config(tmp_path, lines, clean={"allow_non_finite": True})
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 0 and summary["rows"]["quarantined"] == 0, err


def test_a_value_past_float32_in_a_feature_is_quarantined(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c" for i in range(30)] + [
        "f1,a,3.5e38,1,c", "f2,b,-1e39,2,c"]
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path, lines, features={"x": "zscore"}))
    assert code == 0, err
    assert sorted(r["reason"] for r in _quarantine(summary)) == ["float32_overflow:x"] * 2
    # not a feature: a float64 column holds it
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path, lines, name="rel2"))
    assert code == 0 and summary["rows"]["quarantined"] == 0, err


def test_a_duplicated_header_name_exits_2_naming_it(tmp_path, capsys):
    lines = ["id,label,x,n,comment,n"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c,{i}" for i in range(30)]
    path = _config(tmp_path, lines)
    for command in (["validate", str(path)], ["run", str(path), "--output", str(tmp_path / "out"),
                                              "--store", str(tmp_path / "m.sqlite")]):
        code, out, err = run_cli(command, capsys)
        assert code == 2 and "the header names column(s) ['n'] more than once" in err and err.count("\n") == 1
    assert _store_is_empty(tmp_path / "m.sqlite")


def test_an_empty_train_split_with_features_exits_1_clearly(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c" for i in range(30)]
    path = _config(tmp_path, lines, clean={"rules": [{"column": "n", "min": 1000}]}, features={"x": "zscore"})
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 1
    assert "features: the train split is empty" in err and "Traceback" not in err and err.count("\n") == 1, err
    from pipeline.lineage import list_runs
    from pipeline.metadata import StoreLocation, open_store

    [r] = list_runs(open_store(StoreLocation.parse(str(tmp_path / "m.sqlite"))))
    assert r["status"] == "FAILED" and "features: the train split is empty" in r["error"]
    out = tmp_path / "out"
    assert not out.exists() or not os.listdir(out), os.listdir(out)   # nothing published, nothing staged left


def test_an_empty_train_fails_at_the_split_plan_before_any_row_is_assigned():
    """Every row of every split is assigned with the split plan as a side input; with
    `require_rows`, the plan fails the job when it gives train nothing, so no row reaches
    TFT (or any writer) first. The check is on the plan, not a count racing the analysis."""
    import apache_beam as beam
    import pyarrow as pa

    from transforms.split import StratifiedSplit

    p = beam.Pipeline()
    batch = pa.RecordBatch.from_pydict({"example_id": ["e1", "e2", "e3"], "label": ["a", "a", "b"]})
    rows = p | beam.Create([batch]).with_output_types(pa.RecordBatch)
    split = rows | "Split" >> StratifiedSplit({"train": 0.0, "dev": 1.0}, ["label"], seed=1,
                                              require_rows={"train": "the train split is empty"})
    nodes = {}

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            nodes[node.full_label] = node

    p.visit(Collect())

    def upstream(pc, seen):   # the labels of every transform `pc` depends on, side inputs too
        node = pc.producer
        if node is None or node.full_label in seen:
            return seen
        seen.add(node.full_label)
        for x in list(node.main_inputs.values()) + [s.pvalue for s in node.side_inputs]:
            upstream(x, seen)
        return seen

    for name in ("train", "dev"):
        assert "Split/RequireRows" in upstream(split.splits[name], set())
    with pytest.raises(Exception, match="the train split is empty"):
        p.run().wait_until_finish()


def test_duplicate_yaml_keys_exit_2(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text() + "name: again\n")
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 2 and f"{path}: key 'name' is given twice" in err and err.count("\n") == 1


def test_a_non_utf8_config_names_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 2 and f"{path}: not UTF-8 text" in err and err.count("\n") == 1


# ---- (3)+(4) atomic publication, signals, abandoned runs: a real `dataprep run` killed -------------------

def test_a_complete_run_is_published_with_success_and_live_artifacts(tmp_path, capsys):
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipeline.metadata import StoreLocation, open_store

    code, summary, err = _run(tmp_path, capsys, _config(tmp_path))
    assert code == 0, err
    out = tmp_path / "out"
    assert summary["output"] == str(out / summary["run_id"])
    assert (out / summary["run_id"] / "_SUCCESS").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".staging-")] == []
    assert not (out / summary["run_id"] / "tmp").exists()
    store = open_store(StoreLocation.parse(str(tmp_path / "m.sqlite")))
    [ctx] = store.get_contexts_by_type("pipeline_run")
    assert {a.state for a in store.get_artifacts_by_context(ctx.id)} == {pb.Artifact.LIVE}
    assert ctx.properties["pid"].int_value == os.getpid() and ctx.properties["host"].string_value


def test_pending_outputs_are_refused_by_lineage(tmp_path, capsys):
    from pipeline.metadata import RunRecorder, StoreLocation, open_store

    store_path = tmp_path / "m.sqlite"
    rec = RunRecorder(open_store(StoreLocation.parse(str(store_path))), "p", "r1", {})
    rec.update_run(status="RUNNING", host="elsewhere", pid=1, heartbeat="2000-01-01T00:00:00+00:00",
                   started="2000-01-01T00:00:00+00:00")
    split = tmp_path / "out" / "r1" / "raw" / "train"
    rec.pending_artifact("Examples", str(split), {"split": "train"})
    code, out, err = run_cli(["lineage", str(split), "--store", str(store_path)], capsys)
    assert code == 2 and "did not finish" in err and "PENDING" in err
    code, out, err = run_cli(["runs", "--store", str(store_path), "--format", "json"], capsys)
    import json

    assert [r["status"] for r in json.loads(out)] == ["ABANDONED"]   # its heartbeat is decades old


def _start_run(cfg_path, out, store, env):
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--output", str(out),
                             "--store", str(store), "--force"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate() or proc.poll() is not None:
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the point to kill it at")


def _check_no_unfinished_split(out):
    """A run folder holding a split folder has _SUCCESS; no staging folder of a closed run is left."""
    for run in out.iterdir() if out.exists() else ():
        if not run.name.startswith("."):
            assert (run / "_SUCCESS").is_file(), f"{run} has no _SUCCESS: {sorted(os.listdir(run))}"


POINTS = [("SIGKILL", "start"), ("SIGTERM", "clean"), ("SIGINT", "clean"), ("SIGKILL", "clean"),
          ("SIGTERM", "write"), ("SIGINT", "start")]


def test_killed_runs_leave_nothing_that_looks_finished(tmp_path, capsys):
    """SIGKILL, SIGTERM and SIGINT at the start of the run, in the clean stage (a filter that
    sleeps) and while the shards are written: no split folder without _SUCCESS, no run left
    RUNNING, a canceled run is one line and 130/143, and the next run completes and cleans up
    after the killed ones."""
    import glob
    import json
    import signal

    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c{i}" for i in range(200)]
    cfg_path = _config(tmp_path, lines, clean={"filters": ["tests.faults:slow"]})
    out, store, faults, tmp = tmp_path / "out", tmp_path / "m.sqlite", tmp_path / "faults", tmp_path / "tmp"
    faults.mkdir()
    tmp.mkdir()
    env = {**os.environ, "DATAPREP_FAULT_DIR": str(faults), "TMPDIR": str(tmp), "DATAPREP_HEARTBEAT_SECONDS": "1"}
    outcomes = []
    for sig_name, point in POINTS:
        marker = faults / "clean"
        if marker.exists():
            marker.unlink()
        sleep = "0" if point == "write" else "120"
        stale = _running(store)  # a SIGKILLed run stays RUNNING in the store until a later run marks it
        temp_before = set(os.listdir(tmp))
        proc = _start_run(cfg_path, out, store, {**env, "DATAPREP_FAULT_SLEEP": sleep})
        if point == "start":     # recorded RUNNING (its staging folder named in the store), job not built
            _wait_for(lambda: bool(_running(store) - stale), proc)
        elif point == "clean":
            _wait_for(marker.exists, proc)
        else:                    # the job writing its shards
            _wait_for(lambda: glob.glob(str(out / ".staging-*" / "*" / "*" / "*.parquet")), proc)
        sig = getattr(signal, sig_name)
        if proc.poll() is None:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=240)
        where = f"{sig_name} at {point}: exit {proc.returncode}, stderr {stderr[-2000:]}"
        _check_no_unfinished_split(out)
        code, listing, _ = run_cli(["runs", "--store", str(store), "--format", "json"], capsys)
        runs = json.loads(listing)
        assert "RUNNING" not in {r["status"] for r in runs}, where
        outcomes.append((sig_name, point, proc.returncode))
        if proc.returncode == 0:   # it finished before the signal: then it is a complete run
            assert point == "write" and runs[-1]["status"] == "COMPLETE", where
            continue
        if sig_name == "SIGKILL":
            assert proc.returncode == -9 and runs[-1]["status"] == "ABANDONED", where
        else:
            assert proc.returncode == 128 + sig, where
            assert "Traceback" not in stderr, where
            assert stderr.strip().splitlines()[-1].endswith(f"canceled by {sig_name}; recorded CANCELED, "
                                                            "its files removed"), where
            assert runs[-1]["status"] == "CANCELED", where
            assert not (out / (".staging-" + runs[-1]["run_id"])).exists(), where
            assert set(os.listdir(tmp)) == temp_before, where   # Beam's beam-pipeline-temp* removed too
    print(outcomes)
    # the rerun completes, and closes and cleans up after the killed runs
    proc = _start_run(cfg_path, out, store, {**env, "DATAPREP_FAULT_SLEEP": "0"})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (out / summary["run_id"] / "_SUCCESS").is_file()
    _check_no_unfinished_split(out)
    assert not glob.glob(str(out / ".staging-*")), os.listdir(out)
    assert not glob.glob(str(out / "*" / "tmp"))
    from pipeline.lineage import _props
    from pipeline.metadata import StoreLocation, open_store

    s = open_store(StoreLocation.parse(str(store)))
    stored = {_props(c).get("status") for c in s.get_contexts_by_type("pipeline_run")}
    assert "RUNNING" not in stored   # written ABANDONED by the rerun, not only shown so
    left = [p for p in glob.glob(str(tmp / "**"), recursive=True) if os.path.isfile(p)]
    assert not left, left
    # issue 35: a SIGKILLed run left an empty beam-pipeline-temp* here; it is made in its staging folder now
    assert not glob.glob(str(tmp / "beam-pipeline-temp*")), os.listdir(tmp)


def _cancel_here(sig):
    """Sends `sig` to this process and gives the main thread bytecodes to run its handler on."""
    import time

    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.001)


def test_a_cancel_gets_through_beams_catch_all_at_apply(monkeypatch):
    """Beam's `is_in_ipython` (run on every `apply` while the job is built) catches everything
    but KeyboardInterrupt and SystemExit. A SIGINT landing there was swallowed and the run
    went on to COMPLETE (a killed-runs test failed on it under load): RunCanceled is let through."""
    import logging
    import signal
    import sys
    import types

    from apache_beam.utils.interactive_utils import is_in_ipython

    from pipeline.interrupts import RunCanceled, cancel_on_signals as _cancel_on_signals

    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: _cancel_here(signal.SIGINT)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(RunCanceled) as raised:
            with _cancel_on_signals():
                is_in_ipython()
    finally:
        logging.disable(logging.NOTSET)
    assert raised.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


def test_a_swallowed_cancel_is_raised_again_at_the_next_check():
    """Code with a bare `except:` swallows even a KeyboardInterrupt; the run checks again
    before the job runs, after it, and before it publishes, so it ends CANCELED."""
    import logging
    import signal

    from pipeline.interrupts import RunCanceled, cancel_on_signals as _cancel_on_signals

    try:
        with pytest.raises(RunCanceled) as raised:
            with _cancel_on_signals() as check:
                check()    # nothing received yet
                try:
                    _cancel_here(signal.SIGTERM)
                except BaseException:  # noqa: B036 -- what some library code does
                    pass
                check()
    finally:
        logging.disable(logging.NOTSET)
    assert raised.value.signum == signal.SIGTERM and raised.value.signal_name == "SIGTERM"


def test_the_temp_folder_is_probed_before_the_run_is_open(tmp_path, capsys, monkeypatch):
    """tempfile's first use writes a probe file into TMPDIR and removes it in a `finally`; a
    cancel (or SIGKILL) landing there once left it behind in the test above. The probe is made
    before the run is recorded RUNNING, from which point the run can be canceled."""
    import tempfile

    from pipeline.metadata import RunRecorder

    monkeypatch.setattr(tempfile, "tempdir", None)   # as in a fresh process
    probed_at = {}
    update = RunRecorder.update_run

    def record(self, **props):
        if props.get("status") == "RUNNING":
            probed_at["RUNNING"] = tempfile.tempdir
        return update(self, **props)

    monkeypatch.setattr(RunRecorder, "update_run", record)
    code, _, err = _run(tmp_path, capsys, _config(tmp_path))
    assert code == 0, err
    assert probed_at["RUNNING"] is not None


def _running(store) -> set:
    """The ids of the runs the store holds as RUNNING."""
    import sqlite3

    if not os.path.exists(store):
        return set()
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.2) as db:
            return {row[0] for row in db.execute("select context_id from ContextProperty where name = 'status' "
                                                 "and string_value = 'RUNNING'")}
    except sqlite3.Error:
        return set()


# ---- (7) secrets ---------------------------------------------------------------------------------------

def test_redact_by_value():
    from runners import redact

    assert redact("http://u:SECRET@h:8020/x") == "http://u:<redacted>@h:8020/x"
    assert redact("password=SECRET") == "password=<redacted>"
    assert redact("team=ml,api_key=SECRET&x=1") == "team=ml,api_key=<redacted>&x=1"
    assert redact("  # token: SECRET (rotate monthly)") == "  # token: <redacted> (rotate monthly)"
    for kept in ("password_env: DATAPREP_MYSQL_PASSWORD", "dedup: {keys: [image_id]}", "author: Jane",
                 "mysql://root@h:3306/db", "path: data/*.csv"):
        assert redact(kept) == kept


def test_planted_secrets_reach_no_store_report_output_or_console(tmp_path, capsys, monkeypatch):
    """`--hdfs_host=http://u:SECRET@h`, `--labels=password=SECRET`, a `source:` with URL
    credentials, a commented token in the config, credentials in the input `path:` (a
    filesystem whose URLs carry them), in a path that matches nothing (exit 2) and in the
    error of a failed run (a real `dataprep` process, its own stderr): none is in the
    store, the report, the outputs, stdout or stderr; `lineage` and `runs` show them redacted."""
    import glob
    import json
    import subprocess
    import sys

    import tests.credfs
    from tests.conftest import ROOT

    planted = ["S3CR3T-URL", "S3CR3T-LABEL", "S3CR3T-SOURCE", "S3CR3T-COMMENT", "S3CR3T-PATH", "S3CR3T-MISS",
               "S3CR3T-FAIL"]
    monkeypatch.setenv(tests.credfs.ROOT_ENV, str(tmp_path))
    (tmp_path / "out").mkdir()   # OpenLineage events (pipeline/openlineage.py) are read for secrets too
    for k, v in {"TYPE": "file", "LOG_FILE_PATH": str(tmp_path / "out" / "openlineage.jsonl"), "APPEND": "true"}.items():
        monkeypatch.setenv(f"OPENLINEAGE__TRANSPORT__{k}", v)
    path = _config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["inputs"][0]["source"] = "export from https://bob:S3CR3T-SOURCE@files.example.com/x.csv"
    cfg["inputs"][0]["path"] = "credfs://bob:S3CR3T-PATH@files.example.com/data/in.csv"
    path.write_text(yaml.safe_dump(cfg) + "# api token: S3CR3T-COMMENT\n")
    store = str(tmp_path / "m.sqlite")
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store", store,
                              "--hdfs_host=http://u:S3CR3T-URL@h", "--labels=password=S3CR3T-LABEL"], capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows"]["input"] == 60
    code, lineage_out, lineage_err = run_cli(["lineage", os.path.join(summary["output"], "raw", "train"),
                                              "--store", store], capsys)
    assert code == 0 and "https://bob:<redacted>@files.example.com" in lineage_out
    assert "credfs://bob:<redacted>@files.example.com/data/in.csv" in lineage_out
    seen = {"stdout": out + lineage_out, "stderr": err + lineage_err}

    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**cfg, "inputs": [{"path": "https://u:S3CR3T-MISS@h.example.com/x.csv",
                                                          "format": "csv"}]}))
    code, out, err = run_cli(["run", str(missing), "--output", str(tmp_path / "out"), "--store", store], capsys)
    assert code == 2 and "inputs[0].path: " in err and "https://u:<redacted>@h.example.com/x.csv" in err, err
    seen["stdout"] += out
    seen["stderr"] += err

    (tmp_path / "leaky15.py").write_text("def fail(batch):\n    raise RuntimeError("
                                         "'cannot reach https://svc:S3CR3T-FAIL@db.example.com/rules')\n")
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump({**cfg, "inputs": [{"path": "data/in.csv", "format": "csv"}],
                                       "clean": {"filters": ["leaky15:fail"]}}))   # credfs: this process only
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(failing), "--output",
                           str(tmp_path / "out"), "--store", store, "--no-progress"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 1 and "https://svc:<redacted>@db.example.com/rules" in proc.stderr, proc.stderr
    seen["stdout"] += proc.stdout
    seen["stderr"] += proc.stderr

    code, runs_out, runs_err = run_cli(["runs", "--store", store, "--format", "json"], capsys)
    runs = json.loads(runs_out)
    assert [r["status"] for r in runs] == ["COMPLETE", "FAILED"]
    assert "https://svc:<redacted>@db.example.com/rules" in runs[-1]["error"]
    seen["stdout"] += runs_out
    seen["stderr"] += runs_err
    for f in glob.glob(str(tmp_path / "out" / "**"), recursive=True) + [store]:
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                seen[f] = fh.read().decode("latin-1")
    assert "report.json" in " ".join(seen) and "report.html" in " ".join(seen)
    assert '"eventType": "FAIL"' in seen[str(tmp_path / "out" / "openlineage.jsonl")]
    assert any("/raw/train/" in f for f in seen) and any("/quarantine/" in f for f in seen)
    leaks = [(where, s) for where, text in seen.items() for s in planted if s in text]
    assert not leaks, leaks
    from pipeline.metadata import StoreLocation, open_store

    ctx = open_store(StoreLocation.parse(store)).get_contexts_by_type("pipeline_run")[0]
    options = json.loads(ctx.properties["options"].string_value)
    assert options["hdfs_host"] == "http://u:<redacted>@h" and options["labels"] == ["password=<redacted>"]
    assert "# api token: <redacted>" in ctx.properties["config"].string_value


# ---- (5) disk and store failures --------------------------------------------------------------------------

def test_a_full_disk_while_writing_is_one_line_naming_the_shard(tmp_path, capsys, monkeypatch):
    import errno

    import transforms.write as write

    real = write.write_parquet

    def full_disk(table, path):
        if "/raw/train/" in path:   # a truncated shard, then the disk is full
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"PAR1")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(table, path)

    monkeypatch.setattr(write, "write_parquet", full_disk)
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path))
    assert code == 1 and err.count("\n") == 1, err
    assert "No space left on device: " in err and "/raw/train/part-" in err and "Traceback" not in err
    out = tmp_path / "out"
    assert not [p for p in out.rglob("*.parquet")], list(out.rglob("*"))   # nothing half-written left
    code, listing, _ = run_cli(["runs", "--store", str(tmp_path / "m.sqlite"), "--format", "json"], capsys)
    import json

    [r] = json.loads(listing)
    assert r["status"] == "FAILED" and "No space left on device" in r["error"]


def test_a_store_failing_mid_run_is_one_line_and_the_run_is_closed(tmp_path, capsys, monkeypatch):
    from ml_metadata import errors as mlmd_errors

    from pipeline.metadata import RunRecorder

    def disk_full(self, *a, **k):
        raise mlmd_errors.InternalError("database or disk is full\n  (a long chained message)")

    monkeypatch.setattr(RunRecorder, "finish_stage", disk_full)
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "database or disk is full" in err and "Traceback" not in err
    code, listing, _ = run_cli(["runs", "--store", str(tmp_path / "m.sqlite"), "--format", "json"], capsys)
    import json

    assert [r["status"] for r in json.loads(listing)] == ["FAILED"]   # the store still takes writes
    assert not list((tmp_path / "out").glob("*/_SUCCESS"))


def test_an_unwritable_store_is_one_line_exit_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, err = run_cli(["run", str(_config(tmp_path)), "--output", str(tmp_path / "out"),
                              "--store", str(blocker / "m.sqlite")], capsys)
    assert code == 1 and err.count("\n") == 1 and str(blocker) in err and "Traceback" not in err, err


# ---- (1) RFC 4180 records -------------------------------------------------------------------------------

def test_a_quoted_newline_is_one_record_at_the_line_it_starts(tmp_path, capsys):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c{i}" for i in range(5)] + [
        'e5,a,2.5,5,"see attached:', 'e99,b,9.5,99,tail"', 'e6,b,1.5,6,"a ""quoted"", comma, and', '', 'blank"',
        "e7,a,3.5,7,after"]
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path, lines))
    assert code == 0, err
    assert summary["rows"]["input"] == 8 and summary["rows"]["quarantined"] == 0
    rows = {r["id"]: r for r in _split_rows(summary)}
    assert "e99" not in rows                                     # no made-up row
    assert rows["e5"]["comment"] == "see attached:\ne99,b,9.5,99,tail" and rows["e5"]["_row"] == 7
    assert rows["e6"]["comment"] == 'a "quoted", comma, and\n\nblank' and rows["e6"]["_row"] == 9
    assert rows["e7"]["_row"] == 12


@pytest.mark.parametrize("second, reason", [
    ('e99,b,9.5,99,tail",extra', "csv_field_count"),   # valid CSV, one field too many
    # the quote closes on the second line, then the record is not CSV; the second line alone
    # would parse, and must not become a made-up row e99
    ('e99,b,9.5,99,tail"x', "csv_malformed"),
])
def test_a_multiline_record_that_does_not_parse_is_quarantined_once(tmp_path, capsys, second, reason):
    lines = ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c{i}" for i in range(5)] + [
        'e5,a,2.5,5,"see attached:', second, "e7,a,3.5,7,after"]
    code, summary, err = _run(tmp_path, capsys, _config(tmp_path, lines))
    assert code == 0, err
    assert summary["rows"]["input"] == 7                          # one broken record, one input
    [q] = _quarantine(summary)
    assert (q["reason"], q["_row"]) == (reason, 7)
    assert q["record"] == 'e5,a,2.5,5,"see attached:\n' + second
    assert {r["id"] for r in _split_rows(summary)} == {"e0", "e1", "e2", "e3", "e4", "e7"}


def test_a_stray_quote_does_not_swallow_the_lines_after_it():
    from transforms.read import ReaderSpec, parse_csv_block

    names = ["id", "label", "x", "n", "comment"]
    block = b'e1,none,"120.5,F1\ne2,b,3,6,fine\ne3,b,3,7,"a, b"'
    batch, bad = parse_csv_block(block, 2, names, names, ReaderSpec("csv"))
    assert batch.column("id").to_pylist() == ["e2", "e3"] and batch.column("_row").to_pylist() == [3, 4]
    assert (bad.rows, bad.reasons) == ([2], ["csv_malformed"])


def test_blocks_are_cut_outside_quotes():
    import io

    from transforms.read import iter_line_blocks

    data = b'h\n1,"a\nb"\n2,x\n3,"c\n\n""d"""\n4,y\n'
    for size in (4, 5, 8, 13, 100):   # a record is at most 4 x the block size here
        blocks = list(iter_line_blocks(io.BytesIO(data), size, '"'))
        assert b"\n".join(b for b, _ in blocks) + b"\n" == data
        assert all(b.count(b'"') % 2 == 0 for b, _ in blocks), (size, blocks)
        assert [n for _, n in blocks] == [1 + b"\n".join(x for x, _ in blocks[:i]).count(b"\n") + (1 if i else 0)
                                         for i in range(len(blocks))]
    # a quote that never closes holds the cut back for 4 blocks at most, then lines are cut as usual
    stray = b'1,"a\n' + b"2,x\n" * 50
    blocks = list(iter_line_blocks(io.BytesIO(stray), 8, '"'))
    assert len(blocks) > 5 and max(len(b) for b, _ in blocks) < 4 * 8 + 8


def test_a_worker_traceback_in_the_error_is_named_in_one_line():
    # A portable runner (Flink) reports a Python worker's failure as the worker's traceback.
    from pipeline.failures import failure_line

    flink = ("Pipeline BeamApp-root-1 failed in state FAILED: java.lang.RuntimeException: Error received from SDK "
             "harness for instruction 17: Traceback (most recent call last):\n"
             '  File "/venv/apache_beam/runners/worker/sdk_worker.py", line 311, in _execute\n'
             "    response = task()\n"
             "RuntimeError: injected failure in a DoFn [while running 'Clean/Validate/ParDo(_ValidateFn)']\n\n"
             "\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient.onNext(FnApiControlClient.java:180)\n")
    line = failure_line(RuntimeError(flink))
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("RuntimeError: Pipeline BeamApp-root-1 failed in state FAILED")
    assert line.endswith("RuntimeError: injected failure in a DoFn [while running 'Clean/Validate/ParDo(_ValidateFn)']")
    assert failure_line(ValueError("first line\nsecond line")) == "ValueError: first line"


# ---- issue 35: compressed inputs, inputs that change, awkward names, hostile configs, leftovers ------------

def _lines(n, start=0):
    return ["id,label,x,n,comment"] + [f"e{i},{'ab'[i % 2]},{i % 7}.5,{i},c{i}" for i in range(start, start + n)]


def _failed_and_unpublished(tmp_path, capsys, message):
    """The run is recorded FAILED with `message` in its error, and nothing is published or left staged."""
    import json

    code, listing, _ = run_cli(["runs", "--store", str(tmp_path / "m.sqlite"), "--format", "json"], capsys)
    last = json.loads(listing)[-1]
    assert last["status"] == "FAILED" and message in last["error"], last
    out = tmp_path / "out"
    assert not list(out.glob(f"{last['run_id']}*")) and not list(out.glob(f".staging-{last['run_id']}"))
    return last


def test_1_a_truncated_gzip_fails_the_run_naming_the_file(tmp_path, capsys):
    """(1) `head -c` half of a gzip (here of 3,000 rows): exit 1, the file named in one line,
    the run FAILED, nothing published; before, exit 0 with the first half as the input and
    the cut record quarantined as csv_field_count. (2) The whole `.csv.gz`, `header: true`,
    validates and runs (its header was read without decompressing it)."""
    import gzip
    import json

    data = tmp_path / "data"
    data.mkdir()
    csv_gz = gzip.compress(("\n".join(_lines(3000)) + "\n").encode())
    (data / "whole.csv.gz").write_bytes(csv_gz)
    (data / "cut.csv.gz").write_bytes(csv_gz[:len(csv_gz) // 2])
    records = "".join(json.dumps({"id": f"e{i}", "label": "ab"[i % 2], "x": "1.5", "n": str(i), "comment": "c"}) + "\n"
                      for i in range(3000))
    jsonl_gz = gzip.compress(records.encode())
    (data / "cut.jsonl.gz").write_bytes(jsonl_gz[:len(jsonl_gz) // 2])

    whole = _config(tmp_path, name="gz-whole", inputs=[{"path": "data/whole.csv.gz", "format": "csv",
                                                         "csv": {"header": True}}])
    code, _, err = run_cli(["validate", str(whole)], capsys)
    assert code == 0, err
    code, summary, err = _run(tmp_path, capsys, whole)
    assert code == 0 and summary["rows"]["input"] == 3000 and summary["rows"]["quarantined"] == 0, err

    for name, fmt in (("cut.csv.gz", "csv"), ("cut.jsonl.gz", "jsonl")):
        path = _config(tmp_path, name=f"gz-{fmt}", inputs=[{"path": f"data/{name}", "format": fmt}])
        code, summary, err = _run(tmp_path, capsys, path)
        line = f"{data / name}: the gzip data ends before its end-of-stream marker after"
        assert code == 1 and err.count("\n") == 1 and line in err and "truncated or corrupt" in err, err
        assert "Traceback" not in err
        _failed_and_unpublished(tmp_path, capsys, line)


def test_3_an_input_that_grows_during_the_run_fails_naming_it(tmp_path, capsys, monkeypatch):
    """(3) Rows appended to the CSV while the run reads it (500 rows, by a filter of the clean
    stage): the run fails naming the file and its sizes, instead of recording the old sha256
    and size beside rows of the new content; nothing is published."""
    path = _config(tmp_path, _lines(2000), clean={"filters": ["tests.faults:append_to_input"]})
    data = tmp_path / "data" / "in.csv"
    before = data.stat().st_size
    monkeypatch.setenv("DATAPREP_FAULT_APPEND", str(data))
    code, summary, err = _run(tmp_path, capsys, path)
    after = data.stat().st_size
    assert after > before
    line = (f"InputChanged: inputs[0].path: {data} changed while the run read it ({before:,} → {after:,} bytes); "
            "nothing was published: run again once the file is complete")
    assert code == 1 and err == f"dataprep: run failed: {line}\n", err
    _failed_and_unpublished(tmp_path, capsys, line)


def test_3_unchanged_touched_rewritten_and_removed_inputs(tmp_path):
    """`check_unchanged`: a file touched with the same bytes passes (its sha256 is computed
    again); one rewritten in place with other bytes of the same size, or removed, fails."""
    import time

    from pipeline.inputs import InputChanged, InputFile, check_unchanged, fingerprinted

    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,x\n")
    [f] = fingerprinted([InputFile("data", 0, str(path), 0)])
    assert f.size == 8 and f.mtime > 0 and len(f.sha256) == 64
    check_unchanged([f])
    time.sleep(0.01)
    path.write_text("a,b\n1,x\n")            # the same bytes, a newer time
    check_unchanged([f])
    path.write_text("a,b\n2,y\n")
    with pytest.raises(InputChanged, match=r"inputs\[0\]\.path: .*in\.csv changed while the run read it \(same size"):
        check_unchanged([f])
    path.unlink()
    with pytest.raises(InputChanged, match=r"\(removed\)"):
        check_unchanged([f])


def test_4_an_int64_past_2_53_in_a_float_column_is_quarantined_not_the_run(tmp_path, capsys):
    """(4) One int64 of 2**60 + 1 in a Parquet column declared `float` failed the whole run
    (`ArrowInvalid: Integer value ... not in range`): that row is quarantined
    (`lossy_float:x`), the others go on (2**60, which a float holds, is kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    xs = [i for i in range(40)] + [2**60, 2**60 + 1]
    pq.write_table(pa.table({"id": [f"e{i}" for i in range(len(xs))], "label": ["ab"[i % 2] for i in range(len(xs))],
                             "x": pa.array(xs, pa.int64()), "n": pa.array(range(len(xs)), pa.int64()),
                             "comment": ["c"] * len(xs)}), data / "in.parquet")
    path = _config(tmp_path, inputs=[{"path": "data/in.parquet", "format": "parquet"}])
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 0, err
    assert summary["rows"]["input"] == 42 and summary["rows"]["quarantined"] == 1
    [q] = _quarantine(summary)
    assert (q["reason"], q["_row"]) == ("lossy_float:x", 42) and str(2**60 + 1) in q["record"]
    kept = {r["id"]: r["x"] for r in _split_rows(summary)}
    assert kept["e40"] == float(2**60) and "e41" not in kept and len(kept) == 41


def test_5_any_header_name_works_as_a_feature_and_keeps_its_name(tmp_path, capsys):
    """(5) `"größe (cm)": zscore`, `"farbe name": vocabulary`: they passed validate and failed
    the run in TensorFlow (`'fill_größe (cm)' is not a valid root scope name`). Now the run
    completes, every output keeps the user's names (`größe (cm)_xf`), the values are the
    z-scores of train's statistics and the vocabulary's ids, and the saved graph transforms
    a serving input given under the user's names."""
    import glob
    import json

    import numpy as np

    colours = ["rot", "grün", "blau", "grün"]
    lines = ["id,label,größe (cm),farbe name"] + [f"e{i},{'ab'[i % 2]},{150 + i % 40}.5,{colours[i % 4]}"
                                                    for i in range(90)]
    path = _config(tmp_path, lines, schema={"id": "id", "label": "label", "columns": {
        "id": "string", "label": "string", "größe (cm)": "float", "farbe name": "string"}},
        features={"größe (cm)": "zscore", "farbe name": "vocabulary"})
    code, _, err = run_cli(["validate", str(path)], capsys)
    assert code == 0, err
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 0, err
    raw = {r["id"]: r for r in _split_rows(summary, "raw")}
    assert set(next(iter(raw.values()))) >= {"größe (cm)", "farbe name"}
    train = [raw[r["id"]]["größe (cm)"] for f in glob.glob(os.path.join(summary["output"], "raw", "train", "*"))
             for r in __import__("pyarrow.parquet").parquet.read_table(f).to_pylist()]
    mean, std = np.mean(train), np.std(train)
    with open(os.path.join(summary["output"], "report.json")) as f:
        features = json.load(f)["features"]
    assert features["columns"]["größe (cm)"]["outputs"] == ["größe (cm)_xf"]
    assert abs(features["columns"]["größe (cm)"]["mean"] - mean) < 1e-3
    assert features["columns"]["farbe name"]["vocabulary_size"] == 3
    [head] = features["vocabulary_heads"].values()
    assert head[0] == "grün"                                    # the most frequent first
    for r in _split_rows(summary, "transformed"):
        assert abs(r["größe (cm)_xf"] - (raw[r["id"]]["größe (cm)"] - mean) / std) < 1e-4
        assert r["farbe name_xf"] == head.index(raw[r["id"]]["farbe name"])

    import tensorflow as tf
    import tensorflow_transform as tft

    layer = tft.TFTransformOutput(summary["output"]).transform_features_layer()
    out = layer({"größe (cm)": tf.sparse.from_dense(tf.constant([[mean]], tf.float32)),
                 "farbe name": tf.sparse.from_dense(tf.constant([["blau"]]))})
    assert abs(float(out["größe (cm)_xf"][0])) < 1e-4 and int(out["farbe name_xf"][0]) == head.index("blau")


@pytest.mark.parametrize("case", ["folder", "output_file", "workers", "flink"])
def test_7_wrong_paths_and_options_exit_2_before_anything_is_recorded(tmp_path, capsys, case):
    """(7) A folder as an input path (was an IsADirectoryError traceback, in run and validate),
    `--output` naming a regular file (was a FAILED run), `--direct_num_workers abc` (was 108
    lines of Beam's usage first), `--runner FlinkRunner` without `--flink_master` (now named)."""
    path = _config(tmp_path)
    output, flags, commands = tmp_path / "out", [], ["run"]
    if case == "folder":
        (tmp_path / "data" / "more").mkdir()
        path = _config(tmp_path, inputs=[{"path": "data/more", "format": "csv"}])
        message = (f"inputs[0].path: {tmp_path / 'data' / 'more'} is a folder, not a file; name the files in it "
                   f"(e.g. {tmp_path / 'data' / 'more' / '*.csv'})")
        commands = ["validate", "run"]
    elif case == "output_file":
        output = tmp_path / "a_file"
        output.write_text("")
        message = f"--output: {output} is a file, not a folder"
    elif case == "workers":
        flags = ["--direct_num_workers", "abc"]
        message = "--direct_num_workers: invalid int value: 'abc'"
    else:
        flags = ["--runner", "FlinkRunner"]
        message = "--flink_master: FlinkRunner needs the cluster's REST address, e.g. --flink_master localhost:8081"
    store = tmp_path / "m.sqlite"
    for command in commands:
        args = [command, str(path)] + (["--output", str(output), "--store", str(store), *flags]
                                       if command == "run" else [])
        code, out, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"dataprep: error: {message}"), err
    assert _store_is_empty(store) and not (tmp_path / "out").exists()


def test_8_latin1_utf16_and_nul_bytes_end_to_end(tmp_path, capsys):
    """(8) A Latin-1 file with `csv.encoding: latin-1` (its rows were quarantined invalid_utf8),
    UTF-16 LE and BE files with a BOM and no setting (a mojibake "no column(s)" error), a
    UTF-16 JSONL file, and NUL bytes in a field: the text is read as written, and each
    record holding a NUL is quarantined (`nul_byte`) instead of reaching an example_id."""
    import codecs
    import json

    data = tmp_path / "data"
    data.mkdir()
    cities = ["Zürich", "Genève", "Köln", "Łódź"]

    def lines(prefix, n=12, latin=False):
        return "".join(f"{prefix}{i},{'ab'[i % 2]},{i}.5,{i},{cities[i % (3 if latin else 4)]}\n" for i in range(n))

    head = "id,label,x,n,comment\n"
    (data / "latin1.csv").write_bytes((head + lines("l", latin=True)).encode("latin-1"))
    (data / "le.csv").write_bytes((head + lines("u")).encode("utf-16"))
    (data / "be.csv").write_bytes(codecs.BOM_UTF16_BE + (head + lines("b")).encode("utf-16-be"))
    (data / "nul.csv").write_bytes((head + lines("z")).encode().replace(b"z3,", b"z\x003,")
                                   .replace("z5,b,5.5,5,Genève\n".encode(), b'z5,b,5.5,5,"multi\nline\x00"\n'))
    records = [{"id": f"j{i}", "label": "ab"[i % 2], "x": i + 0.5, "n": i, "comment": cities[i % 4]} for i in range(12)]
    records[7]["id"] = "j\x007"
    (data / "u16.jsonl").write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-16"))
    path = _config(tmp_path, inputs=[
        {"path": "data/latin1.csv", "format": "csv", "csv": {"encoding": "latin-1"}},
        {"path": "data/le.csv", "format": "csv"}, {"path": "data/be.csv", "format": "csv"},
        {"path": "data/nul.csv", "format": "csv"}, {"path": "data/u16.jsonl", "format": "jsonl"}])
    code, _, err = run_cli(["validate", str(path)], capsys)
    assert code == 0, err
    code, summary, err = _run(tmp_path, capsys, path)
    assert code == 0, err
    assert summary["rows"]["input"] == 60 and summary["rows"]["quarantined"] == 3
    quarantined = sorted((os.path.basename(q["_source"]), q["_row"], q["reason"]) for q in _quarantine(summary))
    assert quarantined == [("nul.csv", 5, "nul_byte"), ("nul.csv", 7, "nul_byte"), ("u16.jsonl", 8, "nul_byte")]
    kept = {r["id"]: r for r in _split_rows(summary)}
    assert len(kept) == 57 and not any("\x00" in i for i in kept)
    assert kept["l1"]["comment"] == "Genève" and kept["u3"]["comment"] == "Łódź" and kept["b2"]["comment"] == "Köln"
    assert kept["j0"]["comment"] == "Zürich" and kept["z4"]["_row"] == 6 and kept["z6"]["_row"] == 9


def test_9_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """(9) A real full disk (a 300 KB tmpfs as the output, in a mount namespace of its own):
    one line naming the file that could not be written, no Beam traceback before it (was
    27 lines, and a last line naming no file); nothing is left on the disk."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT

    if not shutil.which("unshare") or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                                                     capture_output=True).returncode:
        pytest.skip("needs mount namespaces (unshare) to make a small disk")
    path = _config(tmp_path, _lines(20000))
    disk, store = tmp_path / "disk", tmp_path / "m.sqlite"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=300k tmpfs {disk} && {sys.executable} -m pipeline.cli run {path} "
              f"--output {disk}/out --store {store} --no-progress; code=$?; echo left: $(ls -A {disk}/out); exit $code")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dataprep: run failed: No space left on device: {disk}/out/.staging-"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert proc.stdout.strip() == "left:"                     # no staging folder left on the full disk
    runs = subprocess.run([sys.executable, "-m", "pipeline.cli", "runs", "--store", str(store), "--format", "json"],
                          cwd=ROOT, capture_output=True, text=True)
    [r] = json.loads(runs.stdout)
    assert r["status"] == "FAILED" and "No space left on device" in r["error"]


def test_9_a_write_error_without_a_file_name_is_named_and_beams_traceback_is_not_shown():
    """pyarrow's `[Errno 28] Error writing bytes to file` names no file: the writers name it
    (`naming`), and the failure line shows it; Beam's log of a failing DoFn (its traceback)
    is off unless --verbose."""
    import errno
    import logging

    from pipeline.cli import _quiet_libraries
    from pipeline.run import failure_line
    from transforms.batches import naming

    with pytest.raises(OSError) as raised:
        with naming("/out/.staging-x/tmp/spill/a.arrow"):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    wrapped = RuntimeError(f"{raised.value} [while running 'Split/AwaitThresholds/SpillRows']")
    wrapped.__cause__ = raised.value
    assert failure_line(wrapped) == "No space left on device: /out/.staging-x/tmp/spill/a.arrow"
    try:
        _quiet_libraries(False)
        assert not logging.getLogger("apache_beam.runners.common").isEnabledFor(logging.ERROR)
        _quiet_libraries(True)
        assert logging.getLogger("apache_beam.runners.common").isEnabledFor(logging.ERROR)
    finally:
        _quiet_libraries(False)


def test_9_a_store_of_random_bytes_is_one_line_without_sql(tmp_path, capsys):
    store = tmp_path / "m.sqlite"
    store.write_bytes(os.urandom(20000))
    path = _config(tmp_path)
    for args in (["run", str(path), "--output", str(tmp_path / "out"), "--store", str(store)],
                 ["runs", "--store", str(store)]):
        code, out, err = run_cli(args, capsys)
        assert code == 1 and err == (f"dataprep: error: metadata store {store}: file is not a database "
                                     "(not an ML Metadata SQLite store?)\n"), err
    assert not (tmp_path / "out").exists()


def test_9_a_reused_rerun_cleans_up_after_a_killed_run(tmp_path, capsys, monkeypatch):
    """A run killed (SIGKILL) in its clean stage leaves its staging folder; the rerun of the
    same config and inputs is reused, and before answering it closes the killed run as
    ABANDONED and removes that folder (it returned before that cleanup)."""
    import glob
    import json
    import signal

    path = _config(tmp_path, clean={"filters": ["tests.faults:slow"]})
    out, store, faults, tmp = tmp_path / "out", tmp_path / "m.sqlite", tmp_path / "faults", tmp_path / "tmp"
    faults.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("DATAPREP_FAULT_SLEEP", "0")
    code, first, err = _run(tmp_path, capsys, path)
    assert code == 0, err
    env = {**os.environ, "DATAPREP_FAULT_DIR": str(faults), "DATAPREP_FAULT_SLEEP": "120", "TMPDIR": str(tmp)}
    proc = _start_run(path, out, store, env)
    _wait_for((faults / "clean").exists, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    [staging] = glob.glob(str(out / ".staging-*"))
    assert os.listdir(staging)
    assert not glob.glob(str(tmp / "beam-pipeline-temp*"))      # Beam's temp folder is in the staging folder
    code, again, err = _run(tmp_path, capsys, path)
    assert code == 0 and again["reused_from"] == first["run_id"], err
    assert not os.path.exists(staging)
    code, listing, _ = run_cli(["runs", "--store", str(store), "--format", "json"], capsys)
    assert [r["status"] for r in json.loads(listing)] == ["COMPLETE", "ABANDONED"]


def test_9_a_header_only_input_warns_and_fails_the_input_gate(tmp_path, capsys):
    """A header-only input is said, and a run with no input row at all fails the default quality
    gate (min_input_rows: 1), publishing nothing; with the gate lowered it completes, empty."""
    path = _config(tmp_path, ["id,label,x,n,comment"])
    code, summary, err = _run(tmp_path, capsys, path)
    warning = (f"dataprep: warning: inputs[0].path: {tmp_path / 'data' / 'in.csv'} has no rows (only a header, "
               "or nothing); the run has no input rows at all\n")
    lines = err.splitlines(keepends=True)
    assert code == 1 and len(lines) == 2 and lines[0] == warning, err
    assert lines[1].startswith("dataprep: run failed: quality gate min_input_rows failed: the input has 0 rows, "
                               "fewer than 1"), err
    allowed = _config(tmp_path, ["id,label,x,n,comment"], expect={"min_input_rows": 0})
    code, summary, err = _run(tmp_path, capsys, allowed)
    assert code == 0 and summary["rows"]["input"] == 0 and err == warning, err


def test_9_beams_temp_folder_is_made_in_the_staging_folder(tmp_path):
    import apache_beam as beam

    from pipeline.layout import Layout, temp_folder

    layout = Layout(str(tmp_path / ".staging-r1"))
    with temp_folder(layout):
        p = beam.Pipeline()
    assert os.path.dirname(p.local_tempdir) == layout.tmp
    import tempfile

    assert tempfile.gettempdir() != layout.tmp
