"""Long-form labels: annotation files of (example id, annotator, label) rows, read and
joined to the examples by id, so that `ConsolidateLabels` sees one label per annotator."""

import json as _json
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from transforms.batches import (ROW, SOURCE, KeyedBatch, MergeCounts, as_batches, concat_batches, json_records,
                                key_by_bucket, quarantine_batch, table_to_batches)
from transforms.clean import normalize_labels
from transforms.read import ReaderSpec, ReadInputs

ANNOTATIONS = "annotations"        # per example: JSON {annotator: label}, riding along in outputs
MATRIX = "_label_matrix"           # per example: a label per known annotator (internal)
ANNOTATION_COLUMNS = ("id", "annotator", "label")   # + _source, _row: the rows `ReadAnnotations` emits


@dataclass(frozen=True)
class AnnotationsSpec:
    """How to read the long-form annotation files, and how their labels are spelled out."""

    reader: ReaderSpec
    id: str                                           # the column holding the example id
    annotator: str
    label: str
    label_map: Tuple[Tuple[str, str], ...] = ()       # whole values, after trim and case-fold
    label_replace: Tuple[Tuple[str, str], ...] = ()   # literal substrings, first
    label_trim: bool = False
    label_case_fold: bool = False


def tidy_annotations(batch: pa.RecordBatch, spec: AnnotationsSpec) -> Tuple[pa.RecordBatch, pa.RecordBatch]:
    """A raw batch of annotation rows → (id, annotator, label, _source, _row) with the labels
    normalised like the wide form's, and the rows missing one of the three (quarantine rows)."""
    ids = pc.cast(batch.column(spec.id), pa.string())
    who = pc.cast(batch.column(spec.annotator), pa.string())
    label = normalize_labels(pc.cast(batch.column(spec.label), pa.string()), dict(spec.label_map), spec.label_trim,
                             spec.label_case_fold, spec.label_replace)
    out = pa.RecordBatch.from_arrays([ids, who, label, batch.column(SOURCE), batch.column(ROW)],
                                     names=[*ANNOTATION_COLUMNS, SOURCE, ROW])
    ok = pc.and_(pc.and_(pc.is_valid(ids), pc.is_valid(who)), pc.is_valid(label))
    bad = out.filter(pc.invert(ok))
    faults = quarantine_batch(json_records(bad, list(ANNOTATION_COLUMNS)), "annotation_missing_field", "labels",
                              bad.column(SOURCE), bad.column(ROW))
    return out.filter(ok), faults


class _TidyFn(beam.DoFn):
    FAULTS = "faults"

    def __init__(self, spec: AnnotationsSpec):
        self._spec = spec

    def process(self, batch: pa.RecordBatch):
        rows, faults = tidy_annotations(batch, self._spec)
        yield rows
        if faults.num_rows:
            yield pvalue.TaggedOutput(self.FAULTS, faults)


class AnnotationsRead(NamedTuple):
    """`ReadAnnotations`' outputs, both PCollections of record batches."""

    rows: beam.PCollection     # ANNOTATION_COLUMNS + _source, _row
    faults: beam.PCollection   # QUARANTINE_SCHEMA: unreadable lines and rows missing a field. They are
    #                            not examples, so not in the row funnel: written to annotation_faults/


@beam.typehints.with_input_types(str)
@beam.typehints.with_output_types(pa.RecordBatch)
class ReadAnnotations(beam.PTransform):
    """Paths of long-form annotation files → an `AnnotationsRead` (`source_names` as in `ReadInputs`)."""

    def __init__(self, spec: AnnotationsSpec, source_names: Optional[Dict[str, str]] = None):
        super().__init__()
        self._spec = spec
        self._source_names = source_names

    def expand(self, paths):
        spec = self._spec
        read = (paths
                | "ReaderIndex" >> beam.Map(lambda path: (0, path)).with_output_types(beam.typehints.Tuple[int, str])
                | "ReadAnnotations" >> ReadInputs([spec.reader], [spec.id, spec.annotator, spec.label],
                                                        source_names=self._source_names))
        tidied = as_batches(read.rows | "TidyAnnotations" >> beam.ParDo(_TidyFn(spec)).with_outputs(
            _TidyFn.FAULTS, main="rows"), "rows", _TidyFn.FAULTS)
        faults = (read.quarantine, tidied[_TidyFn.FAULTS]) | "AnnotationFaults" >> beam.Flatten()
        return AnnotationsRead(tidied.rows, faults)


def attach_annotations(examples: pa.Table, annotations: pa.Table, id_column: str,
                       annotators: Sequence[str]) -> Tuple[pa.Table, Dict[str, int]]:
    """Examples of one id bucket + their annotations → examples with the label matrix
    column (one entry per known annotator, null where missing) and a JSON `annotations`
    column. An annotator's second label for the same example is ignored (the first by
    source and row counts). Returns the joined table and counts for the report.
    """
    stats = {"annotations": annotations.num_rows, "orphan": 0, "repeated": 0}
    n = examples.num_rows
    if annotations.num_rows:
        order = pc.sort_indices(annotations, sort_keys=[(SOURCE, "ascending"), (ROW, "ascending")])
        frame = annotations.take(order).select(["id", "annotator", "label"]).to_pandas()
        repeated = frame.duplicated(["id", "annotator"], keep="first")
        stats["repeated"] = int(repeated.sum())
        frame = frame[~repeated]
    else:
        frame = pd.DataFrame({"id": [], "annotator": [], "label": []})
    ids = examples.column(id_column).to_pandas().astype(object) if n else pd.Series([], dtype=object)
    stats["orphan"] = int((~frame["id"].isin(set(ids))).sum())
    wide = frame.pivot(index="id", columns="annotator", values="label") if len(frame) else pd.DataFrame()
    wide = wide.reindex(index=ids, columns=list(annotators))
    values = wide.to_numpy(dtype=object).reshape(-1) if n else np.array([], dtype=object)
    offsets = np.arange(0, n * len(annotators) + 1, max(len(annotators), 1), dtype=np.int32)[: n + 1]
    flat = pa.array(values, pa.string(), from_pandas=True)
    matrix = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)
    texts = pa.array([_json.dumps({a: v for a, v in zip(annotators, row) if isinstance(v, str)}, sort_keys=True)
                      for row in wide.to_numpy(dtype=object)] if n else [], pa.string())
    return examples.append_column(MATRIX, matrix).append_column(ANNOTATIONS, texts), stats


class _JoinBucketFn(beam.DoFn):
    STATS = "stats"

    def __init__(self, id_column: str):
        self._id = id_column

    def process(self, element, annotators):
        _, grouped = element
        examples = [b for b in grouped["examples"]]
        if not examples:
            _, stats = attach_annotations(pa.table({self._id: pa.array([], pa.string())}),
                                          concat_batches(grouped["annotations"]), self._id, annotators)
            yield pvalue.TaggedOutput(self.STATS, stats)
            return
        table, stats = attach_annotations(concat_batches(examples), concat_batches(grouped["annotations"]),
                                          self._id, annotators)
        yield from table_to_batches(table)
        yield pvalue.TaggedOutput(self.STATS, stats)


def _by_id_bucket(batch: pa.RecordBatch, column: str, buckets: int):
    return key_by_bucket(batch, [pc.cast(batch.column(column), pa.string())], buckets)


class AttachResult(NamedTuple):
    """`AttachAnnotations`' outputs."""

    rows: beam.PCollection         # record batches: the examples + MATRIX (for ConsolidateLabels) + ANNOTATIONS
    annotators: beam.PCollection   # one element: the sorted list of annotators, the order of MATRIX's entries
    stats: beam.PCollection        # one dict: {"annotations", "orphan", "repeated"} counts, for the report


@beam.typehints.with_input_types(pa.RecordBatch)
class AttachAnnotations(beam.PTransform):
    """(examples, annotations) → an `AttachResult`: examples carrying their annotations.

    `annotations` are `ReadAnnotations`' rows. Both sides are shuffled by a hash bucket of
    the example id (whole sub-batches).
    """

    def __init__(self, id_column: str, buckets: int = 16):
        super().__init__()
        self._id = id_column
        self._buckets = max(1, buckets)

    def expand(self, pcolls):
        examples, annotations = pcolls
        buckets, id_column = self._buckets, self._id

        annotators = (annotations
                      | "AnnotatorValues" >> beam.Map(lambda b: set(v for v in pc.unique(b.column("annotator"))
                                                                    .to_pylist() if v is not None))
                      | "UnionAnnotators" >> beam.CombineGlobally(lambda sets: set().union(*sets))
                      | "SortAnnotators" >> beam.Map(sorted))
        joined = ({"examples": examples | "ExampleBuckets" >> beam.FlatMap(_by_id_bucket, id_column, buckets)
                   .with_output_types(KeyedBatch),
                   "annotations": annotations | "AnnotationBuckets" >> beam.FlatMap(_by_id_bucket, "id", buckets)
                   .with_output_types(KeyedBatch)}
                  | "JoinById" >> beam.CoGroupByKey()
                  | "Attach" >> beam.ParDo(_JoinBucketFn(id_column), pvalue.AsSingleton(annotators))
                  .with_outputs(_JoinBucketFn.STATS, main="rows"))
        as_batches(joined, "rows")
        stats = joined[_JoinBucketFn.STATS] | "SumJoinStats" >> beam.CombineGlobally(MergeCounts())
        return AttachResult(joined.rows, annotators, stats)
