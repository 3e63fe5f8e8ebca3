"""One end-to-end run on the real UCI Adult data (adult.data + adult.test + a fault slice),
shared by every assertion here (a TFT run has ~10-20 s of fixed cost)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import TESTS, plain_mlmd_store, run_cli, shared

SPLITS = ["train", "dev", "test"]
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
           "income"]


def _read(folder):
    return pq.read_table(folder).to_pandas()


@pytest.fixture(scope="module")
def out(adult_run):
    return adult_run["summary"]["output"]


def test_funnel_adds_up_in_the_json_line_and_on_disk(adult_run, out):
    rows = adult_run["summary"]["rows"]
    assert rows["input"] == rows["train"] + rows["dev"] + rows["test"] + rows["quarantined"] + rows["duplicates"]
    on_disk = {s: len(_read(os.path.join(out, "raw", s))) for s in SPLITS}
    on_disk["quarantined"] = len(_read(os.path.join(out, "quarantine")))
    on_disk["duplicates"] = len(_read(os.path.join(out, "duplicates")))
    assert on_disk == {k: rows[k] for k in on_disk}
    data_lines = sum(1 for _ in open(shared("adult.data")) if _.strip())
    test_lines = sum(1 for _ in open(shared("adult.test")) if _.strip())
    slice_lines = sum(1 for _ in open(os.path.join(TESTS, "data", "adult_label_faults.csv")))
    assert rows["input"] == data_lines + test_lines + slice_lines
    for s in SPLITS:
        assert len(_read(os.path.join(out, "transformed", s))) == rows[s]


def test_exact_duplicates_match_pandas(adult_run, out):
    data = pd.read_csv(shared("adult.data"), header=None, skipinitialspace=True)
    test = pd.read_csv(shared("adult.test"), header=None, skipinitialspace=True, skiprows=1)
    test[14] = test[14].str.rstrip(".")
    expected = int(pd.concat([data, test]).duplicated().sum())
    assert expected == 52
    assert adult_run["summary"]["rows"]["duplicates"] == expected
    dups = _read(os.path.join(out, "duplicates"))
    raw = pd.concat([_read(os.path.join(out, "raw", s)) for s in SPLITS])
    assert set(dups["kept_example_id"]) <= set(raw["example_id"])      # every kept copy is in a split
    assert not set(dups["example_id"]) & set(raw["example_id"])


def test_missing_labels_and_broken_lines_are_quarantined_with_reasons(adult_run, out):
    q = _read(os.path.join(out, "quarantine"))
    fault_slice = q[q["_source"].str.endswith("adult_label_faults.csv")]
    assert sorted(fault_slice["_row"]) == list(range(1, 13))
    assert set(fault_slice["reason"]) == {"missing_label"}
    assert fault_slice["record"].str.endswith(", ?").all()          # the original line, untouched
    junk = q[q["_source"].str.endswith("adult.test") & (q["_row"] == 1)]
    assert junk["reason"].tolist() == ["csv_field_count"] and junk["stage"].tolist() == ["ingest"]
    reasons = adult_run["report"]["quarantine_reasons"]
    assert reasons == {"clean": {"missing_label": 12}, "ingest": {"csv_field_count": 1}}


def test_per_stratum_counts_within_one_of_target(adult_run, out):
    raw = {s: _read(os.path.join(out, "raw", s)) for s in SPLITS}
    total = pd.concat(raw.values())["income"].value_counts()
    assert set(total.index) == {"<=50K", ">50K"}                     # "<=50K." was normalised
    for label, n in total.items():
        for s, f in zip(SPLITS, [0.6, 0.2, 0.2]):
            got = int((raw[s]["income"] == label).sum())
            assert abs(got - n * f) < 1, (label, s, got, n * f)
    assert adult_run["report"]["split"]["largest_deviation"] == 0


def test_train_z_features_are_standardised_and_dev_uses_train_stats(out):
    train = _read(os.path.join(out, "transformed", "train"))
    raw_train = _read(os.path.join(out, "raw", "train"))
    raw_dev = _read(os.path.join(out, "raw", "dev")).sort_values("example_id")
    dev = _read(os.path.join(out, "transformed", "dev")).sort_values("example_id")
    for col in ["age", "fnlwgt", "education_num", "hours_per_week"]:
        z = train[f"{col}_xf"].to_numpy(np.float64)
        assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3, col
        mean, std = raw_train[col].mean(), raw_train[col].std(ddof=0)
        np.testing.assert_allclose(dev[f"{col}_xf"], (raw_dev[col] - mean) / std, rtol=1e-4, atol=1e-4)


def test_metadata_and_ids_ride_along(out):
    t = _read(os.path.join(out, "transformed", "train"))
    r = _read(os.path.join(out, "raw", "train"))
    for col in ["race", "sex", "native_country", "income", "example_id", "_source", "_row"]:
        assert col in t.columns
    merged = t.merge(r, on="example_id", suffixes=("_t", "_r"))
    assert len(merged) == len(t)
    assert (merged["race_t"] == merged["race_r"]).all()
    assert (merged["_row_t"] == merged["_row_r"]).all()


def test_transform_fn_loads_with_tft(out):
    import tensorflow_transform as tft

    tf_output = tft.TFTransformOutput(out)
    assert "age_xf" in tf_output.transformed_feature_spec()
    assert tf_output.vocabulary_size_by_name("workclass") >= 8


def test_plain_mlmd_walks_from_a_train_shard_to_the_input_files(adult_run, out):
    """Only the ml_metadata API here: no code of this project."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    store = plain_mlmd_store(adult_run["store"])
    shard = sorted(glob.glob(os.path.join(out, "transformed", "train", "part-*.parquet")))[0]
    [start] = store.get_artifacts_by_uri(os.path.dirname(shard))
    types = {t.id: t.name for t in store.get_artifact_types()}
    assert types[start.type_id] == "Examples" and start.properties["split"].string_value == "train"

    frontier, seen_types, files = [start.id], set(), []
    while frontier:
        events = store.get_events_by_artifact_ids(frontier)
        producers = [e.execution_id for e in events if e.type == pb.Event.OUTPUT]
        inputs = [e.artifact_id for e in store.get_events_by_execution_ids(producers) if e.type == pb.Event.INPUT]
        frontier = sorted(set(inputs))
        for a in store.get_artifacts_by_id(frontier):
            seen_types.add(types[a.type_id])
            if types[a.type_id] == "DataFile":
                files.append(a)
    assert {"Examples", "CleanData", "RawData", "DataFile"} <= seen_types
    assert sorted(os.path.basename(a.uri) for a in files) == ["adult.data", "adult.test", "adult_label_faults.csv"]
    for a in files:
        assert len(a.properties["sha256"].string_value) == 64 and a.properties["rows"].int_value > 0
    adult = [a for a in files if a.uri.endswith("adult.data")][0]
    assert adult.properties["rows"].int_value == 32561
    executions = store.get_executions_by_context(
        store.get_context_by_type_and_name("pipeline_run", adult_run["summary"]["run_id"]).id)
    assert {e.last_known_state for e in executions} == {pb.Execution.COMPLETE}
    assert len(executions) == 5


def test_lineage_and_runs_commands(adult_run, out, capsys):
    train = os.path.join(out, "raw", "train")
    code, text, _ = run_cli(["lineage", train], capsys)       # store found through the run's report (SQLite or MySQL)
    assert code == 0
    assert text.splitlines()[0].startswith(f"Examples  {train}")
    assert "dataprep.split [COMPLETE]" in text and "DataFile" in text and "adult.data" in text
    code, text, _ = run_cli(["lineage", shared("adult.data"), "--store", adult_run["store"],
                             "--direction", "downstream", "--format", "json"], capsys)
    graph = json.loads(text)
    uris = {n.get("uri") for n in graph["nodes"]}
    for s in SPLITS:
        assert os.path.join(out, "raw", s) in uris and os.path.join(out, "transformed", s) in uris
    code, text, _ = run_cli(["lineage", adult_run["summary"]["run_id"], "--store", adult_run["store"],
                             "--format", "dot"], capsys)
    assert code == 0 and text.startswith("digraph lineage {") and "->" in text
    code, text, _ = run_cli(["runs", "--store", adult_run["store"]], capsys)
    assert code == 0 and adult_run["summary"]["run_id"] in text and "COMPLETE" in text
    code, _, err = run_cli(["lineage", "/nowhere/at/all", "--store", adult_run["store"]], capsys)
    assert code == 2 and "no artifact" in err


def test_same_seed_gives_byte_identical_raw_splits(adult_run, out, tmp_path):
    """A second run (same config and seed, features left out to save time) writes the same bytes."""
    import yaml

    from pipeline.config import parse_config
    from pipeline.run import run

    cfg_path = os.path.join(TESTS, "configs", "adult.yaml")
    data = yaml.safe_load(open(cfg_path))
    data.pop("features")
    cfg = parse_config(data, base_dir=os.path.dirname(cfg_path))
    second = run(cfg, output=str(tmp_path), store=str(tmp_path / "m.sqlite"))
    for s in SPLITS:
        a = sorted(glob.glob(os.path.join(out, "raw", s, "*.parquet")))
        b = sorted(glob.glob(os.path.join(second["output"], "raw", s, "*.parquet")))
        assert [os.path.basename(x) for x in a] == [os.path.basename(x) for x in b]
        for x, y in zip(a, b):
            assert open(x, "rb").read() == open(y, "rb").read(), x


def test_report_summarises_the_analysed_statistics(adult_run, out):
    features = adult_run["report"]["features"]["columns"]
    train = _read(os.path.join(out, "raw", "train"))
    assert abs(features["age"]["mean"] - train["age"].mean()) < 1e-3 * train["age"].mean()
    assert abs(features["age"]["std"] - train["age"].std(ddof=0)) < 1e-3 * train["age"].std(ddof=0)
    assert features["workclass"]["vocabulary_size"] == train["workclass"].nunique()
    assert len(features["capital_gain"]["boundaries"]) == 19
