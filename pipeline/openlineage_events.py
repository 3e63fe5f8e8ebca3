"""The OpenLineage events of a run, built by pure functions of what the run knows
(`RunFacts`, `OutputFacts`, report.json); `pipeline/openlineage.py` gathers the facts and
sends them. See that module for what is sent when.

Datasets are named as the spec's Naming.md says: a local file or folder is namespace `file`,
name its absolute path; `gs://bucket/key` is namespace `gs://bucket`, name `key` (the
client's own `naming` classes). Inputs carry `schema`, `dataSource`, the `source:` note as
`documentation` and, at COMPLETE, `dataQualityMetrics` (rows, missing values per column).
Outputs (each split raw and transformed, quarantine, duplicates, the review queue, the
annotation faults) carry `schema` and `outputStatistics` (rows, bytes, files); the
transformed splits `columnLineage`. What OpenLineage has no facet for (the funnel,
quarantine by reason, HLP, the MLMD run context id) is the run's `dataprep` facet, whose
JSON Schema is `pipeline/openlineage_facet.json`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (RunFacet, column_lineage_dataset, data_quality_metrics_input_dataset,
                                         datasource_dataset, documentation_dataset, error_message_run,
                                         job_type_job, output_statistics_output_dataset, parent_run,
                                         processing_engine_run, schema_dataset, set_producer)
from openlineage.client.naming import dataset as naming
from openlineage.client.uuid import generate_static_uuid

# dataprep has no public home to point at yet: URNs name the producer and the facet's schema
# without pretending to be fetchable URLs (the spec asks for URIs). One place to change them.
PRODUCER = "urn:beam-dataprep"
FACET_SCHEMA_ID = "urn:beam-dataprep:openlineage:facets:1-0-0:DataprepRunFacet.json"
FACET_SCHEMA_URL = FACET_SCHEMA_ID + "#/$defs/DataprepRunFacet"
INTEGRATION = "DATAPREP"
set_producer(PRODUCER)   # the client's default `_producer` of every facet built here (its API for integrations)


# ---- what the run knows ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobRef:
    """A job's run: `namespace/job/runId`, the format of Airflow's `lineage_parent_id` macro."""

    namespace: str
    name: str
    run_id: str

    @classmethod
    def parse(cls, text: str) -> "JobRef":
        """`namespace/job/runId` → JobRef; the job name may hold `/` (the namespace may not).

        Raises:
          ValueError: not three parts, or a runId that is not a UUID.
        """
        import uuid

        namespace, _, rest = text.strip().partition("/")
        name, _, run_id = rest.rpartition("/")
        if not namespace or not name or not run_id:
            raise ValueError(f"expected namespace/job/runId, got {text!r}")
        try:
            uuid.UUID(run_id)
        except ValueError:
            raise ValueError(f"runId {run_id!r} is not a UUID") from None
        return cls(namespace, name, run_id)


@dataclass(frozen=True)
class InputFacts:
    """One input file: where, its kind (`data` or `annotations`), the columns read with their
    types, the config's `source:` note, format and size."""

    uri: str
    kind: str
    columns: Tuple[Tuple[str, str], ...]
    source: Optional[str]
    format: str
    size: int


@dataclass(frozen=True)
class OutputFacts:
    """One output folder: its role (`raw`, `transformed`, `quarantine`, `duplicates`, `review`,
    `annotation_faults`), split, the stage that made it, rows, bytes, files and Arrow schema
    (name, type) as written."""

    uri: str
    role: str
    stage: str
    rows: Optional[int]
    size: int
    files: int
    columns: Tuple[Tuple[str, str], ...] = ()
    split: Optional[str] = None


@dataclass(frozen=True)
class ColumnSource:
    """One input column of an output column: `identity` (copied), `direct` (its value in the
    same row, transformed) or `analyzed` (read over the train split by a TFT analyzer)."""

    column: str
    kind: str
    description: str = ""


@dataclass(frozen=True)
class RunFacts:
    """What the run knows when it starts: its job, ids, parent, inputs and settings."""

    namespace: str
    job: str
    run_id: str                      # dataprep's run id
    started: dt.datetime
    inputs: Tuple[InputFacts, ...]
    config_hash: str
    code_version: str
    runner: str
    store: str
    output: str                      # OUT/<run_id>
    parent: Optional[JobRef] = None
    root: Optional[JobRef] = None
    mlmd_run_context_id: Optional[int] = None
    stages: Tuple[str, ...] = ()
    engine_version: str = ""
    package_version: str = ""

    @property
    def ol_run_id(self) -> str:
        """The OpenLineage runId: a UUIDv7 of the start time and dataprep's run id (the same
        for every event of the run, and computable from the store)."""
        return str(generate_static_uuid(self.started, self.run_id.encode()))

    def stage_run_id(self, stage: str) -> str:
        return str(generate_static_uuid(self.started, f"{self.run_id}/{stage}".encode()))

    def stage_job(self, stage: str) -> str:
        return f"{self.job}.{stage}"


# ---- the custom run facet -------------------------------------------------------------------


@attr.define
class DataprepRunFacet(RunFacet):
    """What OpenLineage has no facet for: dataprep's run id, the MLMD run context, the config
    hash, and at the end the row funnel, quarantine by stage and reason, and HLP."""

    runId: str                                                         # noqa: N815
    pipeline: str
    configHash: str                                                    # noqa: N815
    codeVersion: str                                                   # noqa: N815
    runner: str
    store: str
    output: str
    mlmdRunContextId: Optional[int] = attr.field(default=None)         # noqa: N815
    rows: Optional[Dict[str, int]] = attr.field(default=None)
    quarantine: Optional[Dict[str, Dict[str, int]]] = attr.field(default=None)
    hlp: Optional[float] = attr.field(default=None)
    fleissKappa: Optional[float] = attr.field(default=None)            # noqa: N815
    status: Optional[str] = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


# ---- naming ---------------------------------------------------------------------------------


def dataset_id(uri: str) -> Tuple[str, str]:
    """(namespace, name) of a file or folder, as the spec's Naming.md has it (credentials in a
    URL are never part of either)."""
    u = urlparse(uri)
    scheme = u.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        path = u.path if scheme == "file" else uri
        ds = naming.LocalFileSystem(path=os.path.abspath(path).rstrip("/") or "/")
    elif scheme == "gs":
        ds = naming.GCS(bucket_name=u.hostname or "", object_key=u.path.lstrip("/").rstrip("/") or "/")
    elif scheme in ("s3", "s3a", "s3n"):
        ds = naming.S3(bucket_name=u.hostname or "", object_key=u.path.lstrip("/").rstrip("/") or "/")
    elif scheme == "hdfs":
        ds = naming.HDFS(namenode_host=u.hostname or "", namenode_port=str(u.port or 8020), path=u.path or "/")
    else:
        host = u.hostname or ""
        return f"{scheme}://{host}{f':{u.port}' if u.port else ''}", u.path or "/"
    return ds.get_namespace(), ds.get_name()


def _datasource(namespace: str) -> datasource_dataset.DatasourceDatasetFacet:
    return datasource_dataset.DatasourceDatasetFacet(name=namespace, uri="file:///" if namespace == "file"
                                                     else namespace)


def _schema(columns: Sequence[Tuple[str, str]]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(fields=[
        schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, ordinal_position=i)
        for i, (name, kind) in enumerate(columns, 1)])


# ---- datasets -------------------------------------------------------------------------------


def input_dataset(f: InputFacts, rows: Optional[int] = None, nulls: Optional[Mapping[str, int]] = None,
                  with_metrics: bool = False) -> InputDataset:
    """An input file as an OpenLineage input: schema, dataSource, the `source:` note; with
    `with_metrics`, `dataQualityMetrics` (rows read, missing values per column when known)."""
    namespace, name = dataset_id(f.uri)
    facets: Dict[str, object] = {"schema": _schema(f.columns), "dataSource": _datasource(namespace)}
    if f.source:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(description=f.source)
    input_facets = {}
    if with_metrics:
        metrics = {}
        if nulls is not None:
            metrics = {c: data_quality_metrics_input_dataset.ColumnMetrics(nullCount=int(nulls.get(c, 0)))
                       for c, _ in f.columns}
        input_facets["dataQualityMetrics"] = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            columnMetrics=metrics, rowCount=rows, bytes=f.size, fileCount=1)
    return InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=input_facets)


def output_dataset(o: OutputFacts, lineage: Optional[Mapping[str, Sequence[ColumnSource]]] = None,
                   raw: Optional[Mapping[str, str]] = None) -> OutputDataset:
    """An output folder as an OpenLineage output: schema, dataSource, outputStatistics; with
    `lineage` (output column → its sources) and `raw` (split → raw split folder), columnLineage:
    a `direct` or `identity` source is the same split's raw column, an `analyzed` one train's."""
    namespace, name = dataset_id(o.uri)
    facets: Dict[str, object] = {"dataSource": _datasource(namespace)}
    if o.columns:
        facets["schema"] = _schema(o.columns)
    if lineage and raw and o.split in raw:
        facets["columnLineage"] = _column_lineage(o, lineage, raw)
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=o.rows, size=o.size,
                                                                               fileCount=o.files)
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets={"outputStatistics": stats})


_TRANSFORMATIONS = {"identity": ("DIRECT", "IDENTITY"), "direct": ("DIRECT", "TRANSFORMATION"),
                    "analyzed": ("DIRECT", "AGGREGATION")}


def _column_lineage(o: OutputFacts, lineage: Mapping[str, Sequence[ColumnSource]],
                    raw: Mapping[str, str]) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    cl = column_lineage_dataset
    written = {name for name, _ in o.columns}
    fields = {}
    for out_col in sorted(c for c in lineage if c in written or not written):
        refs: Dict[Tuple[str, str, str], List] = {}
        for src in lineage[out_col]:
            split = "train" if src.kind == "analyzed" else o.split
            if split not in raw:
                continue
            namespace, name = dataset_id(raw[split])
            kind, subtype = _TRANSFORMATIONS[src.kind]
            refs.setdefault((namespace, name, src.column), []).append(
                cl.Transformation(type=kind, subtype=subtype, description=src.description or None,
                                  masking=False))
        if refs:
            fields[out_col] = cl.Fields(inputFields=[
                cl.InputField(namespace=ns, name=name, field=col, transformations=ts)
                for (ns, name, col), ts in sorted(refs.items())])
    return cl.ColumnLineageDatasetFacet(fields=fields)


# ---- events ---------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _parent_facet(parent: JobRef, root: Optional[JobRef]) -> parent_run.ParentRunFacet:
    pr = parent_run
    return pr.ParentRunFacet(
        run=pr.Run(runId=parent.run_id), job=pr.Job(namespace=parent.namespace, name=parent.name),
        root=pr.Root(run=pr.RootRun(runId=root.run_id), job=pr.RootJob(namespace=root.namespace, name=root.name))
        if root else None, producer=PRODUCER)


def _job(namespace: str, name: str, job_type: str) -> Job:
    return Job(namespace=namespace, name=name, facets={"jobType": job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration=INTEGRATION, jobType=job_type, producer=PRODUCER)})


def _dataprep_facet(facts: RunFacts, report: Optional[Mapping] = None,
                    status: Optional[str] = None) -> DataprepRunFacet:
    extra: Dict[str, object] = {}
    if report is not None:
        overall = (report.get("labels") or {}).get("overall") or {}
        extra = {"rows": dict(report.get("rows", {})), "quarantine": report.get("quarantine_reasons", {}),
                 "hlp": (overall.get("hlp") or {}).get("value"),
                 "fleissKappa": (overall.get("fleiss_kappa") or {}).get("value")}
    return DataprepRunFacet(runId=facts.run_id, pipeline=facts.job, configHash=facts.config_hash,
                            codeVersion=facts.code_version, runner=facts.runner, store=facts.store,
                            output=facts.output, mlmdRunContextId=facts.mlmd_run_context_id, status=status,
                            producer=PRODUCER, **extra)


def _run_facets(facts: RunFacts, report: Optional[Mapping] = None, status: Optional[str] = None,
                error: Optional[str] = None) -> Dict[str, object]:
    facets: Dict[str, object] = {}
    if facts.parent:
        facets["parent"] = _parent_facet(facts.parent, facts.root)
    facets["processing_engine"] = processing_engine_run.ProcessingEngineRunFacet(
        version=facts.engine_version or "unknown", name="Apache Beam",
        openlineageAdapterVersion=facts.package_version or "unknown", producer=PRODUCER)
    facets["dataprep"] = _dataprep_facet(facts, report, status)
    if error is not None:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="PYTHON",
                                                                        producer=PRODUCER)
    return facets


def run_event(facts: RunFacts, state: RunState, inputs: Sequence[InputDataset] = (),
              outputs: Sequence[OutputDataset] = (), report: Optional[Mapping] = None,
              error: Optional[str] = None, status: Optional[str] = None) -> RunEvent:
    """An event of the run's own job (`namespace`, the config's name)."""
    return RunEvent(eventType=state, eventTime=_now(), producer=PRODUCER,
                    run=Run(runId=facts.ol_run_id, facets=_run_facets(facts, report, status, error)),
                    job=_job(facts.namespace, facts.job, "JOB"), inputs=list(inputs), outputs=list(outputs))


def stage_event(facts: RunFacts, stage: str, state: RunState, inputs: Sequence[InputDataset] = (),
                outputs: Sequence[OutputDataset] = (), error: Optional[str] = None) -> RunEvent:
    """An event of one stage, the child job `<name>.<stage>`: its parent is the run, its root
    the run's root (`OPENLINEAGE_ROOT_PARENT_ID`), else the run itself when it has no parent."""
    run_ref = JobRef(facts.namespace, facts.job, facts.ol_run_id)
    root = facts.root if facts.root else (None if facts.parent else run_ref)
    facets: Dict[str, object] = {"parent": _parent_facet(run_ref, root)}
    if error is not None:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(message=error, programmingLanguage="PYTHON",
                                                                        producer=PRODUCER)
    return RunEvent(eventType=state, eventTime=_now(), producer=PRODUCER,
                    run=Run(runId=facts.stage_run_id(stage), facets=facets),
                    job=_job(facts.namespace, facts.stage_job(stage), "TASK"), inputs=list(inputs),
                    outputs=list(outputs))


def start_events(facts: RunFacts) -> List[RunEvent]:
    """The run's START, with its input files."""
    return [run_event(facts, RunState.START, inputs=[input_dataset(f) for f in facts.inputs])]


def stage_start_events(facts: RunFacts) -> List[RunEvent]:
    """One START per stage of the plan; ingest reads the data files, labels the annotation files."""
    return [stage_event(facts, stage, RunState.START, inputs=[input_dataset(f) for f in _stage_inputs(facts, stage)])
            for stage in facts.stages]


def _stage_inputs(facts: RunFacts, stage: str) -> List[InputFacts]:
    if stage == "ingest":
        return [f for f in facts.inputs if f.kind == "data"]
    if stage == "labels":
        return [f for f in facts.inputs if f.kind != "data"]
    return []


def complete_events(facts: RunFacts, report: Mapping, outputs: Sequence[OutputFacts],
                    lineage: Optional[Mapping[str, Sequence[ColumnSource]]] = None) -> List[RunEvent]:
    """COMPLETE for every stage (its inputs and outputs), then for the run: every input with its
    quality metrics, every output with its statistics, columnLineage on the transformed splits,
    and the `dataprep` facet with the funnel, quarantine reasons and HLP."""
    rows_per_file = report.get("inputs", {})
    nulls = report.get("input_nulls", {})
    annotations = [f for f in facts.inputs if f.kind != "data"]
    annotation_rows = _annotation_rows(report) if len(annotations) == 1 else None

    def inp(f: InputFacts) -> InputDataset:
        if f.kind == "data":
            return input_dataset(f, rows_per_file.get(f.uri), nulls.get(f.uri, {}), with_metrics=True)
        return input_dataset(f, annotation_rows, None, with_metrics=True)

    raw = {o.split: o.uri for o in outputs if o.role == "raw" and o.split}

    def out(o: OutputFacts) -> OutputDataset:
        return output_dataset(o, lineage if o.role == "transformed" else None, raw)

    events = []
    for stage in facts.stages:
        stage_inputs = [inp(f) for f in _stage_inputs(facts, stage)]
        if stage == "transform":   # TFT reads the raw splits (train for the analysis, each to transform)
            stage_inputs += [InputDataset(*dataset_id(o.uri), facets={"schema": _schema(o.columns)}
                                          if o.columns else {}) for o in outputs if o.role == "raw"]
        events.append(stage_event(facts, stage, RunState.COMPLETE, stage_inputs,
                                  [out(o) for o in outputs if o.stage == stage]))
    events.append(run_event(facts, RunState.COMPLETE, [inp(f) for f in facts.inputs], [out(o) for o in outputs],
                            report=report, status="COMPLETE"))
    return events


def _annotation_rows(report: Mapping) -> Optional[int]:
    a = ((report.get("labels") or {}).get("annotations")) or {}
    if "annotations" not in a:
        return None
    return int(a.get("annotations", 0)) + int(a.get("faults", 0) or 0)


def closed_events(facts: RunFacts, status: str, message: str) -> List[RunEvent]:
    """FAIL (status FAILED) or ABORT (CANCELED) for every started stage, then the run."""
    state = RunState.ABORT if status == "CANCELED" else RunState.FAIL
    events = [stage_event(facts, stage, state, error=message) for stage in facts.stages]
    events.append(run_event(facts, state, [input_dataset(f) for f in facts.inputs], error=message, status=status))
    return events


# ---- column lineage of the transformed splits -----------------------------------------------

_ANALYZED = {"zscore": "mean and standard deviation", "log_zscore": "mean and standard deviation of log1p",
             "minmax": "minimum and maximum", "bucketize": "quantile boundaries", "vocabulary": "vocabulary",
             "tokens_vocabulary": "vocabulary of the tokens", "tfidf": "vocabulary and document frequencies"}


def declarative_lineage(specs) -> Dict[str, List[ColumnSource]]:
    """`features:` entries (`FeatureSpec`s): each output (`<column>_xf`, tfidf's `_ids` and
    `_weights`) from its column, transformed row by row, and, for a transform with analyzers,
    from train's values of that column (its statistics; a mean fill counts as well)."""
    out: Dict[str, List[ColumnSource]] = {}
    for spec in specs:
        analyzed = _ANALYZED.get(spec.kind)
        if spec.fill in ("mean", "most_frequent") and not analyzed:
            analyzed = f"{spec.fill} fill"
        for name in spec.output_names:
            sources = [ColumnSource(spec.column, "direct", spec.kind)]
            if analyzed:
                sources.append(ColumnSource(spec.column, "analyzed", f"{spec.kind}: {analyzed} analysed on train"))
            out[name] = sources
    return out


def traced_lineage(sources: Mapping[str, object]) -> Dict[str, List[ColumnSource]]:
    """A preprocessing_fn's outputs from `transforms.features.lineage.output_sources`."""
    out: Dict[str, List[ColumnSource]] = {}
    for name, s in sources.items():
        out[name] = ([ColumnSource(c, "direct", "preprocessing_fn") for c in sorted(s.direct)]
                     + [ColumnSource(c, "analyzed", "preprocessing_fn: TFT analyzer on train")
                        for c in sorted(s.analyzed)])
    return out


def passthrough_lineage(columns: Sequence[str]) -> Dict[str, List[ColumnSource]]:
    """Columns TFT carries through untouched (label, id, metadata, bookkeeping)."""
    return {c: [ColumnSource(c, "identity")] for c in columns}


