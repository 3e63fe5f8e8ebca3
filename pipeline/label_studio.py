"""`dataprep review push` and `review pull`: a run's review queue into Label Studio, and a
project's JSON export out of it, for `labels.annotations` (`format: label_studio`).

Plain HTTP to Label Studio's REST API with the standard library (urllib): no Label Studio
code in dataprep (its package pins Django, numpy, pandas and pyarrow versions that clash
with ours). The calls are those its API reference documents and that were tried against
label-studio 1.23.2: `GET/POST /api/projects/`, `PATCH /api/projects/{id}/`,
`POST /api/projects/{id}/import`, `GET /api/projects/{id}/export?exportType=JSON`, with
`Authorization: Token <token>` (the account's legacy API token) or, for a personal access
token, `Bearer` and the access token `POST /api/token/refresh` gives for it.

Errors are one line: `LabelStudioError`, whose `usage` says whether the user gave something
wrong (the token, the project, the run: exit 2) or the server failed (unreachable, 5xx: exit 1).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
TIMEOUT = 120.0     # seconds per request: an import or export of a big project takes a while


class LabelStudioError(RuntimeError):
    """A Label Studio request failed. `usage`: the user's input was wrong (exit 2), else the
    server could not do it (exit 1)."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def token_from_env(name: Optional[str]) -> str:
    """The API token from the environment variable `name` (default LABEL_STUDIO_API_KEY).

    Raises:
      LabelStudioError (usage): the variable is unset or empty.
    """
    name = name or TOKEN_ENV
    token = os.environ.get(name, "").strip()
    if not token:
        raise LabelStudioError(f"--token-env: set {name} to your Label Studio API token (Account & Settings → "
                               "Access Token)", usage=True)
    return token


def _detail(body: bytes) -> str:
    """The message of an error response: its `detail`, `validation_errors` or first line."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text.splitlines()[0][:300] if text else ""
    if isinstance(data, dict):
        for key in ("validation_errors", "detail", "error"):
            if data.get(key):
                return json.dumps(data[key]) if not isinstance(data[key], str) else data[key]
    return json.dumps(data)[:300]


class Client:
    """Label Studio's REST API at `url` (`http://host:port`, or under a path prefix)."""

    def __init__(self, url: str, token: str, timeout: float = TIMEOUT):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise LabelStudioError(f"--label-studio: expected the server's URL (http://host:port), got {url!r}",
                                   usage=True)
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._auth: Optional[str] = None     # the Authorization header, once known

    def _authorization(self) -> str:
        """`Token <token>` for the account's legacy API token; for a personal access token (a
        JWT refresh token, Label Studio's default since 1.14), `Bearer <access token>`, the
        access token asked for once with `POST /api/token/refresh`."""
        if self._auth is None:
            parts = self._token.split(".")
            if len(parts) == 3 and self._token.startswith("eyJ"):
                answer = self._send("POST", "/api/token/refresh", {"refresh": self._token}, auth=None)
                access = (answer or {}).get("access") if isinstance(answer, dict) else None
                if not access:
                    raise LabelStudioError(f"Label Studio at {self.url} gave no access token for the personal "
                                           "access token", usage=True)
                self._auth = f"Bearer {access}"
            else:
                self._auth = f"Token {self._token}"
        return self._auth

    def call(self, method: str, path: str, body: Any = None, query: Optional[Dict[str, Any]] = None,
             raw: bool = False) -> Any:
        """One request; the parsed JSON answer (the bytes with `raw`).

        Raises:
          LabelStudioError: unreachable, or an error status (401/403: the token, usage).
        """
        return self._send(method, path, body, query, raw, auth=self._authorization())

    def _send(self, method: str, path: str, body: Any = None, query: Optional[Dict[str, Any]] = None,
              raw: bool = False, auth: Optional[str] = None) -> Any:
        url = self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        if auth:
            req.add_header("Authorization", auth)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            detail = _detail(e.read() or b"")
            if e.code in (401, 403) or (e.code == 400 and path == "/api/token/refresh"):
                raise LabelStudioError(f"Label Studio at {self.url} refused the token ({e.code}"
                                       f"{': ' + detail if detail else ''})", usage=True) from None
            raise LabelStudioError(f"Label Studio at {self.url}: {method} {path} failed with {e.code}"
                                   f"{': ' + detail if detail else ''}", usage=e.code == 404) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {reason}") from None
        if raw:
            return payload
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise LabelStudioError(f"{self.url}{path}: the answer is not JSON (is this Label Studio's URL?)") from None

    # ---- projects -------------------------------------------------------------------------
    def projects(self) -> List[Dict[str, Any]]:
        """Every project the token sees (all pages)."""
        out: List[Dict[str, Any]] = []
        page = 1
        while True:
            answer = self.call("GET", "/api/projects/", query={"page": page, "page_size": 100})
            if isinstance(answer, list):   # an unpaginated answer
                return answer
            out += answer.get("results", [])
            if not answer.get("next"):
                return out
            page += 1

    def project(self, ref: str) -> Dict[str, Any]:
        """A project by id (digits) or by title.

        Raises:
          LabelStudioError (usage): no such project, or several with that title.
        """
        if ref.isdigit():
            try:
                return self.call("GET", f"/api/projects/{int(ref)}/")
            except LabelStudioError as e:
                if "failed with 404" in str(e):
                    raise LabelStudioError(f"PROJECT: Label Studio at {self.url} has no project {ref}",
                                           usage=True) from None
                raise
        found = [p for p in self.projects() if p.get("title") == ref]
        if not found:
            raise LabelStudioError(f"PROJECT: Label Studio at {self.url} has no project titled {ref!r}", usage=True)
        if len(found) > 1:
            raise LabelStudioError(f"PROJECT: several projects are titled {ref!r} (ids "
                                   f"{', '.join(str(p['id']) for p in found)}): give the id", usage=True)
        return found[0]

    def create_project(self, title: str, label_config: str, description: str = "") -> Dict[str, Any]:
        # show_collab_predictions false: the predictions (earlier labels) do not prelabel the
        # tasks; a reviewer sees them only when asking for them.
        return self.call("POST", "/api/projects/", {"title": title, "label_config": label_config,
                                                    "description": description, "show_collab_predictions": False})

    def set_label_config(self, project_id: int, label_config: str) -> Dict[str, Any]:
        return self.call("PATCH", f"/api/projects/{project_id}/", {"label_config": label_config})

    def import_tasks(self, project_id: int, tasks: List[Dict[str, Any]]) -> Dict[str, Any]:
        return self.call("POST", f"/api/projects/{project_id}/import", tasks)

    def export(self, project_id: int) -> bytes:
        """The project's JSON export, every task (annotated or not), as downloaded."""
        return self.call("GET", f"/api/projects/{project_id}/export",
                         query={"exportType": "JSON", "download_all_tasks": "true"}, raw=True)


# ---- the review queue of a run --------------------------------------------------------------

@dataclass(frozen=True)
class Queue:
    """A run's review queue: its folder and what push needs of it."""

    run_id: str
    pipeline: str
    folder: str
    tasks: List[Dict[str, Any]]
    label_config: str


def find_queue(target: str, store=None) -> Queue:
    """The review queue of a run: `target` is a run folder (`OUT/<run_id>`) or a run id (looked
    up in `store`).

    Raises:
      LabelStudioError (usage): no such run, or the run has no review queue.
    """
    from transforms.labels.review import LABEL_STUDIO, LABEL_STUDIO_CONFIG

    folder = target if os.path.isdir(target) else None
    run_id, pipeline = os.path.basename(os.path.normpath(target)), ""
    if folder is None:
        if store is None:
            raise LabelStudioError(f"RUN: {target!r} is not a run folder, and there is no store to look it up in "
                                   "(--store)", usage=True)
        from pipeline.lineage import _props
        from pipeline.metadata import RUN_CONTEXT

        ctx = store.get_context_by_type_and_name(RUN_CONTEXT, target)
        if ctx is None:
            raise LabelStudioError(f"RUN: no run {target!r} in the store", usage=True)
        props = _props(ctx)
        if props.get("status") != "COMPLETE":
            raise LabelStudioError(f"RUN: run {target} is {props.get('status')}, not COMPLETE: it published no "
                                   "review queue", usage=True)
        folder, run_id, pipeline = str(props.get("output") or ""), target, str(props.get("pipeline") or "")
    report = os.path.join(folder, "report.json")
    if os.path.isfile(report):
        with open(report, encoding="utf-8") as f:
            facts = json.load(f)
        run_id, pipeline = facts.get("run_id", run_id), facts.get("pipeline", pipeline)
    tasks_path = os.path.join(folder, "review", LABEL_STUDIO)
    if not os.path.isfile(tasks_path):
        raise LabelStudioError(f"RUN: run {run_id} has no review queue ({tasks_path} is missing; set labels.review "
                               "in its config)", usage=True)
    with open(tasks_path, encoding="utf-8") as f:
        tasks = json.load(f)
    with open(os.path.join(folder, "review", LABEL_STUDIO_CONFIG), encoding="utf-8") as f:
        label_config = f.read()
    return Queue(run_id, pipeline, folder, tasks, label_config)


def _task_key(task: Dict[str, Any]) -> Tuple[str, str]:
    from transforms.batches import EXAMPLE_ID
    from transforms.labels.label_studio import RUN_ID

    data = task.get("data") or {}
    return str(data.get(RUN_ID)), str(data.get(EXAMPLE_ID))


def push(client: Client, queue: Queue, title: Optional[str] = None) -> Dict[str, Any]:
    """Imports a run's review queue into the project `title` (default "<pipeline> review"),
    created with the queue's labelling config if there is none, else reused (its config set
    to the queue's where it differs). Tasks of this run already in the project (by run id
    and example id) are not imported again, so a push can be repeated.

    Returns: {"project_id", "project", "url", "run_id", "imported", "already_there"}.

    Raises:
      LabelStudioError: see `Client.call`.
    """
    from transforms.labels.label_studio import export_run_ids, load_export

    title = title or f"{queue.pipeline or 'dataprep'} review"
    if len(title) < 3:
        raise LabelStudioError(f"--project: a Label Studio project title has at least 3 characters, got {title!r}",
                               usage=True)
    found = [p for p in client.projects() if p.get("title") == title]
    if len(found) > 1:
        raise LabelStudioError(f"--project: several projects are titled {title!r} (ids "
                               f"{', '.join(str(p['id']) for p in found)})", usage=True)
    present: set = set()
    if found:
        project = found[0]
        if (project.get("label_config") or "").strip() != queue.label_config.strip():
            client.set_label_config(project["id"], queue.label_config)
        tasks = load_export(client.export(project["id"]), f"project {project['id']}")
        if queue.run_id in export_run_ids(tasks):
            present = {_task_key(t) for t in tasks}
    else:
        project = client.create_project(title, queue.label_config,
                                        f"Review queue of dataprep pipeline {queue.pipeline!r}: the weakest-labelled "
                                        "examples, for the next labelling round.")
    new = [t for t in queue.tasks if _task_key(t) not in present]
    if new:
        client.import_tasks(project["id"], new)
    return {"project_id": project["id"], "project": title, "url": f"{client.url}/projects/{project['id']}/",
            "run_id": queue.run_id, "imported": len(new), "already_there": len(queue.tasks) - len(new)}


def pull(client: Client, project_ref: str, path: str) -> Dict[str, Any]:
    """Writes the project's JSON export to `path` as downloaded (replacing it whole, never
    half-written), for `labels.annotations` with `format: label_studio`.

    Returns: {"project_id", "project", "file", "tasks", "annotations", "runs"}.

    Raises:
      LabelStudioError: see `Client.project`, `Client.call`; OSError: the file cannot be written.
    """
    from transforms.labels.label_studio import export_run_ids, load_export

    project = client.project(project_ref)
    data = client.export(project["id"])
    tasks = load_export(data, f"project {project['id']}'s export")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return {"project_id": project["id"], "project": project.get("title"), "file": os.path.abspath(path),
            "tasks": len(tasks), "annotations": sum(len(t.get("annotations") or ()) for t in tasks),
            "runs": export_run_ids(tasks)}
