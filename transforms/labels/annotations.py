"""Long-form labels: the sources of (example id, annotator, label) rows, one per labelling
round (annotation tables, Label Studio exports), read (`ReadAnnotations`) and joined to the
examples by id (`AttachAnnotations`), so that `ConsolidateLabels` sees one label per
annotator: of an annotator's labels for an example, the latest round's. Every label read
keeps its source file and round in the history (`annotations/` of a run)."""

import json as _json
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue

from transforms.batches import (EXAMPLE_ID, ROW, SOURCE, KeyedBatch, MergeCounts, as_batches, concat_batches,
                                empty_quarantine, json_records, key_by_bucket, quarantine_batch, table_to_batches)
from transforms.clean import normalize_labels
from transforms.read import ReaderSpec, ReadInputs
from transforms.spill import CoGroupBySpilled

ANNOTATIONS = "annotations"        # per example: JSON {annotator: label}, riding along in outputs
MATRIX = "_label_matrix"           # per example: a label per known annotator (internal)
ROUND = "round"                    # the source's place in labels.annotations, 1 = the oldest
ANNOTATION_COLUMNS = ("id", "annotator", "label", ROUND)   # + _source, _row: the rows `ReadAnnotations` emits
USED = "used"                      # history: this label is the one the consensus saw (not superseded, not repeated)
HISTORY_SCHEMA = pa.schema([(EXAMPLE_ID, pa.string()), ("annotator", pa.string()), ("label", pa.string()),
                            (ROUND, pa.int64()), (USED, pa.bool_()), (SOURCE, pa.string()), (ROW, pa.int64())])

# Fault reasons of the labels themselves (stage "labels", in annotation_faults/); Label Studio's
# own are in label_studio.py.
MISSING_FIELD = "annotation_missing_field"        # no example id, annotator or label
UNKNOWN_LABEL = "annotation_unknown_label"        # not one of labels.classes (after normalising)
UNKNOWN_EXAMPLE = "annotation_unknown_example"    # no example with this id reached the labels stage (not in
#                                                   the data, or quarantined or a duplicate before it)
LABEL_STUDIO = "label_studio"


@dataclass(frozen=True)
class AnnotationSource:
    """One source of labels (a labelling round): its format and where its fields are."""

    format: str                           # csv | jsonl | parquet | label_studio
    reader: Optional[ReaderSpec] = None   # the tabular formats
    id: str = "example_id"                # tabular: the columns of the example id, annotator and label
    annotator: str = "annotator"
    label: str = "label"
    id_field: str = EXAMPLE_ID            # label_studio: the key of a task's data holding the example id
    from_name: Optional[str] = None       # label_studio: the Choices control; None: the only one

    @property
    def columns(self) -> Tuple[str, str, str]:
        return self.id, self.annotator, self.label


def annotated_schema(examples: pa.Schema) -> pa.Schema:
    """The columns of `AttachAnnotations`' rows: the examples', then MATRIX and ANNOTATIONS."""
    return examples.append(pa.field(MATRIX, pa.list_(pa.string()))).append(pa.field(ANNOTATIONS, pa.string()))


@dataclass(frozen=True)
class AnnotationsSpec:
    """The sources, oldest round first, and how their labels are spelled out and checked."""

    sources: Tuple[AnnotationSource, ...]
    classes: Tuple[str, ...] = ()                     # a label outside these is a fault; empty: any label
    label_map: Tuple[Tuple[str, str], ...] = ()       # whole values, after trim and case-fold
    label_replace: Tuple[Tuple[str, str], ...] = ()   # literal substrings, first
    label_trim: bool = False
    label_case_fold: bool = False


def tidy_annotations(batch: pa.RecordBatch, spec: AnnotationsSpec) -> Tuple[pa.RecordBatch, pa.RecordBatch]:
    """Annotation rows (ANNOTATION_COLUMNS, _source, _row) → (the same with the labels
    normalised like the wide form's, faults): rows missing a field (`MISSING_FIELD`) and,
    with `spec.classes`, labels outside them (`UNKNOWN_LABEL`)."""
    ids = pc.cast(batch.column("id"), pa.string())
    who = pc.cast(batch.column("annotator"), pa.string())
    label = normalize_labels(pc.cast(batch.column("label"), pa.string()), dict(spec.label_map), spec.label_trim,
                             spec.label_case_fold, spec.label_replace)
    out = pa.RecordBatch.from_arrays([ids, who, label, batch.column(ROUND), batch.column(SOURCE), batch.column(ROW)],
                                     names=[*ANNOTATION_COLUMNS, SOURCE, ROW])
    complete = pc.and_(pc.and_(pc.is_valid(ids), pc.is_valid(who)), pc.is_valid(label))
    known = pc.is_in(label, value_set=pa.array(list(spec.classes), pa.string())) if spec.classes else complete
    ok = pc.and_(complete, pc.fill_null(known, False))
    reasons = pc.if_else(complete, UNKNOWN_LABEL, MISSING_FIELD)
    bad_mask = pc.invert(ok)
    bad = out.filter(bad_mask)
    # example_id: the example the annotation names (not its own line's default id), where it has one
    faults = quarantine_batch(json_records(bad, list(ANNOTATION_COLUMNS)), reasons.filter(bad_mask), "labels",
                              bad.column(SOURCE), bad.column(ROW), bad.column("id"))
    return out.filter(ok), faults


class _TidyFn(beam.DoFn):
    FAULTS = "faults"

    def __init__(self, spec: AnnotationsSpec):
        self._spec = spec

    def process(self, batch: pa.RecordBatch):
        rows, faults = tidy_annotations(batch, self._spec)
        if rows.num_rows:
            yield rows
        if faults.num_rows:
            yield pvalue.TaggedOutput(self.FAULTS, faults)


def _as_annotation_rows(batch: pa.RecordBatch, columns: Tuple[str, str, str], rounds: Dict[str, int]
                        ) -> pa.RecordBatch:
    """A tabular source's raw rows → ANNOTATION_COLUMNS + _source, _row; the round from the
    file (`rounds`: source name → round)."""
    sources = batch.column(SOURCE)
    names = pc.unique(sources)
    numbers = pa.array([rounds[n] for n in names.to_pylist()], pa.int64())
    round_ = numbers.take(pc.index_in(sources, value_set=names))
    return pa.RecordBatch.from_arrays([batch.column(c) for c in columns] + [round_, sources, batch.column(ROW)],
                                      names=[*ANNOTATION_COLUMNS, SOURCE, ROW])


class _ReadExportFn(beam.DoFn):
    """(source index, path) of a Label Studio export → its annotation rows, faults (tagged)
    and counts (tagged)."""

    FAULTS = "faults"
    COUNTS = "counts"

    def __init__(self, spec: AnnotationsSpec, source_names: Dict[str, str]):
        self._spec = spec
        self._names = source_names

    def process(self, element: Tuple[int, str]):
        from apache_beam.io.filesystems import FileSystems

        from transforms.labels.label_studio import export_annotations

        index, uri = element
        source = self._spec.sources[index]
        name = self._names.get(uri, uri)
        with FileSystems.open(uri, compression_type="uncompressed") as f:
            data = f.read()
        rows, faults, counts = export_annotations(data, name, source.id_field, source.from_name)
        round_ = pa.array(np.full(rows.num_rows, index + 1, np.int64))
        yield pa.RecordBatch.from_arrays([rows.column("id"), rows.column("annotator"), rows.column("label"), round_,
                                          rows.column(SOURCE), rows.column(ROW)],
                                         names=[*ANNOTATION_COLUMNS, SOURCE, ROW])
        if faults.num_rows:
            yield pvalue.TaggedOutput(self.FAULTS, faults)
        yield pvalue.TaggedOutput(self.COUNTS, counts)


class AnnotationsRead(NamedTuple):
    """`ReadAnnotations`' outputs."""

    rows: beam.PCollection     # record batches: ANNOTATION_COLUMNS + _source, _row
    faults: beam.PCollection   # record batches, QUARANTINE_SCHEMA: unreadable lines and labels that are not one
    #                            clear label of a class. They are not examples, so not in the row funnel: written
    #                            to annotation_faults/
    label_studio: beam.PCollection   # one dict: tasks, annotations, cancelled, unannotated_tasks of the exports


@beam.typehints.with_input_types(beam.typehints.Tuple[int, str])
class ReadAnnotations(beam.PTransform):
    """(source index, path) of every annotation file → an `AnnotationsRead`.

    `spec.sources[index]` says how to read the file; its labels are round index + 1.
    Tabular sources are read by `ReadInputs` (one per distinct set of columns), Label
    Studio exports whole by `export_annotations`. `source_names` as in `ReadInputs`."""

    def __init__(self, spec: AnnotationsSpec, source_names: Optional[Dict[str, str]] = None,
                 rounds: Optional[Dict[str, int]] = None):
        """`rounds`: each tabular file's round, by the name its rows carry (path, or its
        `source_names` entry)."""
        super().__init__()
        self._spec = spec
        self._source_names = dict(source_names or {})
        self._rounds = dict(rounds or {})

    def expand(self, paths):
        spec = self._spec
        parts, faults, counts = [], [], []
        groups: Dict[Tuple[str, str, str], List[int]] = {}
        for i, s in enumerate(spec.sources):
            if s.format != LABEL_STUDIO:
                groups.setdefault(s.columns, []).append(i)
        for g, (columns, members) in enumerate(sorted(groups.items())):
            position = {index: k for k, index in enumerate(members)}
            suffix = f"[{g}]" if len(groups) > 1 else ""
            read = (paths
                    | f"Tabular{suffix}" >> beam.FlatMap(lambda e, pos: [(pos[e[0]], e[1])] if e[0] in pos else [],
                                                         position).with_output_types(beam.typehints.Tuple[int, str])
                    | f"ReadAnnotations{suffix}" >> ReadInputs([spec.sources[i].reader for i in members], list(columns),
                                                                source_names=self._source_names))
            parts.append(read.rows | f"AnnotationRows{suffix}" >> beam.Map(_as_annotation_rows, columns, self._rounds)
                         .with_output_types(pa.RecordBatch))
            faults.append(read.quarantine)
        if any(s.format == LABEL_STUDIO for s in spec.sources):
            exports = as_batches(paths
                                 | "Exports" >> beam.Filter(lambda e: spec.sources[e[0]].format == LABEL_STUDIO)
                                 | "ReadExports" >> beam.ParDo(_ReadExportFn(spec, self._source_names))
                                 .with_outputs(_ReadExportFn.FAULTS, _ReadExportFn.COUNTS, main="rows"),
                                 "rows", _ReadExportFn.FAULTS)
            parts.append(exports.rows)
            faults.append(exports[_ReadExportFn.FAULTS])
            counts.append(exports[_ReadExportFn.COUNTS])
        rows = parts | "AllAnnotationRows" >> beam.Flatten() if len(parts) > 1 else parts[0]
        tidied = as_batches(rows | "TidyAnnotations" >> beam.ParDo(_TidyFn(spec)).with_outputs(
            _TidyFn.FAULTS, main="rows"), "rows", _TidyFn.FAULTS)
        faults = (*faults, tidied[_TidyFn.FAULTS]) | "AnnotationFaults" >> beam.Flatten()
        if not counts:
            counts = [paths.pipeline | "NoExports" >> beam.Create([{}])]
        label_studio = (counts | "AllExportCounts" >> beam.Flatten()
                        | "SumExportCounts" >> beam.CombineGlobally(MergeCounts()).with_output_types(Dict[str, int]))
        return AnnotationsRead(tidied.rows, faults, label_studio)


def attach_annotations(examples: pa.Table, annotations: pa.Table, id_column: str, annotators: Sequence[str]
                       ) -> Tuple[pa.Table, Dict[str, int], pa.Table, pa.RecordBatch]:
    """Examples of one id bucket + their annotations → (examples with the label matrix
    column (one entry per known annotator, null where missing) and a JSON `annotations`
    column, counts for the report, the history, faults).

    Of one annotator's labels for one example, the latest round's counts; within a round,
    the first by source and row. The others are counted (`superseded` by a later round,
    `repeated` within one) and kept in the history (HISTORY_SCHEMA: every label of a known
    example, `used` or not). Labels of ids that are no example here are faults
    (`UNKNOWN_EXAMPLE`) and counted as `orphan`.
    """
    stats: Dict[str, int] = {"annotations": annotations.num_rows, "orphan": 0, "repeated": 0, "superseded": 0}
    n = examples.num_rows
    ids = examples.column(id_column).to_pandas().astype(object) if n else pd.Series([], dtype=object)
    if annotations.num_rows:
        order = pc.sort_indices(annotations, sort_keys=[(ROUND, "descending"), (SOURCE, "ascending"),
                                                        (ROW, "ascending")])
        ordered = annotations.take(order)
        frame = ordered.select(["id", "annotator", "label", ROUND]).to_pandas()
        dropped = frame.duplicated(["id", "annotator"], keep="first").to_numpy()
        kept_round = frame.groupby(["id", "annotator"], sort=False)[ROUND].transform("max").to_numpy()
        rounds = frame[ROUND].to_numpy()
        stats["superseded"] = int((dropped & (rounds < kept_round)).sum())
        stats["repeated"] = int((dropped & (rounds == kept_round)).sum())
        known = frame["id"].isin(set(ids)).to_numpy()
        stats["orphan"] = int((~known).sum())
        known_rounds, known_used = rounds[known], ~dropped[known]
        for r in np.unique(known_rounds):   # a handful of rounds: one vector op each
            stats[f"round:{r}"] = int((known_rounds == r).sum())
            stats[f"used:{r}"] = int(known_used[known_rounds == r].sum())
        history = pa.Table.from_arrays([ordered.column("id"), ordered.column("annotator"), ordered.column("label"),
                                        ordered.column(ROUND), pa.array(~dropped), ordered.column(SOURCE),
                                        ordered.column(ROW)], schema=HISTORY_SCHEMA).filter(pa.array(known))
        orphans = ordered.filter(pa.array(~known))
        faults = quarantine_batch(json_records(orphans, list(ANNOTATION_COLUMNS)), UNKNOWN_EXAMPLE, "labels",
                                  orphans.column(SOURCE), orphans.column(ROW))
        frame = frame[~dropped & known]
    else:
        frame = pd.DataFrame({"id": [], "annotator": [], "label": []})
        history = HISTORY_SCHEMA.empty_table()
        faults = empty_quarantine()
    wide = frame.pivot(index="id", columns="annotator", values="label") if len(frame) else pd.DataFrame()
    wide = wide.reindex(index=ids, columns=list(annotators))
    values = wide.to_numpy(dtype=object).reshape(-1) if n else np.array([], dtype=object)
    offsets = np.arange(0, n * len(annotators) + 1, max(len(annotators), 1), dtype=np.int32)[: n + 1]
    flat = pa.array(values, pa.string(), from_pandas=True)
    matrix = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)
    texts = pa.array([_json.dumps({a: v for a, v in zip(annotators, row) if isinstance(v, str)}, sort_keys=True)
                      for row in wide.to_numpy(dtype=object)] if n else [], pa.string())
    joined = examples.append_column(MATRIX, matrix).append_column(ANNOTATIONS, texts)
    return joined, stats, history, faults


def annotation_stats(counts: Dict[str, int]) -> Dict:
    """The join's summed counts → the report's `labels.annotations`: annotations, orphan,
    repeated, superseded, and per round the labels of known examples read and used."""
    out = {k: v for k, v in counts.items() if ":" not in k}
    rounds = sorted({int(k.split(":")[1]) for k in counts if k.startswith("round:")})
    out["rounds"] = {str(r): {"labels": counts.get(f"round:{r}", 0), "used": counts.get(f"used:{r}", 0)}
                     for r in rounds}
    return out


class _JoinBucketFn(beam.DoFn):
    STATS = "stats"
    HISTORY = "history"
    FAULTS = "faults"

    def __init__(self, id_column: str):
        self._id = id_column

    def process(self, element, annotators):
        _, grouped = element
        examples = concat_batches(grouped["examples"])
        if not examples.num_columns:
            examples = pa.table({self._id: pa.array([], pa.string())})
        table, stats, history, faults = attach_annotations(examples, concat_batches(grouped["annotations"]),
                                                           self._id, annotators)
        yield from table_to_batches(table)
        yield from (pvalue.TaggedOutput(self.HISTORY, b) for b in table_to_batches(history))
        if faults.num_rows:
            yield pvalue.TaggedOutput(self.FAULTS, faults)
        yield pvalue.TaggedOutput(self.STATS, stats)


def _by_id_bucket(batch: pa.RecordBatch, column: str, buckets: int):
    return key_by_bucket(batch, [pc.cast(batch.column(column), pa.string())], buckets)


class AttachResult(NamedTuple):
    """`AttachAnnotations`' outputs."""

    rows: beam.PCollection         # record batches: the examples + MATRIX (for ConsolidateLabels) + ANNOTATIONS
    annotators: beam.PCollection   # one element: the sorted list of annotators, the order of MATRIX's entries
    stats: beam.PCollection        # one dict: `annotation_stats`, for the report
    history: beam.PCollection      # record batches, HISTORY_SCHEMA: every label of a known example
    faults: beam.PCollection       # record batches, QUARANTINE_SCHEMA: labels of unknown examples


@beam.typehints.with_input_types(pa.RecordBatch)
class AttachAnnotations(beam.PTransform):
    """(examples, annotations) → an `AttachResult`: examples carrying their annotations.

    `annotations` are `ReadAnnotations`' rows. Both sides are shuffled by a hash bucket of
    the example id (whole sub-batches); with `spill`, a folder, as paths of files there
    (`CoGroupBySpilled`), so the runner does not hold every example.
    """

    def __init__(self, id_column: str, buckets: int = 16, spill: Optional[str] = None):
        super().__init__()
        self._id = id_column
        self._buckets = max(1, buckets)
        self._spill = spill

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
                  | "JoinById" >> CoGroupBySpilled(self._spill)
                  | "Attach" >> beam.ParDo(_JoinBucketFn(id_column), pvalue.AsSingleton(annotators))
                  .with_outputs(_JoinBucketFn.STATS, _JoinBucketFn.HISTORY, _JoinBucketFn.FAULTS, main="rows"))
        as_batches(joined, "rows", _JoinBucketFn.HISTORY, _JoinBucketFn.FAULTS)
        stats = (joined[_JoinBucketFn.STATS]
                 | "SumJoinStats" >> beam.CombineGlobally(MergeCounts())
                 | "AnnotationStats" >> beam.Map(annotation_stats))
        return AttachResult(joined.rows, annotators, stats, joined[_JoinBucketFn.HISTORY],
                            joined[_JoinBucketFn.FAULTS])
