"""The metadata store: failed runs, parallel runs, reuse, diff, per-example lineage,
manifests, and lineage walks with the plain ml_metadata API."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.config import parse_config
from pipeline.metadata import StoreLocation, open_store
from pipeline.run import run
from tests.conftest import ROOT, plain_mlmd_store, run_cli


def _small_config(tmp_path, rows=200, name="small", **extra):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = ["id,x,y,site"] + [f"e{i},{i % 17}.5,{'pos' if i % 3 == 0 else 'neg'},s{i % 4}" for i in range(rows)]
    (data / "part-1.csv").write_text("\n".join(lines) + "\n")
    cfg = {"name": name, "inputs": [{"path": str(data / "part-*.csv"), "format": "csv", "source": "generated"}],
           "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float", "y": "string"},
                      "metadata": ["site"]},
           "split": {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}}, "output": {"shards": 2}}
    cfg.update(extra)
    return cfg


def _store(path):
    return open_store(StoreLocation.parse(str(path)))


def test_failed_run_is_recorded_failed_with_the_message(tmp_path, capsys):
    cfg = _small_config(tmp_path, clean={"filters": ["tests.faults:explode"]})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    store = tmp_path / "m.sqlite"
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--store", str(store)], capsys)
    assert code == 1 and "injected failure in a DoFn" in err and "Traceback" not in err
    from ml_metadata.proto import metadata_store_pb2 as pb

    s = _store(store)
    [ctx] = s.get_contexts_by_type("pipeline_run")
    assert ctx.properties["status"].string_value == "FAILED"
    executions = s.get_executions_by_context(ctx.id)
    assert {e.last_known_state for e in executions} == {pb.Execution.FAILED}
    assert all("injected failure in a DoFn" in e.properties["error"].string_value for e in executions)
    ingest = [e for e in executions if e.name.endswith(":ingest")][0]
    inputs = [ev for ev in s.get_events_by_execution_ids([ingest.id]) if ev.type == pb.Event.INPUT]
    assert len(inputs) == 1                                   # what the failed run read is still there
    code, out, _ = run_cli(["runs", "--store", str(store)], capsys)
    assert code == 0 and "FAILED" in out and "injected failure" in out


def test_two_parallel_runs_on_one_sqlite_store(tmp_path):
    store = tmp_path / "shared.sqlite"
    procs = []
    for k in range(2):
        sub = tmp_path / f"p{k}"
        sub.mkdir()
        path = sub / "c.yaml"
        path.write_text(yaml.safe_dump(_small_config(sub, rows=300 + k, name=f"parallel-{k}")))
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(path), "--output",
                                       str(sub / "out"), "--store", str(store)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    s = _store(store)
    runs = s.get_contexts_by_type("pipeline_run")
    assert sorted(c.properties["status"].string_value for c in runs) == ["COMPLETE", "COMPLETE"]
    assert sorted(json.loads(c.properties["rows"].string_value)["input"] for c in runs) == [300, 301]


def test_rerun_is_reused_unless_forced_and_diff(tmp_path, capsys):
    cfg = _small_config(tmp_path)
    store = str(tmp_path / "m.sqlite")
    first = run(parse_config(cfg), output=str(tmp_path / "out"), store=store)
    again = run(parse_config(cfg), output=str(tmp_path / "out"), store=store)
    assert again["reused_from"] == first["run_id"] and again["output"] == first["output"]
    forced = run(parse_config(cfg), output=str(tmp_path / "out"), store=store, force=True)
    assert forced["run_id"] != first["run_id"] and "reused_from" not in forced
    cfg["split"]["fractions"] = {"train": 0.8, "test": 0.2}
    changed = run(parse_config(cfg, raw_text=yaml.safe_dump(cfg)), output=str(tmp_path / "out"), store=store)
    assert "reused_from" not in changed
    code, text, _ = run_cli(["diff", first["run_id"], changed["run_id"], "--store", store, "--format", "json"], capsys)
    d = json.loads(text)
    assert code == 0 and d["config_hash"]["a"] != d["config_hash"]["b"]
    assert d["rows"]["train"] == {"a": 120, "b": 160, "change": 40} and "dev" in d["rows"]
    assert not any(d["inputs"].values())
    code, text, _ = run_cli(["diff", first["run_id"], changed["run_id"], "--store", store], capsys)
    assert "config: changed" in text and "train: 120 → 160 (+40)" in text


def test_lineage_of_one_example(tmp_path, capsys):
    cfg = _small_config(tmp_path, clean={"dedup": {"keys": ["x", "y"]}})
    with open(tmp_path / "data" / "part-1.csv", "a") as f:
        f.write("e900,not-a-number,pos,s1\n")      # line 202: type:x
        f.write("e901,1.5\n")                      # line 203: too few fields, quarantined at ingest
    store = str(tmp_path / "m.sqlite")
    run(parse_config(cfg), output=str(tmp_path / "out"), store=store)
    code, text, _ = run_cli(["lineage", "--example", "e5", "--store", store, "--format", "json"], capsys)
    found = json.loads(text)
    assert code == 0 and found["row"] == 7 and found["source"].endswith("part-1.csv")
    assert found["input_artifact"]["uri"] == found["source"] and len(found["input_artifact"]["sha256"]) == 64
    assert found["found_in"]["type"] == "Examples" and found["found_in"]["split"] in ("train", "dev", "test")
    code, text, _ = run_cli(["lineage", "--example", "e60", "--store", store], capsys)   # a duplicate of e9
    assert code == 0 and "duplicates" in text.splitlines()[0] and "DataFile" in text
    code, _, err = run_cli(["lineage", "--example", "nope", "--store", store], capsys)
    assert code == 2 and "is in no split" in err
    # quarantined rows carry their example_id (issue 30): a clean-stage one by its id, one that the
    # reader could not parse by the default id of its source and line
    source = os.path.join(str(tmp_path), "data", "part-1.csv")
    code, text, _ = run_cli(["lineage", "--example", "e900", "--store", store], capsys)
    assert code == 0 and text.splitlines()[0] == (f"example e900 (run {found['run_id']}): quarantined: type:x "
                                                  f"(stage clean), from {source} line 202")
    default_id = f"{hashlib.sha1(source.encode()).hexdigest()[:12]}-203"
    code, text, _ = run_cli(["lineage", "--example", default_id, "--store", store, "--format", "json"], capsys)
    found = json.loads(text)
    assert code == 0 and found["found_in"]["type"] == "Quarantine" and found["row"] == 203
    assert (found["reason"], found["stage"]) == ("csv_field_count", "ingest")


def test_large_glob_gets_a_manifest_artifact(tmp_path):
    data = tmp_path / "many"
    data.mkdir()
    for i in range(101):
        (data / f"f{i:03d}.csv").write_text(f"id,x,y\nm{i},1.0,{'a' if i % 2 else 'b'}\n")
    cfg = {"name": "many", "inputs": [{"path": str(data / "*.csv"), "format": "csv", "source": "many files"}],
           "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float", "y": "string"}},
           "split": {"fractions": {"train": 0.5, "test": 0.5}}, "output": {"shards": 1}}
    store = str(tmp_path / "m.sqlite")
    summary = run(parse_config(cfg), output=str(tmp_path / "out"), store=store)
    s = _store(store)
    types = {t.id: t.name for t in s.get_artifact_types()}
    arts = [a for a in s.get_artifacts() if types[a.type_id] in ("DataFile", "DataManifest")]
    assert [types[a.type_id] for a in arts] == ["DataManifest"]
    listing = json.load(open(arts[0].uri))
    assert len(listing) == 101 and arts[0].properties["files"].int_value == 101
    assert arts[0].properties["rows"].int_value == summary["rows"]["input"] == 101


def test_plain_mlmd_every_train_shard_upstream_and_input_downstream(adult_run):
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = plain_mlmd_store(adult_run["store"])
    types = {t.id: t.name for t in store.get_artifact_types()}
    out = adult_run["summary"]["output"]

    def upstream(artifact_id):
        found, frontier = set(), [artifact_id]
        while frontier:
            execs = [e.execution_id for e in store.get_events_by_artifact_ids(frontier) if e.type == pb.Event.OUTPUT]
            frontier = [e.artifact_id for e in store.get_events_by_execution_ids(execs) if e.type == pb.Event.INPUT]
            found.update(frontier)
        return found

    shards = sorted(glob.glob(os.path.join(out, "transformed", "train", "*.parquet")))
    assert len(shards) == 2
    for shard in shards:
        [folder] = store.get_artifacts_by_uri(os.path.dirname(shard))
        files = [a for a in store.get_artifacts_by_id(sorted(upstream(folder.id))) if types[a.type_id] == "DataFile"]
        assert len(files) == 3

    [adult] = [a for a in store.get_artifacts_by_type("DataFile") if a.uri.endswith("adult.data")]
    seen, frontier = set(), [adult.id]
    while frontier:
        execs = [e.execution_id for e in store.get_events_by_artifact_ids(frontier) if e.type == pb.Event.INPUT]
        frontier = [e.artifact_id for e in store.get_events_by_execution_ids(execs)
                    if e.type == pb.Event.OUTPUT and e.artifact_id not in seen]
        seen.update(frontier)
    splits = {(a.properties["kind"].string_value, a.properties["split"].string_value)
              for a in store.get_artifacts_by_id(sorted(seen)) if types[a.type_id] == "Examples"}
    assert splits == {(k, s) for k in ("raw", "transformed") for s in ("train", "dev", "test")}
    run_ctx = store.get_context_by_type_and_name("pipeline_run", adult_run["summary"]["run_id"])
    props = run_ctx.properties
    assert props["status"].string_value == "COMPLETE" and props["config"].string_value.startswith("# UCI Adult")
    assert len(props["config_hash"].string_value) == 64 and props["user"].string_value
    assert json.loads(props["rows"].string_value) == adult_run["summary"]["rows"]
    [parent] = store.get_parent_contexts_by_context(run_ctx.id)
    assert parent.name == "adult-income" and parent.type == "pipeline"


def test_store_calls_are_retried_while_the_database_is_locked():
    from ml_metadata import errors

    from pipeline.metadata import _RetryingStore

    class Flaky:
        calls = 0

        def get_contexts(self):
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise errors.AbortedError("database is locked")
            return ["ok"]

        def get_artifacts(self):
            raise errors.InternalError("something else")

    store = _RetryingStore(Flaky(), first_wait=0.001)
    assert store.get_contexts() == ["ok"] and Flaky.calls == 3
    with pytest.raises(errors.InternalError, match="something else"):
        store.get_artifacts()
