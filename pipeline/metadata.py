"""ML Metadata: the record of every run, readable with the plain `ml_metadata` API.

Layout in the store:
- contexts: `pipeline` (config name) and `pipeline_run` (run id), every artifact and
  execution attributed/associated to both;
- executions, one per stage (`dataprep.ingest`, `dataprep.clean`, `dataprep.split`,
  `dataprep.transform`, `dataprep.write`), RUNNING → COMPLETE or FAILED, with INPUT and
  OUTPUT events;
- artifacts: `DataFile` per input file (uri, sha256, size, rows, source note), `RawData`
  (the ingested records), `CleanData`, `Quarantine`, `Duplicates`, `Examples` per split
  (`split`, `kind` raw|transformed), `TransformGraph`, `Schema`, `DataReport`; with labels,
  `LabelAgreement`, `LabelHistory` and `ReviewQueue` (outputs of the labels stage, whose
  inputs are the annotation files; a Label Studio export is the output of a
  `dataprep.label_studio` execution whose input is the review queue it answers); with
  TFRecords or statistics, TFX's `Examples` of all splits and `ExampleStatistics`
  (`pipeline/tfx_artifacts.py`).
Types use TFX's names where TFX has one and are registered with `can_add_fields`, so a
later version can add properties without breaking an older store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence
from urllib.parse import urlparse

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

STRING, INT, DOUBLE = pb.STRING, pb.INT, pb.DOUBLE

ARTIFACT_TYPES: Dict[str, Dict[str, int]] = {
    "DataFile": {"sha256": STRING, "size_bytes": INT, "rows": INT, "source": STRING, "format": STRING},
    "RawData": {"rows": INT},
    "CleanData": {"rows": INT},
    "Quarantine": {"rows": INT},
    "Duplicates": {"rows": INT},
    "Examples": {"span": INT, "version": INT, "split_names": STRING, "split": STRING, "kind": STRING,
                 "rows": INT},
    "TransformGraph": {},
    "ExampleStatistics": {"span": INT, "split_names": STRING},
    "Schema": {},
    "DataReport": {},
    "DataManifest": {"files": INT, "size_bytes": INT, "sha256": STRING, "source": STRING, "rows": INT},
    "LabelAgreement": {"hlp": DOUBLE, "fleiss_kappa": DOUBLE, "krippendorff_alpha": DOUBLE, "items": INT},
    "LabelHistory": {"rows": INT},                      # annotations/: every label read (pipeline/label_history.py)
    "ReviewQueue": {"queued": INT, "run_id": STRING},   # review/: the next labelling round's examples
}
STAGES = ("ingest", "clean", "labels", "split", "transform", "write")
EXECUTION_PROPS = {"config_hash": STRING, "code_version": STRING, "runner": STRING, "run_id": STRING,
                   "rows_in": INT, "rows_out": INT, "error": STRING}
RUN_PROPS = {"status": STRING, "config_hash": STRING, "config": STRING, "code_version": STRING,
             "runner": STRING, "options": STRING, "user": STRING, "started": STRING, "ended": STRING,
             "rows": STRING, "output": STRING, "error": STRING, "pipeline": STRING, "inputs_fingerprint": STRING,
             "quarantine_reasons": STRING, "guard": STRING, "host": STRING, "pid": INT, "heartbeat": STRING,
             "staging": STRING, "reuse_key": STRING, "code_fingerprint": STRING, "stack": STRING, "user_code": STRING,
             "gates": STRING}
PIPELINE_CONTEXT, RUN_CONTEXT = "pipeline", "pipeline_run"


class StoreError(RuntimeError):
    """The metadata store could not be opened or written."""


# ML Metadata's SQLite errors end with the statement that failed ("Error when executing query:
# file is not a database query:  CREATE TABLE IF NOT EXISTS `Type` (...)"): not for the user's one line
_SQL_TAIL = re.compile(r"\s+query:\s+(?:CREATE|SELECT|INSERT|UPDATE|DELETE|PRAGMA|ALTER|DROP|BEGIN|COMMIT|WITH)\b.*",
                       re.I | re.S)


def without_sql(text: str) -> str:
    """`text` without the SQL statement ML Metadata appends to a SQLite error."""
    return _SQL_TAIL.sub("", text)


def store_message(e: BaseException) -> str:
    """A store error's first line without the SQL statement ML Metadata appends to it."""
    text = str(e).strip() or type(e).__name__
    text = without_sql(text).splitlines()[0].strip()
    return re.sub(r"^Error when executing query:\s*", "", text)


@dataclass(frozen=True)
class StoreLocation:
    """Where the store is: a SQLite file, or a MySQL/MariaDB database."""

    sqlite: Optional[str] = None
    mysql_host: Optional[str] = None
    mysql_port: int = 3306
    mysql_database: Optional[str] = None
    mysql_user: Optional[str] = None
    mysql_password_env: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "StoreLocation":
        """A path (SQLite) or `mysql://user@host:port/db` (password from $DATAPREP_MYSQL_PASSWORD)."""
        if text.startswith("mysql://"):
            u = urlparse(text)
            if u.password:
                raise ValueError("--store: put the MySQL password in $DATAPREP_MYSQL_PASSWORD, not the URL")
            return cls(mysql_host=u.hostname or "127.0.0.1", mysql_port=u.port or 3306,
                       mysql_database=u.path.lstrip("/"), mysql_user=u.username or "root",
                       mysql_password_env="DATAPREP_MYSQL_PASSWORD")
        if text.startswith("sqlite://"):
            text = text[len("sqlite://"):]
        return cls(sqlite=os.path.abspath(text))

    def describe(self) -> str:
        """A printable name with no secret in it."""
        if self.sqlite:
            return self.sqlite
        return f"mysql://{self.mysql_user}@{self.mysql_host}:{self.mysql_port}/{self.mysql_database}"

    def connection_config(self) -> pb.ConnectionConfig:
        config = pb.ConnectionConfig()
        if self.sqlite:
            os.makedirs(os.path.dirname(self.sqlite) or ".", exist_ok=True)
            config.sqlite.filename_uri = self.sqlite
            config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        else:
            config.mysql.host = self.mysql_host
            config.mysql.port = self.mysql_port
            config.mysql.database = self.mysql_database
            config.mysql.user = self.mysql_user
            if self.mysql_password_env:
                config.mysql.password = os.environ.get(self.mysql_password_env, "")
        return config


_BUSY = ("database is locked", "database table is locked", "Deadlock found", "Lock wait timeout")


class _RetryingStore:
    """A MetadataStore whose calls are retried while another writer holds the database
    (two runs sharing one SQLite file, or MySQL lock waits); every other error passes."""

    def __init__(self, store: metadata_store.MetadataStore, attempts: int = 20, first_wait: float = 0.05):
        self._store = store
        self._attempts = attempts
        self._first_wait = first_wait

    def __getattr__(self, name: str):
        method = getattr(self._store, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            import time

            wait = self._first_wait
            for attempt in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except (mlmd_errors.AbortedError, mlmd_errors.InternalError, mlmd_errors.UnavailableError) as e:
                    if attempt == self._attempts - 1 or not any(b in str(e) for b in _BUSY):
                        raise
                    time.sleep(wait)
                    wait = min(wait * 2, 2.0)

        return call


def open_store(location: StoreLocation) -> metadata_store.MetadataStore:
    """Connects to (and if needed creates) the store; calls are retried while the
    database is locked by another writer.

    Raises:
      StoreError: the store cannot be opened.
    """
    try:
        return _RetryingStore(metadata_store.MetadataStore(location.connection_config()))
    except (mlmd_errors.StatusError, RuntimeError, OSError) as e:
        hint = " (not an ML Metadata SQLite store?)" if location.sqlite and "not a database" in str(e) else ""
        raise StoreError(f"metadata store {location.describe()}: {store_message(e)}{hint}") from e


def _set(props, key: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        props[key].string_value = str(value).lower()
    elif isinstance(value, int):
        props[key].int_value = value
    elif isinstance(value, float):
        props[key].double_value = value
    else:
        props[key].string_value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Registry:
    """Registers (once per store) and caches the type ids."""

    def __init__(self, store: metadata_store.MetadataStore):
        self.store = store
        self._artifact: Dict[str, int] = {}
        self._execution: Dict[str, int] = {}
        self._context: Dict[str, int] = {}

    def artifact_type(self, name: str) -> int:
        if name not in self._artifact:
            t = pb.ArtifactType(name=name)
            for k, v in ARTIFACT_TYPES[name].items():
                t.properties[k] = v
            self._artifact[name] = self.store.put_artifact_type(t, can_add_fields=True, can_omit_fields=True)
        return self._artifact[name]

    def execution_type(self, stage: str) -> int:
        name = f"dataprep.{stage}"
        if name not in self._execution:
            t = pb.ExecutionType(name=name)
            for k, v in EXECUTION_PROPS.items():
                t.properties[k] = v
            self._execution[name] = self.store.put_execution_type(t, can_add_fields=True, can_omit_fields=True)
        return self._execution[name]

    def context_type(self, name: str) -> int:
        if name not in self._context:
            t = pb.ContextType(name=name)
            if name == RUN_CONTEXT:
                for k, v in RUN_PROPS.items():
                    t.properties[k] = v
            self._context[name] = self.store.put_context_type(t, can_add_fields=True, can_omit_fields=True)
        return self._context[name]


class RunRecorder:
    """Writes one run into the store, from the launcher only (never from workers)."""

    def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str, run_id: str,
                 common: Dict[str, object]):
        self.store = store
        # the run context is read, changed and written back by this thread and the heartbeat's
        self.lock = threading.Lock()
        self.pending: List[pb.Artifact] = []
        self.types = Registry(store)
        self.run_id = run_id
        self.common = common
        self.pipeline_ctx = self._context(PIPELINE_CONTEXT, pipeline_name)
        self.run_ctx = self._context(RUN_CONTEXT, run_id)
        self.store.put_parent_contexts([pb.ParentContext(child_id=self.run_ctx.id, parent_id=self.pipeline_ctx.id)])
        self.executions: Dict[str, pb.Execution] = {}

    def _context(self, type_name: str, name: str) -> pb.Context:
        type_id = self.types.context_type(type_name)
        found = self.store.get_context_by_type_and_name(type_name, name)
        if found is not None:
            return found
        ctx = pb.Context(type_id=type_id, name=name)
        try:
            [ctx.id] = self.store.put_contexts([ctx])
        except mlmd_errors.AlreadyExistsError:  # a parallel run created it first
            return self.store.get_context_by_type_and_name(type_name, name)
        return ctx

    def _contexts(self) -> List[pb.Context]:
        # put_execution writes back the contexts it is given: pass the stored ones, or
        # properties set since they were created would be wiped.
        return list(self.store.get_contexts_by_id([self.pipeline_ctx.id, self.run_ctx.id]))

    def update_run(self, **props) -> None:
        with self.lock:
            _update_context(self.store, self.run_ctx.id, props)

    def artifact(self, type_name: str, uri: str, props: Optional[Dict] = None,
                 custom: Optional[Dict] = None, name: Optional[str] = None, pending: bool = False) -> pb.Artifact:
        """A LIVE artifact in both contexts (PENDING with `pending`, until `publish_pending`);
        `name` (unique per type within the run) defaults to the uri."""
        state = pb.Artifact.PENDING if pending else pb.Artifact.LIVE
        a = pb.Artifact(type_id=self.types.artifact_type(type_name), uri=uri, state=state)
        a.name = f"{self.run_id}:{name or uri}"
        for k, v in (props or {}).items():
            _set(a.properties, k, v)
        for k, v in (custom or {}).items():
            _set(a.custom_properties, k, v)
        [a.id] = self.store.put_artifacts([a])
        self.store.put_attributions_and_associations(
            [pb.Attribution(artifact_id=a.id, context_id=c.id) for c in (self.pipeline_ctx, self.run_ctx)], [])
        if pending:
            self.pending.append(a)
        return a

    def pending_artifact(self, type_name: str, uri: str, props: Optional[Dict] = None,
                         custom: Optional[Dict] = None, name: Optional[str] = None) -> pb.Artifact:
        """An output whose files are not published yet: PENDING until `publish_pending`."""
        return self.artifact(type_name, uri, props, custom, name, pending=True)

    def publish_pending(self) -> None:
        """The PENDING outputs LIVE: their files are in place (TFX's PENDING → LIVE)."""
        self._set_pending_state(pb.Artifact.LIVE)

    def abandon_pending(self) -> None:
        """The PENDING outputs ABANDONED: the run ended before publishing them."""
        self._set_pending_state(pb.Artifact.ABANDONED)

    def _set_pending_state(self, state) -> None:
        if not self.pending:
            return
        current = list(self.store.get_artifacts_by_id([a.id for a in self.pending]))
        for a in current:
            a.state = state
        self.store.put_artifacts(current)
        self.pending = []

    def start_stage(self, stage: str, inputs: Sequence[pb.Artifact] = ()) -> pb.Execution:
        """A RUNNING execution; inputs known at start get their INPUT events now, so a
        failed stage still shows what it read."""
        e = pb.Execution(type_id=self.types.execution_type(stage), last_known_state=pb.Execution.RUNNING)
        e.name = f"{self.run_id}:{stage}"
        for k, v in self.common.items():
            _set(e.properties, k, v)
        with self.lock:
            e.id, _, _ = self.store.put_execution(
                e, [(a, pb.Event(type=pb.Event.INPUT)) for a in inputs], self._contexts())
        self.executions[stage] = e
        return e

    def finish_stage(self, stage: str, outputs: Sequence[pb.Artifact], inputs: Sequence[pb.Artifact] = (),
                     props: Optional[Dict] = None, custom: Optional[Dict] = None) -> None:
        """COMPLETE, with OUTPUT events (and INPUT events for inputs made during the run);
        `custom` goes to the execution's custom properties (a stage's own settings and counts)."""
        e = self.executions[stage]
        e.last_known_state = pb.Execution.COMPLETE
        for k, v in (props or {}).items():
            _set(e.properties, k, v)
        for k, v in (custom or {}).items():
            _set(e.custom_properties, k, v)
        events = [(a, pb.Event(type=pb.Event.INPUT)) for a in inputs]
        events += [(a, pb.Event(type=pb.Event.OUTPUT)) for a in outputs]
        with self.lock:
            self.store.put_execution(e, events, self._contexts())

    def cancel_open_stages(self, message: str) -> None:
        self._close_open_stages(pb.Execution.CANCELED, message)

    def fail_open_stages(self, message: str) -> None:
        self._close_open_stages(pb.Execution.FAILED, message)

    def _close_open_stages(self, state, message: str) -> None:
        for e in self.executions.values():
            current = self.store.get_executions_by_id([e.id])[0]
            if current.last_known_state == pb.Execution.RUNNING:
                current.last_known_state = state
                _set(current.properties, "error", message[:4000])
                self.store.put_executions([current])


def _update_context(store, context_id: int, props: Dict) -> None:
    ctx = store.get_contexts_by_id([context_id])[0]
    for k, v in props.items():
        _set(ctx.properties, k, v)
    store.put_contexts([ctx])


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


HEARTBEAT_SECONDS = float(os.environ.get("DATAPREP_HEARTBEAT_SECONDS", "30"))
# A run on another host is abandoned when its heartbeat is this old (on this host, its pid tells).
STALE_SECONDS = max(10 * HEARTBEAT_SECONDS, 300.0)


class Heartbeat:
    """While a run is open, its context's `heartbeat` is refreshed every `interval` seconds,
    from a thread with its own store connection, so a run whose launcher died (kill -9, a
    lost machine) can be told from one still running (`is_abandoned`)."""

    def __init__(self, location: "StoreLocation", recorder: RunRecorder, interval: float = HEARTBEAT_SECONDS):
        self._location = location
        self._recorder = recorder
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dataprep-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops (and waits for) the thread: afterwards only the caller writes the run."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        store = None
        while not self._stop.wait(self._interval):
            try:
                store = store or open_store(self._location)
                with self._recorder.lock:
                    if self._stop.is_set():
                        return
                    _update_context(store, self._recorder.run_ctx.id, {"heartbeat": _now_iso()})
            except Exception:  # a missed beat is not a failed run; the next one retries
                store = None


def run_identity() -> Dict[str, object]:
    """Who is running a run: recorded on its context so that others can tell if it died."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": _now_iso()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    try:   # a zombie (killed, not yet reaped) is dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def is_abandoned(props: Dict[str, object], now: Optional[dt.datetime] = None) -> bool:
    """A RUNNING run whose launcher is gone: on this host, its pid is not alive; elsewhere
    (or without a pid), its heartbeat is older than STALE_SECONDS."""
    if props.get("status") != "RUNNING":
        return False
    if props.get("host") == socket.gethostname() and props.get("pid"):
        return not _pid_alive(int(props["pid"]))
    beat = props.get("heartbeat") or props.get("started")
    if not beat:
        return False
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now - dt.datetime.fromisoformat(str(beat))).total_seconds() > STALE_SECONDS


def mark_abandoned(store, run_ctx: pb.Context, message: str) -> None:
    """Closes a run whose launcher died: the run ABANDONED, its RUNNING stages CANCELED,
    its PENDING outputs ABANDONED."""
    executions = [e for e in store.get_executions_by_context(run_ctx.id)
                  if e.last_known_state == pb.Execution.RUNNING]
    for e in executions:
        e.last_known_state = pb.Execution.CANCELED
        _set(e.properties, "error", message)
    if executions:
        store.put_executions(executions)
    pending = [a for a in store.get_artifacts_by_context(run_ctx.id) if a.state == pb.Artifact.PENDING]
    for a in pending:
        a.state = pb.Artifact.ABANDONED
    if pending:
        store.put_artifacts(pending)
    _update_context(store, run_ctx.id, {"status": "ABANDONED", "error": message, "ended": _now_iso()})
