"""The transform stage: TFT analysed on `train` only, the fitted graph applied to every split."""

import os
from typing import Any, Callable, Dict, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa

from transforms.features.adapter import TftInput, feature_spec_for
from transforms.spill import SpilledUntil


class FeaturesResult(NamedTuple):
    """`AnalyzeAndTransform`'s outputs."""

    splits: Dict[str, beam.PCollection]   # split name → transformed record batches
    transform_fn: beam.PCollection        # the written transform graph (TFT's WriteTransformFn output)
    schema: Optional[pa.Schema]           # of the transformed batches, known from the traced graph;
    #                                       None if some output is neither a scalar nor a plain list


@beam.typehints.with_input_types(pa.RecordBatch)
class AnalyzeAndTransform(beam.PTransform):
    """{split: clean batches} → a `FeaturesResult`.

    Analysis reads `train` only; the fitted graph is applied to every split and written
    under `output_dir` (`transform_fn/`, `transformed_metadata/`, and the raw `metadata/`).
    Transformed batches hold the preprocessing_fn outputs plus the passthrough columns,
    with the Arrow types of the transformed feature spec. (No output type hint: Beam would
    give it to every output left untyped, `transform_fn` included.)
    """

    def __init__(self, preprocessing_fn: Callable, tft_input: TftInput, temp_dir: str, output_dir: str,
                 train: str = "train", tf_compat_v1: bool = True, spill: Optional[str] = None):
        super().__init__()
        self._spill = spill     # each split waits for the analysis as files there (`SpilledUntil`)
        self._tf_compat_v1 = tf_compat_v1
        self._fn = preprocessing_fn
        self._input = tft_input
        self._temp_dir = temp_dir
        self._output_dir = output_dir
        self._train = train

    def expand(self, splits):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

        adapter_config = self._input.tensor_adapter_config()
        encoded = {name: pcoll | f"ToTft[{name}]" >> beam.Map(self._input.encode).with_output_types(pa.RecordBatch)
                   for name, pcoll in splits.items()}
        out = {}
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=set(self._input.passthrough_keys()),
                              force_tf_compat_v1=self._tf_compat_v1):
            transform_fn = ((encoded[self._train], adapter_config)
                            | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(self._fn))
            # The output shapes are known once the graph is traced, before any analysis runs.
            metadata = transform_fn[1]
            tf_schema = getattr(metadata, "dataset_metadata", metadata).schema
            decoder = self._input.with_outputs(schema_utils.schema_as_feature_spec(tf_schema).feature_spec)
            schema = decoder.output_schema()
            for name, pcoll in encoded.items():
                # TFT's transform waits for the analysis, which reads train in the stage these
                # rows come from: with `spill`, they wait as files, not as that stage's output
                ready = pcoll | f"AwaitAnalysis[{name}]" >> SpilledUntil(self._spill, transform_fn[0])
                transformed, _ = (((ready, adapter_config), transform_fn)
                                  | f"Transform[{name}]" >> tft_beam.TransformDataset(output_record_batches=True))
                # TFT leaves it untyped: Beam would pickle sampled batches to estimate their size
                transformed.element_type = beam.typehints.Tuple[pa.RecordBatch, beam.typehints.Dict[str, Any]]
                out[name] = (transformed
                             | f"FromTft[{name}]" >> beam.Map(decoder.decode).with_output_types(pa.RecordBatch))
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._output_dir)
            # The raw feature spec beside the graph (as TFX's Transform does), so that
            # `tft.TFTransformOutput(output_dir).raw_feature_spec()` works for serving code.
            raw = dataset_metadata.DatasetMetadata(
                schema_utils.schema_from_feature_spec(feature_spec_for(self._input.feature_columns)))
            _ = raw | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                os.path.join(self._output_dir, "metadata"), next(iter(splits.values())).pipeline)
        return FeaturesResult(out, written, schema)
