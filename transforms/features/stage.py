"""The transform stage: TFT analysed on `train` only, the fitted graph applied to every split."""

import os
from typing import Any, Callable, Dict, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

from transforms.batches import as_batches, drop_columns, split_by_key
from transforms.features.adapter import TftInput, feature_spec_for
from transforms.spill import SpilledUntil

SPLIT_TAG = "__split"   # the split's index, a passthrough column of TFT's input only


def split_tag(taken) -> str:
    """`SPLIT_TAG`, or with more underscores in front if a column of the input has that name."""
    tag = SPLIT_TAG
    while tag in taken:
        tag = "_" + tag
    return tag


def _encode_tagged(batch: pa.RecordBatch, tft_input: TftInput, tag: str, index: int) -> pa.RecordBatch:
    column = pa.array(np.full(batch.num_rows, index, np.int8))
    return tft_input.encode(pa.RecordBatch.from_arrays(
        batch.columns + [column], schema=batch.schema.append(pa.field(tag, pa.int8()))))


class _DecodeBySplit(beam.DoFn):
    """TFT's output batches → decoded batches, each split's rows (by the `tag` column) to the
    output of its name, without the tag."""

    def __init__(self, decoder: TftInput, tag: str, names):
        self._decoder = decoder
        self._tag = tag
        self._names = list(names)

    def process(self, element):
        batch = self._decoder.decode(element)
        tags = np.asarray(batch.column(self._tag))
        batch = drop_columns(batch, [self._tag])
        if batch.num_rows and (tags == tags[0]).all():   # the common case: one split's rows
            yield pvalue.TaggedOutput(self._names[tags[0]], batch)
            return
        for index, part in split_by_key(batch, tags):
            yield pvalue.TaggedOutput(self._names[index], part)


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
        self._spill = spill     # the splits wait for the analysis as files there (`SpilledUntil`)
        self._tf_compat_v1 = tf_compat_v1
        self._fn = preprocessing_fn
        self._input = tft_input
        self._temp_dir = temp_dir
        self._output_dir = output_dir
        self._train = train

    def expand(self, splits):
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

        names = list(splits)
        tag = split_tag(set(self._input.passthrough) | set(self._input.feature_columns))
        # every split through one TransformDataset, each row tagged with its split's index as
        # one more passthrough column: one transform graph loaded per bundle, not one per split
        tagged_input = TftInput(self._input.feature_columns, {**self._input.passthrough, tag: pa.int8()})
        adapter_config = tagged_input.tensor_adapter_config()
        encoded = {name: splits[name] | f"ToTft[{name}]" >> beam.Map(_encode_tagged, tagged_input, tag, index)
                   .with_output_types(pa.RecordBatch)
                   for index, name in enumerate(names)}
        with tft_beam.Context(temp_dir=self._temp_dir, passthrough_keys=set(tagged_input.passthrough_keys()),
                              force_tf_compat_v1=self._tf_compat_v1):
            transform_fn = ((encoded[self._train], adapter_config)
                            | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(self._fn))
            # The output shapes are known once the graph is traced, before any analysis runs.
            metadata = transform_fn[1]
            tf_schema = getattr(metadata, "dataset_metadata", metadata).schema
            spec = schema_utils.schema_as_feature_spec(tf_schema).feature_spec
            schema = self._input.with_outputs(spec).output_schema()
            decoder = tagged_input.with_outputs(spec)
            # TFT's transform waits for the analysis, which reads train in the stage these
            # rows come from: with `spill`, they wait as files, not as that stage's output
            ready = tuple(encoded.values()) | "AwaitAnalysis" >> SpilledUntil(self._spill, transform_fn[0])
            transformed, _ = (((ready, adapter_config), transform_fn)
                              | "TransformSplits" >> tft_beam.TransformDataset(output_record_batches=True))
            # TFT leaves it untyped: Beam would pickle sampled batches to estimate their size
            transformed.element_type = beam.typehints.Tuple[pa.RecordBatch, beam.typehints.Dict[str, Any]]
            parts = transformed | "FromTft" >> beam.ParDo(_DecodeBySplit(decoder, tag, names)).with_outputs(*names)
            as_batches(parts, *names)
            out = {name: parts[name] for name in names}
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._output_dir)
            # The raw feature spec beside the graph (as TFX's Transform does), so that
            # `tft.TFTransformOutput(output_dir).raw_feature_spec()` works for serving code.
            raw = dataset_metadata.DatasetMetadata(
                schema_utils.schema_from_feature_spec(feature_spec_for(self._input.feature_columns)))
            _ = raw | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                os.path.join(self._output_dir, "metadata"), next(iter(splits.values())).pipeline)
        return FeaturesResult(out, written, schema)
