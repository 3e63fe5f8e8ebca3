"""Config → Beam graph. Knows the config and the output layout, nothing of MLMD or the CLI.

The config models are turned here into the frozen specs the transforms take
(`reader_spec`, `validate_spec`, `dedup_spec`, `labels_spec`, `annotations_spec`,
`feature_specs`), so that no transform sees a config model. `build_pipeline` adds the
stages to a pipeline and returns a `Plan`: the stages it built, which the launcher
records in MLMD, and where the job leaves its results for the report.
"""

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import apache_beam as beam
import pyarrow as pa

from pipeline.config import AnnotationsConfig, Config, ConfigError, FeatureConfig, InputConfig, RuleConfig
from pipeline.inputs import ANNOTATIONS, DATA, InputFile, source_names
from pipeline.layout import Layout
from pipeline.report import WriteJobResults, feature_missing, funnel_totals, quarantine_samples
from runners.profile import execution_profile
from transforms.batches import (DUPLICATES_SCHEMA, EXAMPLE_ID, QUARANTINE_SCHEMA, ROW, SOURCE, MergeCounts,
                                drop_columns, value_counts, without_fields)
from transforms.clean import DedupSpec, Deduplicate, RuleSpec, ValidateRows, ValidateSpec
from transforms.clean.validate import input_label_counts, validated_schema
from transforms.clean.leakage import CrossSplitLeaks, CrossSplitPairs
from transforms.clean.minhash import optimal_param
from transforms.clean.near_dedup import (GROUP, NEAR_DUPLICATES_SCHEMA, NearDedupSpec, NearDeduplicate,
                                         as_near_duplicates, finish_rows, finished_schema, near_rows_schema)
from transforms.features import (AnalyzeAndTransform, FeatureSpec, TftInput, combined_preprocessing_fn,
                                 declarative_preprocessing_fn)
from transforms.labels import (AGREEMENT, ANNOTATIONS as ANNOTATIONS_COLUMN, HISTORY_SCHEMA, MATRIX, N_LABELS,
                               POSTERIOR, AnnotationSource, AnnotationsSpec, AttachAnnotations, ConsolidateLabels,
                               LabelsSpec, ReadAnnotations, ReviewFiles, ReviewSpec, WriteReviewQueue)
from transforms.labels.annotations import annotated_schema
from transforms.labels.stage import labelled_schema
from transforms.read import ReaderSpec, ReadInputs
from transforms.slices import MetadataSlices, SliceSpec
from transforms.spill import Shuffle
from transforms.split import StratifiedSplit
from transforms.split.churn import ChurnSince
from transforms.statistics import SplitStatistics
from transforms.user_code import UserCodeError, load_function
from transforms.write import WriteAllShards

# ---- config → the transforms' specs ---------------------------------------------------------


def reader_spec(entry: Union[InputConfig, AnnotationsConfig]) -> ReaderSpec:
    c = entry.csv
    return ReaderSpec(format=entry.format, header=c.header, delimiter=c.delimiter, quote_char=c.quote_char,
                      na_values=tuple(c.na_values), trim=c.trim, names=tuple(c.names) if c.names else None,
                      encoding=entry.encoding)


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


def leakage_checks(cfg: Config) -> Dict[str, List[str]]:
    """`expect.leakage`: the key columns of each check (`CrossSplitLeaks`): the example id, the
    row's data (every input column but the id: an exact duplicate row), the split group."""
    checks = {"example_id": [EXAMPLE_ID], "rows": [c for c in cfg.input_columns if c != cfg.schema.id]}
    if cfg.split.group_by:
        checks["groups"] = [cfg.split.group_by]
    return checks


def unique_ids_needed(cfg: Config) -> bool:
    """Whether ids must be checked for repeats: `schema.id` is set and dedup does not already
    keep one row per id (`dedup.keys: [id]`). The split's exact cuts, the leakage checks and
    long-form annotations all take an example id for one example."""
    if not cfg.schema.id:
        return False
    d = cfg.clean.dedup
    return not (d and d.keys != "all" and list(d.keys) == [cfg.schema.id])


def near_dedup_spec(cfg: Config) -> NearDedupSpec:
    """`clean.near_dedup` as the stage's spec; bands × rows from threshold and num_perm unless set."""
    nd = cfg.clean.near_dedup
    bands, rows = (nd.bands, nd.rows) if nd.bands else optimal_param(nd.threshold, nd.num_perm,
                                                                                    *nd.weights)
    return NearDedupSpec(columns=tuple(nd.columns), threshold=nd.threshold, shingle=nd.shingle_kind,
                         shingle_size=nd.shingle_size, num_perm=nd.num_perm, bands=bands, rows=rows,
                         action=nd.action, seed=nd.seed, bucket_cap=nd.bucket_cap, max_nodes=nd.max_nodes,
                         group_by=cfg.split.group_by)


def labels_spec(cfg: Config) -> LabelsSpec:
    lab = cfg.labels
    return LabelsSpec(annotators=tuple(lab.annotators), label=cfg.schema.label, consensus=lab.consensus,
                      on_tie=lab.on_tie, slices=tuple(lab.slices), classes=tuple(lab.classes),
                      iterations=lab.iterations, matrix_column=MATRIX if lab.annotations else None,
                      ordinal=lab.ordinal)


def slice_spec(cfg: Config) -> SliceSpec:
    """The metadata slices of the report: every `schema.metadata` column."""
    labelled = cfg.consensus_label
    return SliceSpec(columns=tuple(cfg.schema.metadata), label=cfg.schema.label,
                     max_values=cfg.report.max_slice_values, agreement=AGREEMENT if labelled else None,
                     label_count=N_LABELS if labelled else None, splits=tuple(cfg.split.fractions))


def review_spec(cfg: Config) -> Optional[ReviewSpec]:
    r = cfg.labels.review if cfg.labels else None
    if r is None:
        return None
    slice_by = r.slice_by or (cfg.labels.slices[0] if cfg.labels.slices else None)
    return ReviewSpec(max_agreement=r.max_agreement, min_posterior=r.min_posterior, per_slice=r.per_slice,
                      slice_by=slice_by, drop_columns=(MATRIX,) if cfg.labels.annotations else ())


def review_files(cfg: Config, layout: Layout) -> ReviewFiles:
    """The review queue's files; its Label Studio tasks show the item (its data columns and
    metadata), never the earlier labels (the label, the annotators' columns)."""
    lab = cfg.labels
    hidden = {cfg.schema.label, cfg.schema.id, *lab.annotators}
    shown = [c for c in [*cfg.input_columns, *cfg.schema.metadata] if c not in hidden]
    return ReviewFiles(directory=layout.review, label=cfg.schema.label, annotators=tuple(lab.annotators),
                       shown=tuple(dict.fromkeys(shown)),
                       annotations_column=ANNOTATIONS_COLUMN if lab.annotations else None,
                       classes=tuple(lab.classes), run_id=layout.run_id)


def annotation_source(ann: AnnotationsConfig) -> AnnotationSource:
    if ann.format == "label_studio":
        return AnnotationSource(format=ann.format, id_field=ann.id_field, from_name=ann.from_name)
    return AnnotationSource(format=ann.format, reader=reader_spec(ann), id=ann.id, annotator=ann.annotator,
                            label=ann.label)


def annotations_spec(cfg: Config) -> AnnotationsSpec:
    """`labels.annotations` (one source or a list, oldest round first) as the reader's spec."""
    lab = cfg.labels
    return AnnotationsSpec(sources=tuple(annotation_source(a) for a in lab.annotation_sources),
                           classes=tuple(lab.classes), label_map=tuple(lab.normalize.items()),
                           label_replace=tuple(lab.replace.items()), label_trim=lab.trim,
                           label_case_fold=lab.case_fold)


def feature_spec(feature: FeatureConfig) -> FeatureSpec:
    return FeatureSpec(**feature.model_dump())


def feature_specs(cfg: Config) -> List[FeatureSpec]:
    """The declarative `features:` entries (not `preprocessing_fn`), in config order."""
    return [feature_spec(fc) for fc in cfg.feature_configs]


def _passthrough_columns(cfg: Config) -> List[str]:
    cols = [cfg.schema.label, *cfg.schema.metadata]
    if cfg.schema.id:
        cols.append(cfg.schema.id)
    if cfg.consensus_label:  # the annotations and each example's agreement ride along
        cols += [*cfg.labels.annotators, *([ANNOTATIONS_COLUMN] if cfg.labels.annotations else []), AGREEMENT,
                 N_LABELS, *([POSTERIOR] if cfg.labels.consensus == "dawid_skene" else [])]
    cols += [EXAMPLE_ID, SOURCE, ROW]
    return list(dict.fromkeys(cols))


# ---- the graph ------------------------------------------------------------------------------


class Output(NamedTuple):
    """One output folder: its batches, its number of shards, the schema its stage declares, and
    the folder of its TFRecord twin (`output.formats: [parquet, tfrecord]`), if any."""

    directory: str
    batches: beam.PCollection
    shards: int
    schema: pa.Schema
    tfrecords: Optional[str] = None


@dataclass(frozen=True)
class Plan:
    """What `build_pipeline` built: the stages (ingest, clean, [labels], split, [transform],
    write), the split names, and the file the job writes its results to."""

    stages: List[str]
    splits: List[str]
    job_results: str


def _write(outputs: Sequence[Output], label: str, spill: Optional[str], layout: Layout) -> beam.PCollection:
    """Writes `outputs` in one shuffle (with their TFRecord twins); returns the rows written per
    folder, named as under the run's folder (`raw/train`, `quarantine`, `tfx/raw/Split-train`,
    ...): one {name: rows} element."""
    written = ({o.directory: o.batches for o in outputs}
               | label >> WriteAllShards({o.directory: (o.shards, o.schema) for o in outputs}, spill,
                                         tfrecords={o.directory: o.tfrecords for o in outputs if o.tfrecords}))
    return written.rows | f"{label}Names" >> beam.Map(_named_rows, layout)


def _named_rows(rows: Dict[str, int], layout: Layout) -> Dict[str, int]:
    return {layout.name_of(d): n for d, n in rows.items()}


def _tfrecords(cfg: Config, layout: Layout, kind: str, split: str) -> Optional[str]:
    """The TFRecord folder of a split (TFX's `Split-<name>`), with `tfrecord` in output.formats."""
    return layout.tfx_split(kind, split) if cfg.output.tfrecord else None


def _count(pcoll, label: str):
    return (pcoll
            | f"Rows[{label}]" >> beam.Map(lambda b: b.num_rows)
            | f"Sum[{label}]" >> beam.CombineGlobally(sum))


def build_pipeline(p: beam.Pipeline, cfg: Config, files: Sequence[InputFile], layout: Layout,
                   shuffle: Optional[Shuffle] = None, progress_dir: Optional[str] = None,
                   previous_splits: Optional[Dict[str, str]] = None,
                   since: Optional[Tuple[Dict[str, str], Optional[str]]] = None) -> Plan:
    """Adds the whole dataprep graph for `cfg` to `p`, reading `files` and writing under `layout`
    (and, with `progress_dir`, the bytes read so far there: see `pipeline/progress.py`).
    `shuffle` is the runner's execution profile (`runners/profile.py`; default: the DirectRunner's).

    `previous_splits` (`split.sticky`): {split name: file pattern} of the raw splits of the
    run whose assignment is kept (`pipeline/rounds.py` finds them); empty or None: none.
    `since`: ({split name: file pattern}, label column) of the previous round's raw splits: the
    job counts what moved since (`ChurnSince`), for the report's `rounds`."""
    if shuffle is None:
        shuffle = execution_profile("DirectRunner", sum(f.size for f in files), layout.spill)
    shuffle_buckets, spill = shuffle.buckets, shuffle.spill
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
    validation = validate_spec(cfg)
    validated = read.rows | "Clean" >> ValidateRows(validation)
    clean = validated.rows
    schema = validated_schema(validation)     # of `clean`, followed through every stage that changes it
    duplicates = None
    quarantines = [read.quarantine, validated.quarantine]
    if cfg.clean.dedup:
        deduped = clean | "Dedup" >> Deduplicate(dedup_spec(cfg), shuffle_buckets, spill)
        clean, duplicates = deduped.rows, deduped.duplicates
        quarantines.append(deduped.quarantine)
    if unique_ids_needed(cfg):    # an example id that names two examples: every copy quarantined, `duplicate_id`
        unique = clean | "UniqueIds" >> Deduplicate(DedupSpec(keys=(cfg.schema.id,), repeated="quarantine"),
                                                    shuffle_buckets, spill)
        clean = unique.rows
        quarantines.append(unique.quarantine)
    dup_schema = DUPLICATES_SCHEMA
    near = None
    if cfg.clean.near_dedup:
        near = clean | "NearDedup" >> NearDeduplicate(near_dedup_spec(cfg), shuffle_buckets, spill)
        clean, dup_schema = near.rows, NEAR_DUPLICATES_SCHEMA
        schema = near_rows_schema(schema, cfg.clean.near_dedup.action)
        if duplicates is not None:
            duplicates = duplicates | "DuplicateReason" >> beam.Map(as_near_duplicates) \
                .with_output_types(pa.RecordBatch)
            duplicates = (duplicates, near.duplicates) | "AllDuplicates" >> beam.Flatten()
        else:
            duplicates = near.duplicates
        results["near_dedup"] = near.stats
    if cfg.consensus_label:
        stages.append("labels")
        names = None
        if cfg.labels.annotations:
            annotation_files = p | "AnnotationFiles" >> beam.Create([(f.index, f.uri) for f in files
                                                                     if f.kind == ANNOTATIONS])
            rounds = {f.shown: f.index + 1 for f in files if f.kind == ANNOTATIONS}
            annotations = annotation_files | "Annotations" >> ReadAnnotations(annotations_spec(cfg),
                                                                                 source_names(files), rounds)
            joined = (clean, annotations.rows) | "AttachAnnotations" >> AttachAnnotations(cfg.schema.id,
                                                                                         shuffle_buckets, spill)
            faults = (annotations.faults, joined.faults) | "AllAnnotationFaults" >> beam.Flatten()
            outputs.append(Output(layout.annotation_faults, faults, 1, QUARANTINE_SCHEMA))
            outputs.append(Output(layout.annotations, joined.history, shards, HISTORY_SCHEMA))
            clean, names = joined.rows, joined.annotators
            schema = annotated_schema(schema)
            results["annotations"] = joined.stats
            results["annotation_faults"] = _count(faults, "annotation_faults")
            results["annotation_fault_reasons"] = (faults | "AnnotationFaultReasons" >> beam.Map(
                lambda b: value_counts(b.column("reason"))) | "SumAnnotationFaultReasons" >> beam.CombineGlobally(
                MergeCounts()))
            results["label_studio"] = annotations.label_studio
        review = review_spec(cfg)
        labelling = labels_spec(cfg)
        labelled = clean | "Labels" >> ConsolidateLabels(labelling, names, review)
        clean = labelled.rows
        schema = labelled_schema(schema, labelling)
        results["labels"] = labelled.report
        if review is not None:
            results["review"] = labelled.review | "Review" >> WriteReviewQueue(review_files(cfg, layout))
        quarantines.append(labelled.quarantine)
        if cfg.labels.annotations:
            clean = clean | "DropLabelMatrix" >> beam.Map(drop_columns, [MATRIX]).with_output_types(pa.RecordBatch)
            schema = without_fields(schema, [MATRIX])

    stages.append("split")
    group_by = GROUP if near is not None and cfg.clean.near_dedup.action == "group" else cfg.split.group_by
    # features are analysed on train: an empty train fails the job at the split plan, before TFT runs
    required = {"train": "features: the train split is empty, so there is nothing to analyse (every row was "
                         "quarantined, a duplicate or sent to another split)"} if cfg.features else None
    split = clean | "Split" >> StratifiedSplit(cfg.split.fractions, cfg.stratify_by, cfg.split.seed,
                                               group_by=group_by, buckets=shuffle_buckets, require_rows=required,
                                               spill=spill, previous=previous_splits or None)
    results["balance"] = split.balance
    if near is not None:
        results["leakage"] = (split.splits, near.pairs, near.clusters) | "Leakage" >> CrossSplitPairs(splits)
        split = split._replace(splits={
            name: pcoll | f"NearDedupColumns[{name}]" >> beam.Map(finish_rows).with_output_types(pa.RecordBatch)
            for name, pcoll in split.splits.items()})
        schema = finished_schema(schema)
    raw_schema = schema
    if since and since[0]:
        results["churn"] = split.splits | "ChurnSince" >> ChurnSince(since[0], since[1], cfg.schema.label,
                                                                     shuffle_buckets, spill)
    if cfg.expect.leakage:
        results["leakage_checks"] = split.splits | "LeakageChecks" >> CrossSplitLeaks(leakage_checks(cfg),
                                                                                     shuffle_buckets)
    outputs += [Output(layout.raw(name), split.splits[name], shards, raw_schema,
                       _tfrecords(cfg, layout, "raw", name)) for name in splits]
    if cfg.output.statistics:
        split.splits | "Statistics" >> SplitStatistics(layout.tfx_statistics)
    quarantine = quarantines | "AllQuarantine" >> beam.Flatten()
    outputs.append(Output(layout.quarantine, quarantine, shards, QUARANTINE_SCHEMA))
    if duplicates is None:
        duplicates = p | "NoDuplicates" >> beam.Create([]).with_output_types(pa.RecordBatch)
    outputs.append(Output(layout.duplicates, duplicates, shards, dup_schema))
    written = [_write(outputs, "Write", spill, layout)]
    if cfg.schema.metadata:
        results["metadata_slices"] = ({"read": read.rows, "quarantine": quarantine, "duplicates": duplicates,
                                       **{f"split:{name}": pcoll for name, pcoll in split.splits.items()}}
                                      | "MetadataSlices" >> MetadataSlices(slice_spec(cfg), shuffle_buckets))

    if cfg.features:
        stages.append("transform")
        results["feature_missing"] = feature_missing(split.splits, list(tft_columns(cfg)))
        transformed = add_features(cfg, split.splits, layout, shards, raw_schema, spill)
        written.append(_write(transformed, "WriteTransformed", spill, layout))
    stages.append("write")
    results["written"] = written | "AllWritten" >> beam.Flatten() | "SumWritten" >> beam.CombineGlobally(MergeCounts())

    results["quarantine_samples"] = quarantine_samples(quarantine)
    input_labels = (None if cfg.consensus_label else
                     read.rows | "InputLabels" >> beam.Map(input_label_counts, validation))
    results["totals"] = funnel_totals(read.rows, read.quarantine, quarantine, duplicates, split.splits,
                                      label=cfg.schema.label, input_labels=input_labels)
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


def add_features(cfg: Config, splits: Dict[str, beam.PCollection], layout: Layout, shards: int,
                 raw: pa.Schema, spill: Optional[str]) -> List[Output]:
    """The transform stage for `splits` (whose columns are `raw`), and the transformed outputs to write."""
    feature_columns = tft_columns(cfg)
    tft_input = TftInput(feature_columns, {c: raw.field(c).type for c in _passthrough_columns(cfg)})
    transformed = splits | "Transform" >> AnalyzeAndTransform(
        preprocessing_fn(cfg), tft_input, temp_dir=layout.tmp, output_dir=layout.root, tf_compat_v1=cfg.tf_compat_v1,
        spill=spill)
    # the schema known from the traced graph, so an empty split still gets typed shards
    return [Output(layout.transformed(name), pcoll, shards, transformed.schema,
                   _tfrecords(cfg, layout, "transformed", name))
            for name, pcoll in transformed.splits.items()]
