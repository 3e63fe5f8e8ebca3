"""A TFX 1.16 pipeline over a dataprep run's output, run on LocalDagRunner inside the TFX venv
(`scripts/tfx.sh`) by tests/integration/test_tfx.py; it never imports dataprep.

    python tfx_pipeline.py --store DATAPREP_STORE.sqlite --run RUN_ID --work DIR

It finds the run's TFX artifacts in dataprep's metadata store with the plain ml_metadata API
(`importer_for`: the Importer code the README shows) and runs
  Importer(raw Examples) → StatisticsGen → SchemaGen → ExampleValidator,
  Importer(transformed Examples) + Importer(TransformGraph) → Trainer (tfx_user_code/trainer_module.py),
  Importer(dataprep's ExampleStatistics) → SchemaGen → ExampleValidator,
with its own metadata store under DIR, then prints one JSON line: each component's state and
seconds, StatisticsGen's and dataprep's example counts per split, both schemas, the anomalies,
and where the Trainer left the values it read.
"""

import argparse
import glob
import json
import os
import sys
import time

STARTED = time.time()
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # Keras 2 (tf_keras) for TFT's layer and the Trainer's model

from tfx import v1 as tfx  # noqa: E402  (after the Keras choice)
from tfx.types import standard_artifacts  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def dataprep_artifacts(store_path: str, run_id: str):
    """The run's artifacts in dataprep's store, by type name (plain ml_metadata, read-only)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = store_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    types = {t.id: t.name for t in store.get_artifact_types()}
    found = {}
    for a in store.get_artifacts_by_context(run.id):
        found.setdefault(types[a.type_id], []).append(a)
    return found


# ---- the Importer code of the README ("Using dataprep from TFX"; tests/test_tfx_outputs.py compares)
def importer_for(artifact, artifact_type, node_id: str):
    """A TFX Importer of one of dataprep's artifacts, as recorded: its uri, the properties the
    TFX type declares, and its custom properties (payload_format, file_format, tfx_version)."""
    def value(v):
        return v.string_value if v.HasField("string_value") else v.int_value

    declared = artifact_type.PROPERTIES or {}
    properties = {k: value(artifact.properties[k]) for k in declared if k in artifact.properties}
    custom = {k: value(v) for k, v in artifact.custom_properties.items()}
    return tfx.dsl.Importer(source_uri=artifact.uri, artifact_type=artifact_type, properties=properties,
                            custom_properties=custom).with_id(node_id)
# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--classes", required=True, help="JSON list of the label's classes")
    a = ap.parse_args()

    from ml_metadata.metadata_store import metadata_store

    found = dataprep_artifacts(a.store, a.run)
    tfx_examples = {e.properties["kind"].string_value: e for e in found["Examples"]
                    if e.custom_properties["payload_format"].string_value == "FORMAT_TF_EXAMPLE"}
    [stats] = found["ExampleStatistics"]
    [graph] = found["TransformGraph"]
    splits = json.loads(tfx_examples["raw"].properties["split_names"].string_value)

    raw = importer_for(tfx_examples["raw"], standard_artifacts.Examples, "import_raw_examples")
    transformed = importer_for(tfx_examples["transformed"], standard_artifacts.Examples,
                               "import_transformed_examples")
    transform_graph = importer_for(graph, standard_artifacts.TransformGraph, "import_transform_graph")
    dataprep_stats = importer_for(stats, standard_artifacts.ExampleStatistics, "import_statistics")

    statistics_gen = tfx.components.StatisticsGen(examples=raw.outputs["result"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                                schema=schema_gen.outputs["schema"])
    trainer = tfx.components.Trainer(
        module_file=os.path.join(HERE, "tfx_user_code", "trainer_module.py"),   # its folder is what TFX packages
        examples=transformed.outputs["result"],
        transform_graph=transform_graph.outputs["result"],
        train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=50),
        eval_args=tfx.proto.EvalArgs(splits=["dev"], num_steps=5),
        custom_config={"label": a.label, "classes": json.loads(a.classes), "splits": splits})
    schema_from_dataprep = tfx.components.SchemaGen(
        statistics=dataprep_stats.outputs["result"]).with_id("schema_gen_dataprep_statistics")
    validator_dataprep = tfx.components.ExampleValidator(
        statistics=dataprep_stats.outputs["result"],
        schema=schema_from_dataprep.outputs["schema"]).with_id("example_validator_dataprep_statistics")

    db = os.path.join(a.work, "tfx_metadata.sqlite")
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(db)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="dataprep_to_tfx", pipeline_root=os.path.join(a.work, "root"),
        components=[raw, statistics_gen, schema_gen, validator, transformed, transform_graph, trainer,
                    dataprep_stats, schema_from_dataprep, validator_dataprep],
        enable_cache=False, metadata_connection_config=connection,
        beam_pipeline_args=["--direct_num_workers=1"])
    ran = time.time()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    finished = time.time()

    store = metadata_store.MetadataStore(connection)
    result = summary(store, splits)
    result["dataprep_uris"] = {"import_raw_examples": tfx_examples["raw"].uri,
                               "import_transformed_examples": tfx_examples["transformed"].uri,
                               "import_transform_graph": graph.uri, "import_statistics": stats.uri}
    result["serving"] = serving_check(result["model"], tfx_examples["raw"].uri, tfx_examples["transformed"].uri,
                                      splits[-1])
    result.update(imports_seconds=round(ran - STARTED, 2), pipeline_seconds=round(finished - ran, 2))
    print(json.dumps(result))


def serving_check(model_uri: str, raw_uri: str, transformed_uri: str, split: str, rows: int = 300):
    """The Trainer's exported model on raw tf.Examples of dataprep's `split`: the transformed
    features its signature returns (dataprep's TransformGraph, raw spec from `metadata/`) against
    dataprep's transformed TFRecords of the same examples. Returns counts of rows and mismatches."""
    import numpy as np
    import tensorflow as tf
    from tfx.utils import path_utils

    serve = tf.saved_model.load(path_utils.serving_model_path(model_uri)).signatures["serving_default"]

    def records(uri):
        files = sorted(glob.glob(os.path.join(uri, f"Split-{split}", "*")))
        return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]

    def example_id(example):
        return example.features.feature["example_id"].bytes_list.value[0]

    raw = records(raw_uri)[:rows]
    expected = {}
    for record in records(transformed_uri):
        example = tf.train.Example.FromString(record)
        expected[example_id(example)] = example
    out = serve(examples=tf.constant(raw))
    features = sorted(k for k in out if k != "probabilities")
    mismatches = 0
    for i, record in enumerate(raw):
        want = expected[example_id(tf.train.Example.FromString(record))].features.feature
        for f in features:
            got = np.asarray(out[f][i]).reshape(-1)
            kind = want[f].WhichOneof("kind")
            ref = np.asarray(getattr(want[f], kind).value)
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-6, atol=1e-6):
                mismatches += 1
    probabilities = np.asarray(out["probabilities"])
    return {"rows": len(raw), "features": features, "mismatches": mismatches,
            "probabilities_sum_to_1": bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4))}


def summary(store, splits):
    """What the test checks, read back from TFX's own store and outputs."""
    from google.protobuf import text_format
    from ml_metadata.proto import metadata_store_pb2
    from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
    from tfx.components.statistics_gen import stats_artifact_utils
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import io_utils

    context_types = {t.id: t.name for t in store.get_context_types()}
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    components, outputs = {}, {}
    for e in store.get_executions():
        [node] = [c.name.split(".", 1)[1] for c in store.get_contexts_by_execution(e.id)
                  if context_types[c.type_id] == "node"]      # "<pipeline>.<node id>"
        components[node] = {"state": metadata_store_pb2.Execution.State.Name(e.last_known_state),
                            "seconds": round((e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3, 2)}
        made = [ev.artifact_id for ev in store.get_events_by_execution_ids([e.id]) if ev.type == ev.OUTPUT]
        outputs[node] = {artifact_types[a.type_id]: a for a in store.get_artifacts_by_id(made)}

    def artifact(node, cls):
        a = cls()
        a.set_mlmd_artifact(outputs[node][cls.TYPE_NAME])
        return a

    def schema(node):
        path = io_utils.get_only_uri_in_dir(artifact(node, standard_artifacts.Schema).uri)
        return text_format.MessageToString(io_utils.parse_pbtxt_file(path, schema_pb2.Schema()))

    def anomalies(node):
        a = artifact(node, standard_artifacts.ExampleAnomalies)
        found = {}
        for split in splits:
            path = os.path.join(artifact_utils.get_split_uri([a], split), "SchemaDiff.pb")
            parsed = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
            found[split] = sorted(parsed.anomaly_info)
        return found

    stats = artifact("StatisticsGen", standard_artifacts.ExampleStatistics)
    counts = {s: stats_artifact_utils.load_statistics(stats, s).proto().datasets[0].num_examples for s in splits}
    trainer_run = artifact("Trainer", standard_artifacts.ModelRun).uri
    model = artifact("Trainer", standard_artifacts.Model).uri
    return {"components": components, "statisticsgen_counts": counts,
            "schema_statisticsgen": schema("SchemaGen"),
            "schema_dataprep_statistics": schema("schema_gen_dataprep_statistics"),
            "anomalies": anomalies("ExampleValidator"),
            "anomalies_dataprep_statistics": anomalies("example_validator_dataprep_statistics"),
            "imported_uris": {node: [x.uri for x in outputs[node].values()] for node in
                              ("import_raw_examples", "import_transformed_examples", "import_transform_graph",
                               "import_statistics")},
            "trainer_seen": os.path.join(trainer_run, "seen"), "model": model}


if __name__ == "__main__":
    sys.exit(main())
