"""TFX's view of a run in the store: the artifacts a TFX 1.16 pipeline imports as they are.

The per-split `Examples` artifacts of the contract (uri `raw/train`, Parquet, `split_names
["train"]`) stay; TFX cannot read them (it wants one artifact whose uri holds `Split-<name>/`
folders of files its readers take). With `output.formats: [parquet, tfrecord]` a run also has
- one `Examples` artifact per kind (`raw`, `transformed`), uri `OUT/<run_id>/tfx/<kind>` holding
  a `Split-<name>/` folder per split of GZIP tf.Example TFRecords, with TFX's properties (`span`,
  `version`, `split_names` as a JSON list) and custom properties (`payload_format`
  FORMAT_TF_EXAMPLE, `file_format` tfrecords_gzip, `tfx_version` 1.16.0: without it TFX takes an
  artifact for its pre-0.29 layout `<uri>/<split>`);
and with `output.statistics: true` one `ExampleStatistics` artifact (`tfx/statistics`,
`Split-<name>/FeatureStats.pb`, `span` and `split_names`, `tfx_version`).

Each is an output of the stage that made its rows (raw Examples and statistics: `split`;
transformed Examples: `transform`), beside that stage's per-split artifacts, so `dataprep lineage`
and the plain MLMD API find one from the other through that execution; and it is attributed to
the pipeline and run contexts like every output. The `TransformGraph` artifact (uri: the run
folder, holding `transform_fn/`, `transformed_metadata/` and `metadata/`) is what TFX's Trainer
loads already (`TFTransformOutput(uri)` reads only those three folders).
"""

from __future__ import annotations

import json
from typing import Dict, List, Sequence

from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline.config import Config
from pipeline.layout import Layout
from pipeline.metadata import RunRecorder

TFX_VERSION = "1.16.0"              # the TFX whose layout the artifacts follow (Split-<name>/, FeatureStats.pb)
PAYLOAD_FORMAT = "FORMAT_TF_EXAMPLE"  # example_gen_pb2.PayloadFormat's name, as TFX stores it
FILE_FORMAT = "tfrecords_gzip"


def examples_properties(splits: Sequence[str]) -> Dict[str, object]:
    """The properties of a TFX `Examples` artifact holding `splits` (what an Importer is given)."""
    return {"span": 0, "version": 0, "split_names": json.dumps(list(splits))}


def examples_custom_properties() -> Dict[str, str]:
    """The custom properties TFX reads from an `Examples` artifact."""
    return {"payload_format": PAYLOAD_FORMAT, "file_format": FILE_FORMAT, "tfx_version": TFX_VERSION}


def statistics_properties(splits: Sequence[str]) -> Dict[str, object]:
    return {"span": 0, "split_names": json.dumps(list(splits))}


def record_tfx_outputs(rec: RunRecorder, cfg: Config, layout: Layout, stages: Sequence[str], splits: Sequence[str],
                       rows: Dict[str, int]) -> List[pb.Artifact]:
    """The TFX artifacts of a run (PENDING, published with its other outputs), each an OUTPUT of
    the stage that made it; call once the `split` and `transform` stages are finished. Returns
    them, for the `write` stage's inputs; none without `tfrecord` or `statistics`."""
    made: List[pb.Artifact] = []
    clean = sum(rows[s] for s in splits)
    kinds = (["raw"] + (["transformed"] if "transform" in stages else [])) if cfg.output.tfrecord else []
    for kind in kinds:
        examples = rec.pending_artifact(
            "Examples", layout.tfx_examples(kind), {**examples_properties(splits), "kind": kind, "rows": clean},
            custom=examples_custom_properties(), name=f"tfx:{kind}")
        _output_of(rec, "split" if kind == "raw" else "transform", examples, "examples")
        made.append(examples)
    if cfg.output.statistics:
        stats = rec.pending_artifact("ExampleStatistics", layout.tfx_statistics, statistics_properties(splits),
                                     custom={"tfx_version": TFX_VERSION}, name="tfx:statistics")
        _output_of(rec, "split", stats, "statistics")
        made.append(stats)
    return made


def _output_of(rec: RunRecorder, stage: str, artifact: pb.Artifact, key: str) -> None:
    """An OUTPUT event from the stage's execution to `artifact`, under `key` (TFX's event path
    names the output key, as its components' events do)."""
    event = pb.Event(artifact_id=artifact.id, execution_id=rec.executions[stage].id, type=pb.Event.OUTPUT)
    event.path.steps.add().key = key
    event.path.steps.add().index = 0
    with rec.lock:
        rec.store.put_events([event])
