"""`output.formats: [parquet, tfrecord]` and `output.statistics: true` end to end, on the example:
TFX's layout, the TFRecords equal to the Parquet shards row by row, the statistics, and the TFX
artifacts in MLMD. One run shared by the tests (tests/integration/test_tfx.py runs real TFX on
such a run)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import example_config, plain_mlmd_store, run_cli

SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def tfx_run(tmp_path_factory):
    from pipeline.run import run

    cfg = example_config(tmp_path_factory.mktemp("vi"), rows=600)
    cfg.output.formats = ["parquet", "tfrecord"]
    cfg.output.statistics = True
    out = tmp_path_factory.mktemp("tfx_out")
    store = str(out / "metadata.sqlite")
    summary = run(cfg, output=str(out), store=store)
    return {"summary": summary, "root": summary["output"], "rows": summary["rows"], "store": store, "shards":
            cfg.output.shards}


def _examples(path: str):
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    return [example_pb2.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def _as_python(feature, arrow_type: pa.DataType):
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else None
    if values is None:
        return None
    if pa.types.is_string(arrow_type):
        values = [v.decode() for v in values]
    if pa.types.is_list(arrow_type):
        return values
    assert len(values) == 1
    return values[0]


def _comparable(value, arrow_type: pa.DataType):
    """A Parquet value as a tf.Example holds it: float64 rounded to float32, booleans as 0/1."""
    if value is None:
        return None
    if pa.types.is_floating(arrow_type):
        return float(np.float32(value))
    if pa.types.is_list(arrow_type) and pa.types.is_floating(arrow_type.value_type):
        return [float(np.float32(v)) for v in value]
    if pa.types.is_boolean(arrow_type):
        return int(value)
    return value


def _rows_of(examples, schema: pa.Schema):
    return [{f.name: _as_python(e.features.feature[f.name], f.type) if f.name in e.features.feature else None
             for f in schema} for e in examples]


def test_tfx_layout_holds_data_files_only(tfx_run):
    root, n = tfx_run["root"], tfx_run["shards"]
    assert sorted(os.listdir(os.path.join(root, "tfx"))) == ["raw", "statistics", "transformed"]
    for kind in ("raw", "transformed"):
        assert sorted(os.listdir(os.path.join(root, "tfx", kind))) == sorted(f"Split-{s}" for s in SPLITS)
        for s in SPLITS:
            folder = os.path.join(root, "tfx", kind, f"Split-{s}")
            # TFX globs `Split-<name>/*`: nothing but the shards, no _SUCCESS, no folder
            assert sorted(os.listdir(folder)) == [f"part-{k:05d}-of-{n:05d}.tfrecord.gz" for k in range(n)]
    for s in SPLITS:
        assert os.listdir(os.path.join(root, "tfx", "statistics", f"Split-{s}")) == ["FeatureStats.pb"]
    assert not glob.glob(os.path.join(root, "raw", "*", "*.gz"))    # the contract's Parquet folders are unchanged


def test_raw_tfrecord_shards_are_the_parquet_shards_row_by_row(tfx_run):
    """The same ordered shard table encoded twice: shard k of each format, the same rows in the
    same order, every column (floats as float32, tf.Example's only float)."""
    root, n = tfx_run["root"], tfx_run["shards"]
    for s in SPLITS:
        total = 0
        for k in range(n):
            table = pq.read_table(os.path.join(root, "raw", s, f"part-{k:05d}-of-{n:05d}.parquet"))
            examples = _examples(os.path.join(root, "tfx", "raw", f"Split-{s}", f"part-{k:05d}-of-{n:05d}.tfrecord.gz"))
            expected = [{f.name: _comparable(row[f.name], f.type) for f in table.schema} for row in table.to_pylist()]
            assert _rows_of(examples, table.schema) == expected
            total += len(examples)
        assert total == tfx_run["rows"][s]


def test_transformed_tfrecords_equal_the_parquet_shards_through_example_id(tfx_run):
    """Item 4's parity: what a TFX Trainer reads (the TFRecords) is what `transformed/` holds,
    every transformed feature bit for bit, matched by example_id."""
    root = tfx_run["root"]
    for s in SPLITS:
        table = pq.read_table(os.path.join(root, "transformed", s))
        parquet = {row["example_id"]: row for row in table.to_pylist()}
        examples = [e for path in sorted(glob.glob(os.path.join(root, "tfx", "transformed", f"Split-{s}", "*")))
                    for e in _examples(path)]
        records = {row["example_id"]: row for row in _rows_of(examples, table.schema)}
        assert len(records) == len(examples) == len(parquet) == tfx_run["rows"][s]
        features = [f for f in table.schema if f.name.endswith("_xf")]
        assert {f.name for f in features} == {"brightness_xf", "factory_xf", "camera_xf"}
        for example_id, row in parquet.items():
            got = records[example_id]
            for f in table.schema:
                assert got[f.name] == _comparable(row[f.name], f.type), (example_id, f.name)
            assert all(np.float32(row[f.name]) == got[f.name] for f in features)   # TFT's float32, exactly


def test_statistics_are_tfdvs_of_the_raw_splits(tfx_run):
    from transforms.statistics import tfdv

    root = tfx_run["root"]
    for s in SPLITS:
        stats = tfdv().load_stats_binary(os.path.join(root, "tfx", "statistics", f"Split-{s}", "FeatureStats.pb"))
        [dataset] = stats.datasets
        table = pq.read_table(os.path.join(root, "raw", s))
        assert dataset.num_examples == tfx_run["rows"][s] == table.num_rows
        by_name = {f.path.step[0]: f for f in dataset.features}
        assert set(by_name) == set(table.schema.names)
        for name in table.schema.names:
            f = by_name[name]
            common = (f.num_stats if f.HasField("num_stats") else f.string_stats).common_stats
            assert common.num_missing == table.column(name).null_count, name
            assert common.num_non_missing == table.num_rows - table.column(name).null_count, name
        brightness = table.column("brightness").to_pandas().to_numpy(np.float32)
        assert by_name["brightness"].num_stats.mean == pytest.approx(float(np.nanmean(brightness)), rel=1e-5)
        assert by_name["brightness"].num_stats.max == pytest.approx(float(np.nanmax(brightness)))


def _store_view(store: str):
    s = plain_mlmd_store(store)
    types = {t.id: t.name for t in s.get_artifact_types()}
    return s, types


def test_tfx_artifacts_in_mlmd(tfx_run):
    from ml_metadata.proto import metadata_store_pb2 as pb

    s, types = _store_view(tfx_run["store"])
    root, run_id = tfx_run["root"], tfx_run["summary"]["run_id"]
    run_ctx = s.get_context_by_type_and_name("pipeline_run", run_id)
    in_run = {a.id: a for a in s.get_artifacts_by_context(run_ctx.id)}
    tfx_examples = {a.properties["kind"].string_value: a for a in in_run.values()
                    if types[a.type_id] == "Examples" and "payload_format" in a.custom_properties}
    assert sorted(tfx_examples) == ["raw", "transformed"]
    executions = {e.name.split(":")[-1]: e for e in s.get_executions_by_context(run_ctx.id)}
    for kind, a in tfx_examples.items():
        assert a.uri == os.path.join(root, "tfx", kind) and a.state == pb.Artifact.LIVE
        assert json.loads(a.properties["split_names"].string_value) == list(SPLITS)
        assert a.properties["span"].int_value == 0 and a.properties["version"].int_value == 0
        assert not a.properties["split"].string_value       # all splits, not one
        assert {k: v.string_value for k, v in a.custom_properties.items()} == {
            "payload_format": "FORMAT_TF_EXAMPLE", "file_format": "tfrecords_gzip", "tfx_version": "1.16.0"}
        # made by the stage that made the per-split Parquet artifacts of the same rows
        stage = "split" if kind == "raw" else "transform"
        made = [ev for ev in s.get_events_by_execution_ids([executions[stage].id]) if ev.type == pb.Event.OUTPUT]
        mine = [ev for ev in made if ev.artifact_id == a.id]
        assert len(mine) == 1 and [st.key for st in mine[0].path.steps if st.HasField("key")] == ["examples"]
        siblings = {in_run[ev.artifact_id].uri for ev in made if ev.artifact_id in in_run
                    and types[in_run[ev.artifact_id].type_id] == "Examples"
                    and in_run[ev.artifact_id].properties["kind"].string_value == kind}
        assert siblings == {os.path.join(root, kind, sp) for sp in SPLITS} | {a.uri}
    [stats] = [a for a in in_run.values() if types[a.type_id] == "ExampleStatistics"]
    assert stats.uri == os.path.join(root, "tfx", "statistics") and stats.state == pb.Artifact.LIVE
    assert json.loads(stats.properties["split_names"].string_value) == list(SPLITS)
    assert stats.custom_properties["tfx_version"].string_value == "1.16.0"
    [graph] = [a for a in in_run.values() if types[a.type_id] == "TransformGraph"]
    assert graph.uri == root and {"transform_fn", "transformed_metadata", "metadata"} <= set(os.listdir(root))


def test_lineage_reads_tfrecord_paths_and_examples_still_resolve(tfx_run, capsys):
    root, store = tfx_run["root"], tfx_run["store"]
    shard = sorted(glob.glob(os.path.join(root, "tfx", "raw", "Split-train", "*.gz")))[0]
    code, text, _ = run_cli(["lineage", shard, "--store", store, "--format", "json"], capsys)
    assert code == 0, text
    uris = {n.get("uri") for n in json.loads(text)["nodes"]}
    assert os.path.join(root, "tfx", "raw") in uris and any(u and u.endswith(".csv") for u in uris)
    example_id = pq.read_table(os.path.join(root, "raw", "dev")).column("example_id")[0].as_py()
    code, text, _ = run_cli(["lineage", "--example", example_id, "--store", store, "--format", "json"], capsys)
    found = json.loads(text)
    assert code == 0 and found["found_in"]["uri"] == os.path.join(root, "raw", "dev")


def _function(text: str, name: str) -> str:
    start = text.index(f"def {name}(")
    end = text.index("\n", text.index(".with_id(node_id)", start))
    return text[start:end]


def test_the_readme_shows_the_importer_code_the_tfx_test_runs():
    from tests.conftest import ROOT

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    script = open(os.path.join(ROOT, "tests", "integration", "tfx_pipeline.py"), encoding="utf-8").read()
    section = readme[readme.index("## Using dataprep from TFX"):readme.index("## Layout")]
    assert _function(section, "importer_for") == _function(script, "importer_for")
    for line in ('tfx_examples = {e.properties["kind"].string_value: e for e in found["Examples"]',
                 'if e.custom_properties["payload_format"].string_value == "FORMAT_TF_EXAMPLE"}'):
        assert line in section and line in script
