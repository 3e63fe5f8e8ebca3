"""A real TFX 1.16 pipeline over a dataprep run's output (`make test-integration`, TFX section).

dataprep runs the example with `output.formats: [parquet, tfrecord]` and `output.statistics:
true`; then tests/integration/tfx_pipeline.py runs inside the TFX venv of scripts/tfx.sh (TFX
declares Python < 3.11 and never enters dataprep's venv) on LocalDagRunner: Importer(raw Examples,
found in dataprep's store) → StatisticsGen → SchemaGen → ExampleValidator; Importer(transformed
Examples) + Importer(TransformGraph) → Trainer; Importer(dataprep's ExampleStatistics) → SchemaGen
→ ExampleValidator. Every component must complete; the rest is checked here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, example_config

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["none", "scratch", "discoloration"]


@pytest.fixture(scope="module")
def tfx_python() -> str:
    """The TFX venv's python: built (or found in its cache) by scripts/tfx.sh; not built is a failure."""
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "tfx.sh"), "setup"], capture_output=True, text=True)
    assert done.returncode == 0, f"scripts/tfx.sh setup failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tfx_pipeline(tfx_python, tmp_path_factory, request):
    from pipeline.run import run

    cfg = example_config(tmp_path_factory.mktemp("vi"), rows=2500)
    cfg.output.formats = ["parquet", "tfrecord"]
    cfg.output.statistics = True
    out = tmp_path_factory.mktemp("dataprep_out")
    store = str(out / "metadata.sqlite")
    summary = run(cfg, output=str(out), store=store)
    work = tmp_path_factory.mktemp("tfx_work")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)      # nothing of dataprep's venv in TFX's
    done = subprocess.run([tfx_python, os.path.join(HERE, "tfx_pipeline.py"), "--store", store, "--run",
                           summary["run_id"], "--work", str(work), "--label", cfg.schema.label,
                           "--classes", json.dumps(CLASSES)],
                          capture_output=True, text=True, env=env, cwd=str(work), timeout=1800)
    assert done.returncode == 0, f"the TFX pipeline failed:\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the component times into the log of `make test-integration`, past pytest's capture
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nTFX components (s): {json.dumps({k: v['seconds'] for k, v in result['components'].items()})}; "
              f"TFX imports {result['imports_seconds']} s, LocalDagRunner {result['pipeline_seconds']} s", flush=True)
    return {"result": result, "summary": summary}


def test_every_component_completes(tfx_pipeline):
    components = tfx_pipeline["result"]["components"]
    assert set(components) == {"import_raw_examples", "import_transformed_examples", "import_transform_graph",
                               "import_statistics", "StatisticsGen", "SchemaGen", "ExampleValidator", "Trainer",
                               "schema_gen_dataprep_statistics", "example_validator_dataprep_statistics"}
    assert {c["state"] for c in components.values()} == {"COMPLETE"}, components


def test_the_importers_take_dataprep_s_recorded_artifacts(tfx_pipeline):
    result = tfx_pipeline["result"]
    assert {node: uris[0] for node, uris in result["imported_uris"].items()} == result["dataprep_uris"]
    assert result["dataprep_uris"]["import_raw_examples"].endswith("/tfx/raw")


def test_statisticsgen_counts_equal_the_funnel(tfx_pipeline):
    rows = tfx_pipeline["summary"]["rows"]
    assert tfx_pipeline["result"]["statisticsgen_counts"] == {s: rows[s] for s in ("train", "dev", "test")}


def _schema(text: str):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(text, schema_pb2.Schema())
    return ({f.name: f for f in schema.feature}, {d.name: d for d in schema.string_domain})


def test_schemagen_infers_the_same_schema_from_dataprep_s_statistics(tfx_pipeline):
    """dataprep's statistics stand in for StatisticsGen's: SchemaGen infers, feature by feature,
    the schema it infers from TFX's own statistics over the TFRecords."""
    result = tfx_pipeline["result"]
    from_tfx, from_dataprep = _schema(result["schema_statisticsgen"]), _schema(result["schema_dataprep_statistics"])
    assert from_tfx == from_dataprep
    assert {"brightness", "factory", "camera", "defect", "example_id"} <= set(from_tfx[0])
    assert result["anomalies"] == result["anomalies_dataprep_statistics"]


def test_the_trainer_saw_the_parquet_transformed_values(tfx_pipeline):
    """Item 4's parity, from inside TFX: every row TFX's data accessor gave the Trainer (train, and
    dev as its eval split) equals the row of dataprep's Parquet `transformed/` with its example_id."""
    result, root = tfx_pipeline["result"], tfx_pipeline["summary"]["output"]
    for seen_split, split in (("train", "train"), ("eval", "dev")):
        seen = pq.read_table(os.path.join(result["trainer_seen"], f"{seen_split}.parquet")).to_pylist()
        parquet = {r["example_id"]: r for r in pq.read_table(os.path.join(root, "transformed", split)).to_pylist()}
        assert len(seen) == len(parquet) == tfx_pipeline["summary"]["rows"][split]
        features = [c for c in seen[0] if c != "example_id"]
        assert sorted(features) == ["brightness_xf", "camera_xf", "factory_xf"]
        for row in seen:
            expected = parquet[row["example_id"]]
            assert all(row[f] == expected[f] for f in features), (row, expected)


def test_the_exported_model_serves_raw_examples_with_dataprep_s_transform_graph(tfx_pipeline):
    """The Trainer's model parses raw tf.Examples with the graph's `metadata/` (raw spec) and
    transforms them with its `transform_features_layer()`: the features equal dataprep's."""
    serving = tfx_pipeline["result"]["serving"]
    assert serving["rows"] == 300 and serving["mismatches"] == 0 and serving["probabilities_sum_to_1"]
