"""Config → Beam graph. Knows the config and the output layout, nothing of MLMD or the CLI.

The report (funnel counts, quarantine reasons, split balance) is computed inside the
pipeline from small combines and written as `report.json`, so it exists on every runner
without relying on runner metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from pipeline.config import Config
from transforms.batches import (DUPLICATES_SCHEMA, as_batches, EXAMPLE_ID, QUARANTINE_SCHEMA, ROW, SOURCE, drop_columns,
                                json_records, MergeCounts, value_counts)
from transforms.clean import ARROW_TYPES, DedupSpec, Deduplicate, ValidateRows, ValidateSpec, normalize_labels
from transforms.labels import (AGREEMENT, ANNOTATIONS, MATRIX, N_LABELS, AttachAnnotations, ConsolidateLabels,
                              LabelsSpec)
from transforms.features import AnalyzeAndTransform, TftInput, declarative_preprocessing_fn, load_user_fn
from transforms.read import ReaderSpec, ReadInputs
from transforms.split import StratifiedSplit
from transforms.write import WriteAllShards


@dataclass(frozen=True)
class Layout:
    """The output folders of one run (`OUT/<run_id>/...`)."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

    def raw(self, split: str) -> str:
        return self.join("raw", split)

    def transformed(self, split: str) -> str:
        return self.join("transformed", split)

    @property
    def quarantine(self) -> str:
        return self.join("quarantine")

    @property
    def duplicates(self) -> str:
        return self.join("duplicates")

    @property
    def transform_fn(self) -> str:
        return self.join("transform_fn")

    @property
    def transformed_metadata(self) -> str:
        return self.join("transformed_metadata")

    @property
    def report(self) -> str:
        return self.join("report.json")

    @property
    def tmp(self) -> str:
        return self.join("tmp")


def reader_spec(inp) -> ReaderSpec:
    c = inp.csv
    return ReaderSpec(format=inp.format, header=c.header, delimiter=c.delimiter, quote_char=c.quote_char,
                      na_values=tuple(c.na_values), trim=c.trim, names=tuple(c.names) if c.names else None)


def reader_specs(cfg: Config) -> List[ReaderSpec]:
    return [reader_spec(inp) for inp in cfg.inputs]


def clean_schema(cfg: Config) -> pa.Schema:
    """The columns of clean rows and raw splits."""
    fields = [pa.field(c, ARROW_TYPES[k]) for c, k in cfg.input_columns.items()]
    if cfg.consensus_label:
        if cfg.schema.label not in cfg.input_columns:
            fields.append(pa.field(cfg.schema.label, pa.string()))
        if cfg.labels.annotations:
            fields.append(pa.field(ANNOTATIONS, pa.string()))
        fields += [pa.field(AGREEMENT, pa.float64()), pa.field(N_LABELS, pa.int64())]
    return pa.schema(fields + [pa.field(EXAMPLE_ID, pa.string()), pa.field(SOURCE, pa.string()),
                               pa.field(ROW, pa.int64())])


def labels_spec(cfg: Config) -> LabelsSpec:
    lab = cfg.labels
    return LabelsSpec(annotators=tuple(lab.annotators), label=cfg.schema.label, consensus=lab.consensus,
                      on_tie=lab.on_tie, slices=tuple(lab.slices), classes=tuple(lab.classes),
                      iterations=lab.iterations, matrix_column=MATRIX if lab.annotations else None)


def read_annotations(p: beam.Pipeline, cfg: Config, files: Sequence[Tuple[int, str]], layout: Layout,
                     writes: Dict[str, Any]):
    """The long-form annotation files → batches of (id, annotator, label, _source, _row),
    labels normalised like the wide form. Broken lines and rows missing a field are
    written to `annotation_faults/` (they are not examples, so not in the row funnel)."""
    ann = cfg.labels.annotations
    lab = cfg.labels
    wanted = [ann.id, ann.annotator, ann.label]
    read = (p | "AnnotationFiles" >> beam.Create([(0, uri) for _, uri in files])
            | "ReadAnnotations" >> ReadInputs([reader_spec(ann)], wanted))

    def tidy(batch: pa.RecordBatch):
        ids = pc.cast(batch.column(ann.id), pa.string())
        who = pc.cast(batch.column(ann.annotator), pa.string())
        label = normalize_labels(pc.cast(batch.column(ann.label), pa.string()), dict(lab.normalize), lab.trim,
                                 lab.case_fold, tuple(lab.replace.items()))
        out = pa.RecordBatch.from_arrays([ids, who, label, batch.column(SOURCE), batch.column(ROW)],
                                         names=["id", "annotator", "label", SOURCE, ROW])
        ok = pc.and_(pc.and_(pc.is_valid(ids), pc.is_valid(who)), pc.is_valid(label))
        yield out.filter(ok)
        bad = out.filter(pc.invert(ok))
        if bad.num_rows:
            yield pvalue.TaggedOutput("faults", pa.RecordBatch.from_arrays([
                json_records(bad, ["id", "annotator", "label"]),
                pa.array(["annotation_missing_field"] * bad.num_rows, pa.string()),
                pa.array(["labels"] * bad.num_rows, pa.string()), bad.column(SOURCE), bad.column(ROW)],
                schema=QUARANTINE_SCHEMA))

    tidied = as_batches(read.rows | "TidyAnnotations" >> beam.FlatMap(tidy).with_outputs("faults", main="rows"),
                        "rows", "faults")
    faults = (read.quarantine, tidied.faults) | "AnnotationFaults" >> beam.Flatten()
    writes[layout.join("annotation_faults")] = (faults, 1, QUARANTINE_SCHEMA)
    return tidied.rows, _count(faults, "annotation_faults")


def validate_spec(cfg: Config) -> ValidateSpec:
    labels = cfg.labels
    return ValidateSpec(
        column_types=dict(cfg.input_columns), label=None if cfg.consensus_label else cfg.schema.label,
        id_column=cfg.schema.id, annotators=tuple(labels.annotators) if labels else (),
        rules=tuple(cfg.clean.rules),
        label_map=tuple(labels.normalize.items()) if labels else (),
        label_replace=tuple(labels.replace.items()) if labels else (),
        label_trim=bool(labels and labels.trim), label_case_fold=bool(labels and labels.case_fold),
        filters=tuple(cfg.clean.filters))


def dedup_spec(cfg: Config) -> DedupSpec:
    d = cfg.clean.dedup
    keys = [c for c in cfg.input_columns if c != cfg.schema.id] if d.keys == "all" else list(d.keys)
    label = None if cfg.consensus_label or cfg.schema.label in keys else cfg.schema.label
    return DedupSpec(keys=tuple(keys), label=label,
                     trim=d.normalize.trim, case_fold=d.normalize.case_fold,
                     collapse_whitespace=d.normalize.collapse_whitespace, on_conflict=d.on_conflict)


def _count(pcoll, label: str):
    return (pcoll
            | f"Rows[{label}]" >> beam.Map(lambda b: b.num_rows)
            | f"Sum[{label}]" >> beam.CombineGlobally(sum))


def _tally(pcoll, label: str, key: str, by: Optional[str] = None):
    """Counts of a PCollection of batches as {key: rows} (and {key:value: rows} per value
    of column `by`), to be merged with the other tallies in one combine."""
    def tally(b: pa.RecordBatch) -> Dict[str, int]:
        out = {key: b.num_rows}
        if by:
            out.update({f"{key}:{v}": n for v, n in value_counts(b.column(by)).items()})
        return out

    return pcoll | f"Tally[{label}]" >> beam.Map(tally)


def _reason_tally(b: pa.RecordBatch) -> Dict[str, int]:
    keys = pc.binary_join_element_wise(b.column("stage"), b.column("reason"), "\t")
    return {f"reason:{k}": n for k, n in value_counts(keys).items()}


def _write_report(_, path: str, splits: Sequence[str], totals: Dict[str, int], **parts) -> str:
    reasons: Dict[str, Dict[str, int]] = {}
    inputs: Dict[str, int] = {}
    for key, n in sorted(totals.items()):
        if key.startswith("reason:"):
            stage, reason = key[len("reason:"):].split("\t", 1)
            reasons.setdefault(stage, {})[reason] = n
        elif key.startswith(("read:", "ingest_quarantined:")):
            uri = key.split(":", 1)[1]
            inputs[uri] = inputs.get(uri, 0) + n
    rows = {"input": totals.get("read", 0) + totals.get("ingest_quarantined", 0),
            "clean": sum(totals.get(f"split:{s}", 0) for s in splits),
            "quarantined": totals.get("quarantined", 0),
            "duplicates": totals.get("duplicates", 0)}
    for s in splits:
        rows[s] = totals.get(f"split:{s}", 0)
    report = {
        "rows": rows,
        "quarantine_reasons": reasons,
        "inputs": {uri: inputs[uri] for uri in sorted(inputs)},
        "split": parts["balance"],
    }
    if "labels" in parts:
        report["labels"] = parts["labels"]
    if "annotations" in parts:
        report["labels"]["annotations"] = dict(parts["annotations"], faults=parts["annotation_faults"])
    with FileSystems.create(path) as f:
        f.write(json.dumps(report, indent=2, sort_keys=False).encode())
    return path


def build_pipeline(p: beam.Pipeline, cfg: Config, files: Sequence[Tuple[int, str]], layout: Layout,
                   shuffle_buckets: int = 16) -> None:
    """Adds the whole dataprep graph for `cfg` to `p`, reading `files` and writing under `layout`."""
    shards = cfg.output.shards
    splits = list(cfg.split.fractions)
    # directory: (batches, shards, schema). The untransformed outputs go through one shuffle and
    # the transformed ones through another: on the DirectRunner, whose shuffles hold their whole
    # input, the first is written and freed before TFT's output arrives (10M rows: 7.3 → 5.8 GB peak).
    writes: Dict[str, Any] = {}

    n_inputs = len(cfg.inputs)
    annotation_files = [f for f in files if f[0] >= n_inputs]
    files = [f for f in files if f[0] < n_inputs]
    paths = p | "InputFiles" >> beam.Create(list(files))
    read = paths | "Ingest" >> ReadInputs(reader_specs(cfg), list(cfg.input_columns))
    validated = read.rows | "Clean" >> ValidateRows(validate_spec(cfg))
    clean = validated.rows
    duplicates = None
    quarantines = [read.quarantine, validated.quarantine]
    if cfg.clean.dedup:
        deduped = clean | "Dedup" >> Deduplicate(dedup_spec(cfg), shuffle_buckets)
        clean, duplicates = deduped.rows, deduped.duplicates
        quarantines.append(deduped.quarantine)
    labels_report = join_stats = annotation_faults = None
    if cfg.consensus_label:
        names = None
        if cfg.labels.annotations:
            annotations, annotation_faults = read_annotations(p, cfg, annotation_files, layout, writes)
            joined = (clean, annotations) | "AttachAnnotations" >> AttachAnnotations(cfg.schema.id, shuffle_buckets)
            clean, names, join_stats = joined["rows"], joined["annotators"], joined["stats"]
        labelled = clean | "Labels" >> ConsolidateLabels(labels_spec(cfg), names)
        clean, labels_report = labelled["rows"], labelled["report"]
        quarantines.append(labelled["quarantine"])
        if cfg.labels.annotations:
            clean = clean | "DropLabelMatrix" >> beam.Map(drop_columns, [MATRIX]).with_output_types(pa.RecordBatch)

    split = clean | "Split" >> StratifiedSplit(cfg.split.fractions, cfg.stratify_by, cfg.split.seed,
                                               group_by=cfg.split.group_by, buckets=shuffle_buckets)
    raw_schema = clean_schema(cfg)
    for name in splits:
        writes[layout.raw(name)] = (split[name], shards, raw_schema)

    quarantine = quarantines | "AllQuarantine" >> beam.Flatten()
    writes[layout.quarantine] = (quarantine, shards, QUARANTINE_SCHEMA)
    if duplicates is None:
        duplicates = p | "NoDuplicates" >> beam.Create([]).with_output_types(pa.RecordBatch)
    writes[layout.duplicates] = (duplicates, shards, DUPLICATES_SCHEMA)

    _write_all(writes, "Write")
    if cfg.features:
        transformed: Dict[str, Any] = {}
        add_features(cfg, {n: split[n] for n in splits}, layout, shards, transformed)
        _write_all(transformed, "WriteTransformed")

    # Every count of the funnel in one combine (one stage, whatever the number of counts).
    tallies = [_tally(read.rows, "read", "read", by=SOURCE),
               _tally(read.quarantine, "ingest_quarantined", "ingest_quarantined", by=SOURCE),
               _tally(quarantine, "quarantined", "quarantined"),
               quarantine | "Tally[reasons]" >> beam.Map(_reason_tally),
               _tally(duplicates, "duplicates", "duplicates")]
    tallies += [_tally(split[name], f"split_{name}", f"split:{name}") for name in splits]
    totals = tallies | "AllTallies" >> beam.Flatten() | "SumTallies" >> beam.CombineGlobally(MergeCounts())
    parts = {"balance": split["_report"]}
    if labels_report is not None:
        parts["labels"] = labels_report
    if join_stats is not None:
        parts["annotations"] = join_stats
        parts["annotation_faults"] = annotation_faults
    (p
     | "ReportSeed" >> beam.Create([None])
     | "WriteReport" >> beam.Map(_write_report, layout.report, splits, pvalue.AsSingleton(totals),
                                 **{k: pvalue.AsSingleton(v) for k, v in parts.items()}))


def _write_all(writes: Dict[str, Any], label: str) -> None:
    ({d: pcoll for d, (pcoll, _, _) in writes.items()}
     | label >> WriteAllShards({d: (n, schema) for d, (_, n, schema) in writes.items()}))


def add_features(cfg: Config, splits: Dict[str, beam.PCollection], layout: Layout, shards: int,
                 writes: Dict[str, Any]) -> None:
    types = cfg.column_types
    if cfg.preprocessing_fn:
        fn = load_user_fn(cfg.preprocessing_fn)
        if cfg.feature_specs:  # per-column transforms beside user code: both sets of outputs
            from transforms.features import combined_preprocessing_fn

            fn = combined_preprocessing_fn(fn, declarative_preprocessing_fn(cfg.feature_specs, types))
        declared = {s.column for s in cfg.feature_specs}   # a metadata column may be a feature too
        feature_columns = {c: k for c, k in types.items() if c not in _passthrough_columns(cfg) or c in declared}
    else:
        fn = declarative_preprocessing_fn(cfg.feature_specs, types)
        feature_columns = {s.column: types[s.column] for s in cfg.feature_specs}
    raw = clean_schema(cfg)
    passthrough = {c: raw.field(c).type for c in _passthrough_columns(cfg)}
    tft_input = TftInput(feature_columns, passthrough)
    transform = AnalyzeAndTransform(fn, tft_input, temp_dir=layout.tmp, output_dir=layout.root,
                                    tf_compat_v1=cfg.tf_compat_v1)
    transformed, _ = splits | "Transform" >> transform
    for name, pcoll in transformed.items():
        # the schema known from the traced graph, so an empty split still gets typed shards
        writes[layout.transformed(name)] = (pcoll, shards, transform.output_schema)


def _passthrough_columns(cfg: Config) -> List[str]:
    cols = [cfg.schema.label, *cfg.schema.metadata]
    if cfg.schema.id:
        cols.append(cfg.schema.id)
    if cfg.consensus_label:  # the annotations and each example's agreement ride along
        cols += [*cfg.labels.annotators, *([ANNOTATIONS] if cfg.labels.annotations else []), AGREEMENT, N_LABELS]
    cols += [EXAMPLE_ID, SOURCE, ROW]
    seen = []
    for c in cols:
        if c not in seen:
            seen.append(c)
    return seen
