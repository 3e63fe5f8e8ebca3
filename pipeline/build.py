"""Config → Beam graph. Knows the config and the output layout, nothing of MLMD or the CLI.

The config models are turned here into the frozen specs the transforms take
(`reader_spec`, `validate_spec`, `dedup_spec`, `labels_spec`, `annotations_spec`,
`feature_specs`), so that no transform sees a config model. `build_pipeline` adds the
stages to a pipeline and returns a `Plan`: the stages it built, which the launcher
records in MLMD, and where the job leaves its results for the report.
"""

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
import pyarrow as pa

from pipeline.config import AnnotationsConfig, Config, ConfigError, FeatureConfig, InputConfig, RuleConfig
from pipeline.inputs import ANNOTATIONS, DATA, InputFile, source_names
from pipeline.layout import Layout
from pipeline.report import WriteJobResults, funnel_totals, quarantine_samples
from transforms.batches import DUPLICATES_SCHEMA, EXAMPLE_ID, QUARANTINE_SCHEMA, ROW, SOURCE, drop_columns
from transforms.clean import ARROW_TYPES, DedupSpec, Deduplicate, RuleSpec, ValidateRows, ValidateSpec
from transforms.clean.leakage import CrossSplitPairs
from transforms.clean.minhash import optimal_param
from transforms.clean.near_dedup import GROUP, NEAR_DUPLICATES_COLUMNS, NearDedupSpec, NearDeduplicate, finish_rows
from transforms.features import (AnalyzeAndTransform, FeatureSpec, TftInput, combined_preprocessing_fn,
                                 declarative_preprocessing_fn)
from transforms.labels import (AGREEMENT, ANNOTATIONS as ANNOTATIONS_COLUMN, MATRIX, N_LABELS, AnnotationsSpec,
                               AttachAnnotations, ConsolidateLabels, LabelsSpec, ReadAnnotations, ReviewFiles,
                               ReviewSpec, WriteReviewQueue)
from transforms.read import ReaderSpec, ReadInputs
from transforms.slices import MetadataSlices, SliceSpec
from transforms.split import StratifiedSplit
from transforms.user_code import UserCodeError, load_function
from transforms.write import WriteAllShards

# ---- config → the transforms' specs ---------------------------------------------------------


def reader_spec(entry: Union[InputConfig, AnnotationsConfig]) -> ReaderSpec:
    c = entry.csv
    return ReaderSpec(format=entry.format, header=c.header, delimiter=c.delimiter, quote_char=c.quote_char,
                      na_values=tuple(c.na_values), trim=c.trim, names=tuple(c.names) if c.names else None)


def reader_specs(cfg: Config) -> List[ReaderSpec]:
    """One reader per data input, in config order: a file's reader index is its input index."""
    return [reader_spec(inp) for inp in cfg.inputs]


def rule_spec(rule: RuleConfig) -> RuleSpec:
    return RuleSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in rule.model_dump().items()})


def validate_spec(cfg: Config) -> ValidateSpec:
    labels = cfg.labels
    return ValidateSpec(
        column_types=dict(cfg.input_columns), label=None if cfg.consensus_label else cfg.schema.label,
        id_column=cfg.schema.id, annotators=tuple(labels.annotators) if labels else (),
        rules=tuple(rule_spec(r) for r in cfg.clean.rules),
        label_map=tuple(labels.normalize.items()) if labels else (),
        label_replace=tuple(labels.replace.items()) if labels else (),
        label_trim=bool(labels and labels.trim), label_case_fold=bool(labels and labels.case_fold),
        filters=tuple(cfg.clean.filters), code_dirs=(cfg.base_dir,) if cfg.clean.filters else (),
        allow_non_finite=cfg.clean.allow_non_finite,
        float32_columns=tuple(c for c, k in tft_columns(cfg).items() if k == "float"))


def dedup_spec(cfg: Config) -> DedupSpec:
    d = cfg.clean.dedup
    keys = [c for c in cfg.input_columns if c != cfg.schema.id] if d.keys == "all" else list(d.keys)
    label = None if cfg.consensus_label or cfg.schema.label in keys else cfg.schema.label
    return DedupSpec(keys=tuple(keys), label=label,
                     trim=d.normalize.trim, case_fold=d.normalize.case_fold,
                     collapse_whitespace=d.normalize.collapse_whitespace, on_conflict=d.on_conflict)


def near_dedup_spec(cfg: Config) -> NearDedupSpec:
    """`clean.near_dedup` as the stage's spec; bands × rows from threshold and num_perm unless set."""
    nd = cfg.clean.near_dedup
    bands, rows = (nd.bands, nd.rows) if nd.bands else optimal_param(nd.threshold, nd.num_perm,
                                                                                    *nd.weights)
    return NearDedupSpec(columns=tuple(nd.columns), threshold=nd.threshold, shingle=nd.shingle_kind,
                         shingle_size=nd.shingle_size, num_perm=nd.num_perm, bands=bands, rows=rows,
                         action=nd.action, seed=nd.seed, bucket_cap=nd.bucket_cap, max_nodes=nd.max_nodes,
                         group_by=cfg.split.group_by)


def duplicates_schema(cfg: Config) -> pa.Schema:
    """duplicates/: DUPLICATES_SCHEMA, and with near_dedup a reason and a similarity after it
    (configs without near_dedup keep the schema, and bytes, they had)."""
    if not cfg.clean.near_dedup:
        return DUPLICATES_SCHEMA
    return pa.schema(list(DUPLICATES_SCHEMA) + [pa.field(n, t) for n, t in NEAR_DUPLICATES_COLUMNS])


def _exact_duplicates(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Exact copies in the near-dedup duplicates schema: reason `duplicate`, similarity 1."""
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(["duplicate"] * n, pa.string()),
                                                             pa.array([1.0] * n, pa.float64())], schema=schema)


def labels_spec(cfg: Config) -> LabelsSpec:
    lab = cfg.labels
    return LabelsSpec(annotators=tuple(lab.annotators), label=cfg.schema.label, consensus=lab.consensus,
                      on_tie=lab.on_tie, slices=tuple(lab.slices), classes=tuple(lab.classes),
                      iterations=lab.iterations, matrix_column=MATRIX if lab.annotations else None)


def slice_spec(cfg: Config) -> SliceSpec:
    """The metadata slices of the report: every `schema.metadata` column."""
    labelled = cfg.consensus_label
    return SliceSpec(columns=tuple(cfg.schema.metadata), label=cfg.schema.label,
                     max_values=cfg.report.max_slice_values, agreement=AGREEMENT if labelled else None,
                     label_count=N_LABELS if labelled else None)


def review_spec(cfg: Config) -> Optional[ReviewSpec]:
    r = cfg.labels.review if cfg.labels else None
    if r is None:
        return None
    slice_by = r.slice_by or (cfg.labels.slices[0] if cfg.labels.slices else None)
    return ReviewSpec(max_agreement=r.max_agreement, min_posterior=r.min_posterior, per_slice=r.per_slice,
                      slice_by=slice_by, drop_columns=(MATRIX,) if cfg.labels.annotations else ())


def review_files(cfg: Config, layout: Layout) -> ReviewFiles:
    lab = cfg.labels
    return ReviewFiles(directory=layout.review, label=cfg.schema.label, annotators=tuple(lab.annotators),
                       shown=tuple(c for c in [cfg.schema.id, *cfg.schema.metadata] if c),
                       annotations_column=ANNOTATIONS_COLUMN if lab.annotations else None,
                       classes=tuple(lab.classes))


def annotations_spec(cfg: Config) -> AnnotationsSpec:
    lab, ann = cfg.labels, cfg.labels.annotations
    return AnnotationsSpec(reader=reader_spec(ann), id=ann.id, annotator=ann.annotator, label=ann.label,
                           label_map=tuple(lab.normalize.items()), label_replace=tuple(lab.replace.items()),
                           label_trim=lab.trim, label_case_fold=lab.case_fold)


def feature_spec(feature: FeatureConfig) -> FeatureSpec:
    return FeatureSpec(**feature.model_dump())


def feature_specs(cfg: Config) -> List[FeatureSpec]:
    """The declarative `features:` entries (not `preprocessing_fn`), in config order."""
    return [feature_spec(fc) for fc in cfg.feature_configs]


def clean_schema(cfg: Config) -> pa.Schema:
    """The columns of clean rows and raw splits."""
    fields = [pa.field(c, ARROW_TYPES[k]) for c, k in cfg.input_columns.items()]
    if cfg.consensus_label:
        if cfg.schema.label not in cfg.input_columns:
            fields.append(pa.field(cfg.schema.label, pa.string()))
        if cfg.labels.annotations:
            fields.append(pa.field(ANNOTATIONS_COLUMN, pa.string()))
        fields += [pa.field(AGREEMENT, pa.float64()), pa.field(N_LABELS, pa.int64())]
    return pa.schema(fields + [pa.field(EXAMPLE_ID, pa.string()), pa.field(SOURCE, pa.string()),
                               pa.field(ROW, pa.int64())])


def _passthrough_columns(cfg: Config) -> List[str]:
    cols = [cfg.schema.label, *cfg.schema.metadata]
    if cfg.schema.id:
        cols.append(cfg.schema.id)
    if cfg.consensus_label:  # the annotations and each example's agreement ride along
        cols += [*cfg.labels.annotators, *([ANNOTATIONS_COLUMN] if cfg.labels.annotations else []), AGREEMENT,
                 N_LABELS]
    cols += [EXAMPLE_ID, SOURCE, ROW]
    return list(dict.fromkeys(cols))


# ---- the graph ------------------------------------------------------------------------------


class Output(NamedTuple):
    """One output folder: its batches, its number of shards, and the schema of an empty one."""

    directory: str
    batches: beam.PCollection
    shards: int
    schema: Optional[pa.Schema]


@dataclass(frozen=True)
class Plan:
    """What `build_pipeline` built: the stages (ingest, clean, [labels], split, [transform],
    write), the split names, and the file the job writes its results to."""

    stages: List[str]
    splits: List[str]
    job_results: str


def _write(outputs: Sequence[Output], label: str, spill: str) -> None:
    ({o.directory: o.batches for o in outputs}
     | label >> WriteAllShards({o.directory: (o.shards, o.schema) for o in outputs}, spill))


def _count(pcoll, label: str):
    return (pcoll
            | f"Rows[{label}]" >> beam.Map(lambda b: b.num_rows)
            | f"Sum[{label}]" >> beam.CombineGlobally(sum))


MIN_BUCKETS = 16
BUCKET_BYTES = 64 << 20


def shuffle_buckets_for(files: Sequence[InputFile]) -> int:
    """The hash buckets of the keyed shuffles (dedup, groups, near-dedup, slices): 16, or one per
    64 MB of input when that is more, so that one bucket (one element on one worker) stays
    about a read range's size whatever the data (at 16, a bucket of 60M rows is 3.75M rows).
    Which bucket a row is in changes no output: each bucket is a set of whole keys."""
    total = sum(f.size for f in files)
    return max(MIN_BUCKETS, -(-total // BUCKET_BYTES))


def build_pipeline(p: beam.Pipeline, cfg: Config, files: Sequence[InputFile], layout: Layout,
                   shuffle_buckets: Optional[int] = None, progress_dir: Optional[str] = None) -> Plan:
    """Adds the whole dataprep graph for `cfg` to `p`, reading `files` and writing under `layout`
    (and, with `progress_dir`, the bytes read so far there: see `pipeline/progress.py`)."""
    if shuffle_buckets is None:
        shuffle_buckets = shuffle_buckets_for(files)
    shards = cfg.output.shards
    splits = list(cfg.split.fractions)
    stages = ["ingest", "clean"]
    results: Dict[str, beam.PCollection] = {}   # the job's small results, for the report
    # The untransformed outputs go through one shuffle and the transformed ones through
    # another: on the DirectRunner, whose shuffles hold their whole input, the first is
    # written and freed before TFT's output arrives.
    outputs: List[Output] = []

    paths = p | "InputFiles" >> beam.Create([(f.index, f.uri) for f in files if f.kind == DATA])
    read = paths | "Ingest" >> ReadInputs(reader_specs(cfg), list(cfg.input_columns), progress_dir=progress_dir,
                                          source_names=source_names(files))
    validated = read.rows | "Clean" >> ValidateRows(validate_spec(cfg))
    clean = validated.rows
    duplicates = None
    quarantines = [read.quarantine, validated.quarantine]
    if cfg.clean.dedup:
        deduped = clean | "Dedup" >> Deduplicate(dedup_spec(cfg), shuffle_buckets, layout.spill)
        clean, duplicates = deduped.rows, deduped.duplicates
        quarantines.append(deduped.quarantine)
    dup_schema = duplicates_schema(cfg)
    near = None
    if cfg.clean.near_dedup:
        near = clean | "NearDedup" >> NearDeduplicate(near_dedup_spec(cfg), dup_schema, shuffle_buckets)
        clean = near.rows
        if duplicates is not None:
            duplicates = duplicates | "DuplicateReason" >> beam.Map(_exact_duplicates, dup_schema) \
                .with_output_types(pa.RecordBatch)
            duplicates = (duplicates, near.duplicates) | "AllDuplicates" >> beam.Flatten()
        else:
            duplicates = near.duplicates
        results["near_dedup"] = near.stats
    if cfg.consensus_label:
        stages.append("labels")
        names = None
        if cfg.labels.annotations:
            annotation_files = p | "AnnotationFiles" >> beam.Create([f.uri for f in files if f.kind == ANNOTATIONS])
            annotations = annotation_files | "Annotations" >> ReadAnnotations(annotations_spec(cfg),
                                                                                 source_names(files))
            outputs.append(Output(layout.annotation_faults, annotations.faults, 1, QUARANTINE_SCHEMA))
            joined = (clean, annotations.rows) | "AttachAnnotations" >> AttachAnnotations(cfg.schema.id,
                                                                                         shuffle_buckets)
            clean, names = joined.rows, joined.annotators
            results["annotations"] = joined.stats
            results["annotation_faults"] = _count(annotations.faults, "annotation_faults")
        review = review_spec(cfg)
        labelled = clean | "Labels" >> ConsolidateLabels(labels_spec(cfg), names, review)
        clean = labelled.rows
        results["labels"] = labelled.report
        if review is not None:
            results["review"] = labelled.review | "Review" >> WriteReviewQueue(review_files(cfg, layout))
        quarantines.append(labelled.quarantine)
        if cfg.labels.annotations:
            clean = clean | "DropLabelMatrix" >> beam.Map(drop_columns, [MATRIX]).with_output_types(pa.RecordBatch)

    stages.append("split")
    group_by = GROUP if near is not None and cfg.clean.near_dedup.action == "group" else cfg.split.group_by
    # features are analysed on train: an empty train fails the job at the split plan, before TFT runs
    required = {"train": "features: the train split is empty, so there is nothing to analyse (every row was "
                         "quarantined, a duplicate or sent to another split)"} if cfg.features else None
    split = clean | "Split" >> StratifiedSplit(cfg.split.fractions, cfg.stratify_by, cfg.split.seed,
                                               group_by=group_by, buckets=shuffle_buckets, require_rows=required,
                                               spill=layout.spill)
    results["balance"] = split.balance
    if near is not None:
        results["leakage"] = (split.splits, near.pairs, near.clusters) | "Leakage" >> CrossSplitPairs(splits)
        split = split._replace(splits={
            name: pcoll | f"NearDedupColumns[{name}]" >> beam.Map(finish_rows).with_output_types(pa.RecordBatch)
            for name, pcoll in split.splits.items()})
    raw_schema = clean_schema(cfg)
    outputs += [Output(layout.raw(name), split.splits[name], shards, raw_schema) for name in splits]
    quarantine = quarantines | "AllQuarantine" >> beam.Flatten()
    outputs.append(Output(layout.quarantine, quarantine, shards, QUARANTINE_SCHEMA))
    if duplicates is None:
        duplicates = p | "NoDuplicates" >> beam.Create([]).with_output_types(pa.RecordBatch)
    outputs.append(Output(layout.duplicates, duplicates, shards, dup_schema))
    _write(outputs, "Write", layout.spill)
    if cfg.schema.metadata:
        clean_rows = list(split.splits.values()) | "AllSplits" >> beam.Flatten()
        results["metadata_slices"] = ({"read": read.rows, "clean": clean_rows, "quarantine": quarantine,
                                       "duplicates": duplicates}
                                      | "MetadataSlices" >> MetadataSlices(slice_spec(cfg), shuffle_buckets))

    if cfg.features:
        stages.append("transform")
        _write(add_features(cfg, split.splits, layout, shards), "WriteTransformed", layout.spill)
    stages.append("write")

    results["quarantine_samples"] = quarantine_samples(quarantine)
    results["totals"] = funnel_totals(read.rows, read.quarantine, quarantine, duplicates, split.splits)
    results | "JobResults" >> WriteJobResults(layout.job_results)
    return Plan(stages=stages, splits=splits, job_results=layout.job_results)


def preprocessing_fn(cfg: Config):
    """The TFT preprocessing_fn of `features:`: the declarative entries, the user's
    `preprocessing_fn`, or both (each set of outputs written).

    Raises:
      ConfigError: the user's function cannot be loaded (named `features.preprocessing_fn`).
    """
    specs = feature_specs(cfg)
    declarative = declarative_preprocessing_fn(specs, cfg.column_types)
    if not cfg.preprocessing_fn:
        return declarative
    try:
        fn = load_function(cfg.preprocessing_fn, (cfg.base_dir,))
    except UserCodeError as e:
        raise ConfigError(f"features.preprocessing_fn: {e}") from None
    return combined_preprocessing_fn(fn, declarative) if specs else fn


def tft_columns(cfg: Config) -> Dict[str, str]:
    """The columns TFT reads (none without `features:`), with their types."""
    if not cfg.features:
        return {}
    types = cfg.column_types
    specs = feature_specs(cfg)
    if cfg.preprocessing_fn:   # the user's code sees every column but the passthrough ones
        declared = {s.column for s in specs}   # a metadata column may be a feature too
        passthrough = _passthrough_columns(cfg)
        return {c: k for c, k in types.items() if c not in passthrough or c in declared}
    return {s.column: types[s.column] for s in specs}


def add_features(cfg: Config, splits: Dict[str, beam.PCollection], layout: Layout, shards: int) -> List[Output]:
    """The transform stage for `splits`, and the transformed outputs to write."""
    feature_columns = tft_columns(cfg)
    raw = clean_schema(cfg)
    tft_input = TftInput(feature_columns, {c: raw.field(c).type for c in _passthrough_columns(cfg)})
    transformed = splits | "Transform" >> AnalyzeAndTransform(
        preprocessing_fn(cfg), tft_input, temp_dir=layout.tmp, output_dir=layout.root, tf_compat_v1=cfg.tf_compat_v1,
        spill=layout.spill)
    # the schema known from the traced graph, so an empty split still gets typed shards
    return [Output(layout.transformed(name), pcoll, shards, transformed.schema)
            for name, pcoll in transformed.splits.items()]
