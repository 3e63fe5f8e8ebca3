"""OpenLineage events from every run, for the org's data catalog (Marquez, DataHub, OpenMetadata,
Dataplex, Atlan: all read OpenLineage), sent by the launching process.

When the user has configured the OpenLineage client the standard way (`openlineage.yml` in
the working folder or `~/.openlineage/`, `OPENLINEAGE_CONFIG`, `OPENLINEAGE_URL`,
`OPENLINEAGE__TRANSPORT__*`), a run sends, for its job (namespace `$OPENLINEAGE_NAMESPACE` or
`dataprep`, name = the config's `name`), one START when it is recorded RUNNING and one
COMPLETE after publishing, or FAIL (with `errorMessage`) / ABORT (canceled) when it is
closed FAILED / CANCELED. Each stage (ingest, clean, labels, split, transform, write) is a
child job `<name>.<stage>` with a `parent` facet naming the run, START once the job is
built and COMPLETE / FAIL / ABORT with the run. `OPENLINEAGE_PARENT_ID=namespace/job/runId`
(Airflow's `lineage_parent_id` macro) becomes the run's own `parent` facet, and
`OPENLINEAGE_ROOT_PARENT_ID` (`lineage_root_parent_id`) its root. With no transport
configured, or `OPENLINEAGE_DISABLED=true`, nothing is sent, nothing is printed, and the
client is not even imported.

The events themselves are built in `pipeline/openlineage_events.py`; this module gathers
the facts (the inputs, the outputs' files, the transformed columns' sources) and sends them
through openlineage-python's client. It never fails a run: a failure to send is one warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

log = logging.getLogger("dataprep")

NAMESPACE_ENV, DEFAULT_NAMESPACE = "OPENLINEAGE_NAMESPACE", "dataprep"
PARENT_ENV, ROOT_ENV = "OPENLINEAGE_PARENT_ID", "OPENLINEAGE_ROOT_PARENT_ID"
DISABLED_ENV = "OPENLINEAGE_DISABLED"


def _config_files() -> List[str]:
    """Where openlineage-python 1.54 looks for its config file when `OPENLINEAGE_CONFIG` is not set."""
    return [os.path.join(os.getcwd(), "openlineage.yml"), os.path.join(os.path.expanduser("~/.openlineage"),
                                                                       "openlineage.yml")]


def transport_configured(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the user configured an OpenLineage transport, decided as openlineage-python
    1.54's `OpenLineageClient._resolve_transport` decides it: `OPENLINEAGE_DISABLED=true` is
    off; else a `transport` with a `type` in the client's merged config (the config file:
    `$OPENLINEAGE_CONFIG`, `./openlineage.yml`, `~/.openlineage/openlineage.yml`; the
    `OPENLINEAGE__...` variables), or `OPENLINEAGE_URL`. Where the client would fall back to
    printing events on the console (with a warning), this says False.

    Without any of those sources the client is not imported (a quarter of a second)."""
    env = os.environ if environ is None else environ
    if env.get(DISABLED_ENV, "").lower().strip() == "true":
        return False
    if env.get("OPENLINEAGE_URL"):
        return True
    if not (env.get("OPENLINEAGE_CONFIG") or any(k.startswith("OPENLINEAGE__") for k in env)
            or any(os.path.isfile(p) for p in _config_files())):
        return False
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.noop import NoopConfig, NoopTransport

    # An explicit transport is taken as it is (no fallback, no warning); `.config` is the
    # client's own merge of the config file and the OPENLINEAGE__ variables.
    probe = OpenLineageClient(transport=NoopTransport(NoopConfig()))
    return bool((probe.config.transport or {}).get("type"))


class RunLineage:
    """The OpenLineage events of one run, sent as it goes:
    `start` where the run is recorded RUNNING, `stages_started` where its stages are,
    `complete` after publishing, `closed` where it is recorded FAILED or CANCELED.

    Every method is a no-op when OpenLineage is not configured, and none raises: a failure to
    build or send is one warning on stderr, once, and the run goes on."""

    def __init__(self, facts=None, client=None):
        self.facts = facts
        self._client = client
        self._warned = False
        self._started = False   # no FAIL / ABORT for a run whose START was never sent

    @classmethod
    def for_run(cls, cfg, run_id: str, started: dt.datetime, files, runner: str, store: str, output: str,
                code_version: str, enabled: bool = True) -> "RunLineage":
        """The emitter of a run about to start; an inert one when `enabled` is False (a dry
        run) or no transport is configured. `files` are the run's matched `InputFile`s,
        `output` its final folder (OUT/<run_id>)."""
        if not enabled:
            return cls()
        try:
            if not transport_configured():
                return cls()
            from openlineage.client import OpenLineageClient

            facts = run_facts(cfg, run_id, started, files, runner, store, output, code_version)
            return cls(facts, OpenLineageClient())
        except Exception as e:   # a broken OpenLineage config must not stop the run
            inert = cls()
            inert._warn(e)
            return inert

    @property
    def active(self) -> bool:
        return self.facts is not None and self._client is not None

    def start(self, mlmd_run_context_id: Optional[int] = None) -> None:
        """The run's START (its inputs); `mlmd_run_context_id` goes into the `dataprep` facet."""
        if self.active:
            from pipeline.openlineage_events import start_events

            self.facts = replace(self.facts, mlmd_run_context_id=mlmd_run_context_id)
            self._started = True
            self._send(lambda: start_events(self.facts))

    def stages_started(self, stages: Sequence[str]) -> None:
        """A START per stage of the plan."""
        if self.active:
            from pipeline.openlineage_events import stage_start_events

            self.facts = replace(self.facts, stages=tuple(stages))
            self._send(lambda: stage_start_events(self.facts))

    def complete(self, cfg, report: Mapping, splits: Sequence[str]) -> None:
        """After publishing: COMPLETE per stage, then the run's, with the outputs read from the
        run's folder (sizes, files, Parquet footers) and the transformed columns' sources."""
        if self.active:
            from pipeline.openlineage_events import complete_events

            def events():
                outputs = observe_outputs(self.facts.output, report, splits, self.facts.stages)
                lineage = feature_lineage(cfg) if "transform" in self.facts.stages else None
                return complete_events(self.facts, report, outputs, lineage)

            self._send(events)

    def closed(self, status: str, message: str) -> None:
        """The run was closed FAILED (→ FAIL) or CANCELED (→ ABORT), with `message`."""
        if self.active and self._started:
            from pipeline.openlineage_events import closed_events

            self._send(lambda: closed_events(self.facts, status, message))

    def _send(self, make_events) -> None:
        try:
            for event in make_events():
                self._client.emit(event)
        except Exception as e:   # lineage is never a reason for a run to fail
            self._warn(e)

    def _warn(self, e: BaseException) -> None:
        if not self._warned:
            self._warned = True
            text = str(e).splitlines()[0] if str(e) else ""
            print(f"dataprep: warning: OpenLineage: events not sent ({type(e).__name__}: {text}); the run goes on",
                  file=sys.stderr, flush=True)
        log.debug("OpenLineage emission failed", exc_info=e)


# ---- the facts -------------------------------------------------------------------------------


def run_facts(cfg, run_id: str, started: dt.datetime, files, runner: str, store: str, output: str,
              code_version: str, environ: Optional[Mapping[str, str]] = None):
    """The `RunFacts` of a starting run, from its config and matched input files (`InputFile`s).
    A malformed `OPENLINEAGE_PARENT_ID` is a warning and no parent, not a failed run."""
    import apache_beam

    from pipeline.inputs import DATA, entry_of
    from pipeline.openlineage_events import InputFacts, JobRef, RunFacts
    from pipeline.version import package_version
    from runners import redact

    env = os.environ if environ is None else environ
    refs = {}
    for var in (PARENT_ENV, ROOT_ENV):
        if env.get(var):
            try:
                refs[var] = JobRef.parse(env[var])
            except ValueError as e:
                print(f"dataprep: warning: {var}: {e}; the run's events name no parent", file=sys.stderr, flush=True)
    inputs = []
    for f in files:
        entry = entry_of(cfg, f)
        if f.kind == DATA:
            columns = tuple(cfg.input_columns.items())
        else:
            columns = tuple((c, "string") for c in (entry.id, entry.annotator, entry.label))
        # as recorded in MLMD and report.json: credentials in a uri or a note redacted
        note = redact(entry.source) if entry.source else None
        inputs.append(InputFacts(uri=f.shown, kind=f.kind, columns=columns, source=note, format=entry.format,
                                 size=f.size))
    parent = refs.get(PARENT_ENV)
    return RunFacts(namespace=env.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE, job=cfg.name, run_id=run_id,
                    started=started, inputs=tuple(inputs), config_hash=cfg.config_hash, code_version=code_version,
                    runner=runner, store=store, output=output, parent=parent,
                    root=refs.get(ROOT_ENV) if parent else None, engine_version=apache_beam.__version__,
                    package_version=package_version())


def observe_outputs(root: str, report: Mapping, splits: Sequence[str], stages: Sequence[str]):
    """The published outputs under `root` (OUT/<run_id>) as `OutputFacts`: rows from the
    report, bytes and files from a listing, columns from the first Parquet file's footer."""
    from pipeline.layout import Layout
    from pipeline.openlineage_events import OutputFacts

    layout = Layout(root)
    rows = report.get("rows", {})
    found = [(layout.raw(s), "raw", "split", rows.get(s), s) for s in splits]
    if "transform" in stages:
        found += [(layout.transformed(s), "transformed", "transform", rows.get(s), s) for s in splits]
    found += [(layout.quarantine, "quarantine", "clean", rows.get("quarantined"), None),
              (layout.duplicates, "duplicates", "clean", rows.get("duplicates"), None)]
    if "review" in report:
        found.append((layout.review, "review", "labels", report["review"].get("queued"), None))
    annotations = ((report.get("labels") or {}).get("annotations")) or {}
    if "faults" in annotations:
        found.append((layout.annotation_faults, "annotation_faults", "labels", annotations.get("faults"), None))
    out = []
    for uri, role, stage, n, split in found:
        size, files, columns = _folder_facts(uri)
        if files:
            out.append(OutputFacts(uri=uri, role=role, stage=stage, rows=None if n is None else int(n), size=size,
                                   files=files, columns=columns, split=split))
    return out


def _folder_facts(folder: str) -> Tuple[int, int, Tuple[Tuple[str, str], ...]]:
    """(bytes, files, Parquet columns) of an output folder; (0, 0, ()) when it is not there."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    try:
        listed = sorted(FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list, key=lambda m: m.path)
    except Exception:   # Beam raises per filesystem when nothing matches: an output this run did not write
        return 0, 0, ()
    columns: Tuple[Tuple[str, str], ...] = ()
    parquet = [m.path for m in listed if m.path.endswith(".parquet")]
    if parquet:
        with FileSystems.open(parquet[0], compression_type="uncompressed") as fh:
            columns = tuple((f.name, str(f.type)) for f in pq.ParquetFile(fh).schema_arrow)
    return sum(m.size_in_bytes for m in listed), len(listed), columns


def feature_lineage(cfg) -> Dict[str, list]:
    """Each transformed column's sources (`ColumnSource`s): exact for `features:` entries; for
    a `preprocessing_fn`, read from the TFT graph it traces (`transforms/features/lineage.py`);
    the columns TFT passes through (label, id, metadata, bookkeeping), identity."""
    from pipeline.build import _passthrough_columns, feature_specs, tft_columns
    from pipeline.openlineage_events import declarative_lineage, passthrough_lineage, traced_lineage

    out = passthrough_lineage(_passthrough_columns(cfg))
    out.update(declarative_lineage(feature_specs(cfg)))
    if cfg.preprocessing_fn:
        from transforms.features.adapter import feature_spec_for
        from transforms.features.lineage import output_sources
        from transforms.user_code import load_function

        fn = load_function(cfg.preprocessing_fn, (cfg.base_dir,))
        out.update(traced_lineage(output_sources(fn, feature_spec_for(tft_columns(cfg)))))
    return out
