"""OpenLineage events (pipeline/openlineage.py, openlineage_events.py): every event of a real run,
written by openlineage-python's file transport, validated against the spec (tests/openlineage_spec.py);
the parent handed over by a scheduler; the facts in them checked against the run's own record (MLMD,
report.json, the files); no event and no word without a configured transport; a transport that fails
does not fail the run; the column lineage of declarative features and of a preprocessing_fn's TFT graph."""

from __future__ import annotations

import csv
import json
import os
import re
import uuid

import pytest

from pipeline.openlineage import RunLineage, transport_configured
from pipeline.openlineage_events import (ColumnSource, JobRef, closed_events, dataset_id, declarative_lineage,
                                         traced_lineage)
from tests.conftest import example_config, plain_mlmd_store, run_cli
from tests.openlineage_spec import check_event, read_events

PARENT = "airflow-ns/dataprep_daily.run/01937c4e-8f6a-7b3c-9d2e-0123456789ab"
ROOT_PARENT = "airflow-ns/dataprep_daily/01937c4e-8f6a-7b3c-9d2e-ba9876543210"


@pytest.fixture
def no_openlineage(monkeypatch, tmp_path):
    """An environment without any OpenLineage configuration (variables, files in cwd or ~)."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _file_transport(monkeypatch, path):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")


# ---- pure parts -------------------------------------------------------------------------------


def test_parent_id_is_namespace_job_run_id():
    ref = JobRef.parse(PARENT)
    assert (ref.namespace, ref.name, ref.run_id) == ("airflow-ns", "dataprep_daily.run", PARENT.rsplit("/", 1)[1])
    assert JobRef.parse("ns/a/b/" + str(uuid.uuid4())).name == "a/b"   # a job name may hold '/'
    for bad in ("ns/job", "ns//" + str(uuid.uuid4()), "ns/job/not-a-uuid", ""):
        with pytest.raises(ValueError):
            JobRef.parse(bad)


def test_dataset_names_follow_the_naming_spec(tmp_path, monkeypatch):
    assert dataset_id("/data/in/x.csv") == ("file", "/data/in/x.csv")
    assert dataset_id("file:///data/out/raw/train") == ("file", "/data/out/raw/train")
    assert dataset_id("gs://bucket/dataprep/run/raw/train") == ("gs://bucket", "dataprep/run/raw/train")
    assert dataset_id("s3://b/k/x.parquet") == ("s3://b", "k/x.parquet")
    assert dataset_id("https://user:secret@host:8443/x.csv") == ("https://host:8443", "/x.csv")
    monkeypatch.chdir(tmp_path)
    assert dataset_id("rel/x.csv") == ("file", str(tmp_path / "rel" / "x.csv"))


def test_transport_configured_the_clients_way(no_openlineage, monkeypatch, capsys):
    assert not transport_configured()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", "http://127.0.0.1:18799")   # no type: the client prints
    assert not transport_configured()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    assert transport_configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not transport_configured()
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    for k in ("OPENLINEAGE__TRANSPORT__URL", "OPENLINEAGE__TRANSPORT__TYPE"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:18799")
    assert transport_configured()
    monkeypatch.delenv("OPENLINEAGE_URL")
    (no_openlineage / "openlineage.yml").write_text("transport:\n  type: console\n")   # cwd
    assert transport_configured()
    (no_openlineage / "openlineage.yml").unlink()
    other = no_openlineage / "ol.yml"
    other.write_text("transport:\n  type: file\n  log_file_path: x\n")
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(other))
    assert transport_configured()
    _, err = capsys.readouterr()
    assert "OpenLineage" not in err and "console" not in err


def test_nothing_without_a_transport(no_openlineage, capsys):
    cfg = example_config(no_openlineage / "data", 5)
    lineage = RunLineage.for_run(cfg, "r1", _when(), [], "DirectRunner", "store", "/out/r1", "0")
    assert not lineage.active
    lineage.start(1)
    lineage.closed("FAILED", "boom")
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_a_transport_that_fails_is_one_warning_and_no_exception(no_openlineage, monkeypatch, capsys):
    folder = no_openlineage / "a-folder"
    folder.mkdir()
    _file_transport(monkeypatch, folder)   # a folder where the file should be: every write fails
    cfg = example_config(no_openlineage / "data", 5)
    from pipeline.inputs import fingerprinted, match_inputs

    lineage = RunLineage.for_run(cfg, "r1", _when(), fingerprinted(match_inputs(cfg)), "DirectRunner", "store",
                                 "/out/r1", "0")
    assert lineage.active
    lineage.start(1)
    lineage.stages_started(["ingest", "clean"])
    lineage.closed("FAILED", "boom")
    _, err = capsys.readouterr()
    assert err.count("warning: OpenLineage: events not sent") == 1, err


def test_missing_values_are_counted_per_file_and_column():
    import pyarrow as pa

    from pipeline.report import _null_tally

    batch = pa.RecordBatch.from_pydict({"a": ["x", None, None, "y"], "b": ["1", "2", "3", None],
                                        "_source": ["f1", "f1", "f2", "f2"], "_row": [2, 3, 2, 3]})
    assert _null_tally(batch) == {"null:f1\ta": 1, "null:f2\ta": 1, "null:f2\tb": 1}


def test_closed_events_fail_or_abort_and_validate():
    from pipeline.openlineage_events import InputFacts, RunFacts

    facts = RunFacts(namespace="dataprep", job="p", run_id="20260101T000000Z-abcdef", started=_when(),
                     inputs=(InputFacts("/in/a.csv", "data", (("x", "float"),), "a note", "csv", 10),),
                     config_hash="h", code_version="0.1.0", runner="DirectRunner", store="/s", output="/o/r",
                     parent=JobRef.parse(PARENT), stages=("ingest", "clean"))
    for status, state in (("FAILED", "FAIL"), ("CANCELED", "ABORT")):
        events = [json.loads(_json(e)) for e in closed_events(facts, status, "canceled by SIGTERM")]
        assert [e["eventType"] for e in events] == [state] * 3
        assert events[-1]["run"]["facets"]["errorMessage"]["message"] == "canceled by SIGTERM"
        assert events[-1]["run"]["facets"]["dataprep"]["status"] == status
        for e in events:
            check_event(e)


def test_declarative_feature_lineage_is_exact():
    from transforms.features import FeatureSpec

    lineage = declarative_lineage([FeatureSpec("brightness", "zscore"), FeatureSpec("camera", "hash", arg=8),
                                   FeatureSpec("text", "tfidf", arg=50), FeatureSpec("n", "passthrough")])
    assert {s.kind for s in lineage["brightness_xf"]} == {"direct", "analyzed"}
    assert {s.column for s in lineage["brightness_xf"]} == {"brightness"}
    assert [s.kind for s in lineage["camera_xf"]] == ["direct"]          # hashing needs no analyzer
    assert set(lineage) == {"brightness_xf", "camera_xf", "text_xf_ids", "text_xf_weights", "n_xf"}
    assert [s.kind for s in lineage["n_xf"]] == ["direct"]


def test_preprocessing_fn_lineage_from_the_tft_graph():
    import tensorflow as tf
    import tensorflow_transform as tft

    from tests.user_features import preprocessing_fn
    from transforms.features import FeatureSpec, declarative_preprocessing_fn
    from transforms.features.adapter import feature_spec_for
    from transforms.features.lineage import output_sources

    sms = output_sources(preprocessing_fn, feature_spec_for({"text": "string", "spam": "string"}))
    assert set(sms) == {"length_z", "n_tokens", "words"}
    assert sms["length_z"].direct == {"text"} and sms["length_z"].analyzed == {"text"}   # mean and var of length
    assert sms["n_tokens"].direct == {"text"} and not sms["n_tokens"].analyzed
    assert sms["words"].analyzed == {"text"}   # through the vocabulary's lookup table, which TFT's analysis stops at

    def crossed(inputs):
        a, b = (tf.sparse.to_dense(inputs[c]) for c in ("a", "b"))
        return {"a_minus_mean_b": a - tft.mean(b), "z2a": tft.scale_to_z_score(a * 2.0),
                "b_over_max_of_z": b / tft.max(tft.scale_to_z_score(inputs["c"].values))}

    got = output_sources(crossed, feature_spec_for({"a": "float", "b": "float", "c": "float", "unused": "float"}))
    assert got["a_minus_mean_b"].direct == {"a"} and got["a_minus_mean_b"].analyzed == {"b"}
    assert got["z2a"].direct == {"a"} and got["z2a"].analyzed == {"a"}
    assert got["b_over_max_of_z"].direct == {"b"} and got["b_over_max_of_z"].analyzed == {"c"}   # chained analyzers
    # the declarative functions traced the same way agree with declarative_lineage
    specs = [FeatureSpec("x", "zscore"), FeatureSpec("f", "vocabulary"), FeatureSpec("h", "hash", arg=4)]
    traced = traced_lineage(output_sources(declarative_preprocessing_fn(specs, {"x": "float", "f": "string",
                                                                                "h": "string"}),
                                           feature_spec_for({"x": "float", "f": "string", "h": "string"})))
    exact = declarative_lineage(specs)
    assert {k: {(s.column, s.kind) for s in v} for k, v in traced.items()} == \
        {k: {(s.column, s.kind) for s in v} for k, v in exact.items()}


# ---- one real run, its events -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ol_run(tmp_path_factory):
    """The example pipeline run once with the file transport and a scheduler's parent."""
    import contextlib
    import io

    from pipeline.cli import main

    tmp = tmp_path_factory.mktemp("ol")
    events = tmp / "events.jsonl"
    env = {"OPENLINEAGE__TRANSPORT__TYPE": "file", "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(events),
           "OPENLINEAGE__TRANSPORT__APPEND": "true", "OPENLINEAGE_PARENT_ID": PARENT,
           "OPENLINEAGE_ROOT_PARENT_ID": ROOT_PARENT, "OPENLINEAGE_NAMESPACE": "team-ml"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cfg = example_config(tmp / "data", 150)
        raw = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        path = tmp / "config.json"
        path.write_text(json.dumps(raw))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(path), "--output", str(tmp / "out"), "--no-progress"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 0, err.getvalue()
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return {"events": read_events(str(events)), "summary": summary, "report": report, "data": tmp / "data",
            "stderr": err.getvalue()}


def test_every_event_validates_against_the_spec(ol_run):
    used = set()
    for event in ol_run["events"]:
        used.update(check_event(event))
    names = {re.split(r"[/:]", u)[-1] for u in used}
    assert {"ParentRunFacet.json", "SchemaDatasetFacet.json", "DatasourceDatasetFacet.json",
            "DataQualityMetricsInputDatasetFacet.json", "OutputStatisticsOutputDatasetFacet.json",
            "ColumnLineageDatasetFacet.json", "JobTypeJobFacet.json", "DataprepRunFacet.json"} <= names
    assert "warning" not in ol_run["stderr"]


def test_one_start_and_one_complete_per_job_and_the_run_last(ol_run):
    events = ol_run["events"]
    jobs = [(e["job"]["name"], e["eventType"]) for e in events]
    stages = ["ingest", "clean", "labels", "split", "transform", "write"]
    assert jobs[0] == ("visual-inspection", "START") and jobs[-1] == ("visual-inspection", "COMPLETE")
    for name in ["visual-inspection"] + [f"visual-inspection.{s}" for s in stages]:
        assert sorted(t for n, t in jobs if n == name) == ["COMPLETE", "START"], name
    assert {e["job"]["namespace"] for e in events} == {"team-ml"}
    run_ids = {e["job"]["name"]: e["run"]["runId"] for e in events}
    assert len(set(run_ids.values())) == 7 and all(uuid.UUID(r).version == 7 for r in run_ids.values())


def test_the_scheduler_is_the_parent_and_the_run_parents_its_stages(ol_run):
    events = ol_run["events"]
    run = [e for e in events if e["job"]["name"] == "visual-inspection"]
    parent = JobRef.parse(PARENT)
    for e in run:
        p = e["run"]["facets"]["parent"]
        assert (p["job"]["namespace"], p["job"]["name"], p["run"]["runId"]) == (parent.namespace, parent.name,
                                                                                  parent.run_id)
        assert p["root"]["run"]["runId"] == ROOT_PARENT.rsplit("/", 1)[1]
    run_id = run[0]["run"]["runId"]
    for e in events:
        if e["job"]["name"] != "visual-inspection":
            p = e["run"]["facets"]["parent"]
            assert p["run"]["runId"] == run_id and p["job"]["name"] == "visual-inspection"
            assert p["root"]["job"]["name"] == "dataprep_daily"   # the scheduler's root, handed down
            assert e["job"]["facets"]["jobType"]["jobType"] == "TASK"


def test_inputs_carry_schema_source_and_quality_metrics(ol_run):
    complete = ol_run["events"][-1]
    report = ol_run["report"]
    data = {i["name"]: i for i in complete["inputs"] if "inspection-" in i["name"]}
    labels = [i for i in complete["inputs"] if "labels-" in i["name"]]
    assert len(data) == 2 and labels
    for name, ds in data.items():
        assert ds["namespace"] == "file" and os.path.isabs(name)
        assert [f["name"] for f in ds["facets"]["schema"]["fields"]][:2] == ["image_id", "brightness"]
        assert ds["facets"]["dataSource"]["name"] == "file"
        dq = ds["inputFacets"]["dataQualityMetrics"]
        assert dq["rowCount"] == report["inputs"][name] and dq["bytes"] == os.path.getsize(name)
        # an independent count (Python's csv module) where it reads the file as dataprep does
        with open(name, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
        if len(records) == dq["rowCount"]:
            assert dq["columnMetrics"]["comment"]["nullCount"] == sum(1 for r in records if r["comment"] == "")
            assert dq["columnMetrics"]["image_id"]["nullCount"] == 0
    assert sum(i["inputFacets"]["dataQualityMetrics"]["rowCount"] for i in data.values()) == report["rows"]["input"]


def test_outputs_carry_schema_statistics_and_column_lineage(ol_run):
    complete = ol_run["events"][-1]
    summary = ol_run["summary"]
    root = summary["output"]
    outputs = {ds["name"]: ds for ds in complete["outputs"]}
    for s in ("train", "dev", "test"):
        for kind in ("raw", "transformed"):
            ds = outputs[os.path.join(root, kind, s)]
            stats = ds["outputFacets"]["outputStatistics"]
            folder = os.path.join(root, kind, s)
            assert stats["rowCount"] == summary["rows"][s]
            assert stats["fileCount"] == len(os.listdir(folder))
            assert stats["size"] == sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert outputs[os.path.join(root, "quarantine")]["outputFacets"]["outputStatistics"]["rowCount"] == \
        summary["rows"]["quarantined"]
    assert outputs[os.path.join(root, "duplicates")]["outputFacets"]["outputStatistics"]["rowCount"] == \
        summary["rows"]["duplicates"]
    assert outputs[os.path.join(root, "review")]["outputFacets"]["outputStatistics"]["rowCount"] == \
        ol_run["report"]["review"]["queued"]
    import pyarrow.parquet as pq

    dev = outputs[os.path.join(root, "transformed", "dev")]
    written = pq.read_schema(os.path.join(root, "transformed", "dev", sorted(os.listdir(
        os.path.join(root, "transformed", "dev")))[0]))
    assert [f["name"] for f in dev["facets"]["schema"]["fields"]] == written.names
    fields = dev["facets"]["columnLineage"]["fields"]
    raw_dev, raw_train = os.path.join(root, "raw", "dev"), os.path.join(root, "raw", "train")
    b = {(i["name"], i["field"], t["subtype"]) for i in fields["brightness_xf"]["inputFields"]
         for t in i["transformations"]}
    assert b == {(raw_dev, "brightness", "TRANSFORMATION"), (raw_train, "brightness", "AGGREGATION")}
    assert {(i["name"], i["field"]) for i in fields["factory_xf"]["inputFields"]} == {(raw_dev, "factory"),
                                                                                      (raw_train, "factory")}
    assert fields["defect"]["inputFields"] == [{"namespace": "file", "name": raw_dev, "field": "defect",
                                                "transformations": [{"type": "DIRECT", "subtype": "IDENTITY",
                                                                     "masking": False}]}]
    assert set(fields) <= set(written.names)


def test_the_dataprep_facet_ties_the_event_to_mlmd_and_the_report(ol_run):
    complete = ol_run["events"][-1]
    facet = complete["run"]["facets"]["dataprep"]
    summary, report = ol_run["summary"], ol_run["report"]
    [ctx] = [c for c in plain_mlmd_store(summary["store"]).get_contexts_by_type("pipeline_run")
             if c.name == summary["run_id"]]
    assert facet["mlmdRunContextId"] == ctx.id and facet["runId"] == summary["run_id"]
    assert facet["rows"] == summary["rows"] and facet["quarantine"] == report["quarantine_reasons"]
    assert facet["hlp"] == pytest.approx(report["labels"]["overall"]["hlp"]["value"])
    assert facet["status"] == "COMPLETE" and facet["configHash"] == report["config_hash"]
    assert complete["run"]["facets"]["processing_engine"]["name"] == "Apache Beam"


def test_a_failed_run_sends_fail_with_its_error(tmp_path, capsys, monkeypatch):
    events = tmp_path / "events.jsonl"
    _file_transport(monkeypatch, events)
    cfg = example_config(tmp_path / "data", 20)
    raw = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    raw["features"] = {}
    raw["clean"]["filters"] = ["tests.faults:explode"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    code, _, err = run_cli(["run", str(path), "--output", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 1, err
    got = read_events(str(events))
    assert [e["eventType"] for e in got if e["job"]["name"] == "visual-inspection"] == ["START", "FAIL"]
    assert {e["eventType"] for e in got if e["job"]["name"] != "visual-inspection"} == {"START", "FAIL"}
    assert "injected failure" in got[-1]["run"]["facets"]["errorMessage"]["message"]
    assert "parent" not in got[-1]["run"]["facets"]   # no scheduler: no parent
    for e in got:
        check_event(e)


def _when():
    import datetime as dt

    return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def _json(event) -> str:
    from openlineage.client.serde import Serde

    return Serde.to_json(event)
