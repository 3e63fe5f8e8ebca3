"""`dataprep lineage` and `dataprep runs`: questions answered from the MLMD store alone.

A lineage graph is built by walking events: upstream, from an artifact to the execution
that output it and on to that execution's inputs; downstream, the other way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline.metadata import RUN_CONTEXT

_STATES = {v: k for k, v in pb.Execution.State.items()}


class TargetNotFound(LookupError):
    """Nothing in the store matches the lineage target."""


def _props(msg) -> Dict[str, object]:
    out = {}
    for source in (msg.properties, msg.custom_properties):
        for k, v in source.items():
            kind = v.WhichOneof("value")
            out[k] = getattr(v, kind) if kind else None
    return out


@dataclass
class Graph:
    nodes: Dict[str, Dict] = field(default_factory=dict)
    edges: Set[Tuple[str, str]] = field(default_factory=set)   # data flow: artifact→execution→artifact
    roots: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        return {"roots": self.roots, "nodes": [dict(id=k, **v) for k, v in sorted(self.nodes.items())],
                "edges": [{"from": a, "to": b} for a, b in sorted(self.edges)]}


class Lineage:
    def __init__(self, store: metadata_store.MetadataStore):
        self.store = store
        self._atype = {t.id: t.name for t in store.get_artifact_types()}
        self._etype = {t.id: t.name for t in store.get_execution_types()}

    # ---- resolving a target ------------------------------------------------------------
    def resolve(self, target: str) -> List[pb.Artifact]:
        """Artifacts for a path (folder, shard file), an artifact id, or a run id.

        Raises:
          TargetNotFound: no artifact matches.
        """
        if target.isdigit():
            found = self.store.get_artifacts_by_id([int(target)])
            if found:
                return list(found)
        ctx = self.store.get_context_by_type_and_name(RUN_CONTEXT, target)
        if ctx is not None:
            return self._run_outputs(ctx.id)
        path = target if "://" in target else os.path.abspath(target)
        probe = path.rstrip("/")
        while probe and probe not in ("/", "."):
            found = [a for a in self.store.get_artifacts_by_uri(probe) if a.state == pb.Artifact.LIVE]
            if found:
                return _prefer_specific(found, self._atype)
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        raise TargetNotFound(f"no artifact, run or path in the store matches {target!r}")

    def _run_outputs(self, context_id: int) -> List[pb.Artifact]:
        arts = self.store.get_artifacts_by_context(context_id)
        produced = {e.artifact_id for e in self.store.get_events_by_artifact_ids([a.id for a in arts])
                    if e.type == pb.Event.OUTPUT}
        consumed = {e.artifact_id for e in self.store.get_events_by_artifact_ids([a.id for a in arts])
                    if e.type == pb.Event.INPUT}
        final = [a for a in arts if a.id in produced and a.id not in consumed]
        return final or list(arts)

    # ---- walking -----------------------------------------------------------------------
    def graph(self, artifacts: Sequence[pb.Artifact], direction: str = "upstream") -> Graph:
        g = Graph()
        todo = [a.id for a in artifacts]
        g.roots = [f"a:{i}" for i in todo]
        seen_a: Set[int] = set()
        seen_e: Set[int] = set()
        while todo:
            batch = [i for i in todo if i not in seen_a]
            todo = []
            if not batch:
                break
            seen_a.update(batch)
            for a in self.store.get_artifacts_by_id(batch):
                g.nodes[f"a:{a.id}"] = self._artifact_node(a)
            events = self.store.get_events_by_artifact_ids(batch)
            executions = set()
            for e in events:
                if direction in ("upstream", "both") and e.type == pb.Event.OUTPUT:
                    g.edges.add((f"e:{e.execution_id}", f"a:{e.artifact_id}"))
                    executions.add(e.execution_id)
                if direction in ("downstream", "both") and e.type == pb.Event.INPUT:
                    g.edges.add((f"a:{e.artifact_id}", f"e:{e.execution_id}"))
                    executions.add(e.execution_id)
            new_e = [i for i in executions if i not in seen_e]
            seen_e.update(new_e)
            if not new_e:
                continue
            for x in self.store.get_executions_by_id(new_e):
                g.nodes[f"e:{x.id}"] = {"kind": "execution", "type": self._etype.get(x.type_id, "?"),
                                        "state": _STATES.get(x.last_known_state, "UNKNOWN"),
                                        "properties": _props(x)}
            for e in self.store.get_events_by_execution_ids(new_e):
                if direction in ("upstream", "both") and e.type == pb.Event.INPUT:
                    g.edges.add((f"a:{e.artifact_id}", f"e:{e.execution_id}"))
                    todo.append(e.artifact_id)
                if direction in ("downstream", "both") and e.type == pb.Event.OUTPUT:
                    g.edges.add((f"e:{e.execution_id}", f"a:{e.artifact_id}"))
                    todo.append(e.artifact_id)
        for a in self.store.get_artifacts_by_id([int(n[2:]) for n in _missing_artifacts(g)]):
            g.nodes[f"a:{a.id}"] = self._artifact_node(a)
        return g

    def _artifact_node(self, a: pb.Artifact) -> Dict:
        return {"kind": "artifact", "type": self._atype.get(a.type_id, "?"), "uri": a.uri, "properties": _props(a)}


def _missing_artifacts(g: Graph) -> List[str]:
    ids = {n for edge in g.edges for n in edge if n.startswith("a:")}
    return sorted(ids - set(g.nodes))


def _prefer_specific(found: List[pb.Artifact], types: Dict[int, str]) -> List[pb.Artifact]:
    # A split folder is both the Examples artifact and inside CleanData's folder: show Examples.
    order = ["Examples", "TransformGraph", "Schema", "Quarantine", "Duplicates", "DataReport", "DataFile",
             "CleanData", "RawData"]
    rank = {n: i for i, n in enumerate(order)}
    best = min(rank.get(types.get(a.type_id, ""), len(order)) for a in found)
    return [a for a in found if rank.get(types.get(a.type_id, ""), len(order)) == best]


# ---- formatting ----------------------------------------------------------------------------

def _label(node: Dict) -> str:
    p = node["properties"]
    if node["kind"] == "execution":
        return f"{node['type']} [{node['state']}]"
    bits = [node["type"], node["uri"]]
    for key in ("split", "kind", "rows", "sha256", "source"):
        if p.get(key) not in (None, ""):
            v = p[key]
            bits.append(f"{key}={str(v)[:12] + '…' if key == 'sha256' else v}")
    return "  ".join(str(b) for b in bits)


def format_tree(g: Graph, direction: str) -> str:
    children: Dict[str, List[str]] = {}
    for a, b in sorted(g.edges):
        if direction == "downstream":
            children.setdefault(a, []).append(b)
        else:
            children.setdefault(b, []).append(a)
    lines: List[str] = []

    def walk(node: str, prefix: str, last: bool, top: bool, path: Tuple[str, ...]) -> None:
        ident = f"artifact {node[2:]}" if node.startswith("a:") else f"execution {node[2:]}"
        text = f"{_label(g.nodes[node])}  ({ident})" if node in g.nodes else node
        lines.append(text if top else f"{prefix}{'└── ' if last else '├── '}{text}")
        kids = [k for k in children.get(node, []) if k not in path]
        for i, k in enumerate(kids):
            walk(k, prefix if top else prefix + ("    " if last else "│   "), i == len(kids) - 1, False,
                 path + (node,))

    for root in g.roots:
        walk(root, "", True, True, ())
    return "\n".join(lines)


def format_dot(g: Graph) -> str:
    out = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for key, node in sorted(g.nodes.items()):
        shape = "box" if node["kind"] == "execution" else "note"
        label = _label(node).replace('"', '\\"').replace("  ", "\\n")
        out.append(f'  "{key}" [shape={shape}, label="{label}"];')
    for a, b in sorted(g.edges):
        out.append(f'  "{a}" -> "{b}";')
    out.append("}")
    return "\n".join(out)


def format_graph(g: Graph, direction: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(g.to_json(), indent=2, default=str)
    if fmt == "dot":
        return format_dot(g)
    return format_tree(g, direction)


def list_runs(store: metadata_store.MetadataStore) -> List[Dict]:
    """Every run in the store, oldest first, with status, counts, duration and config hash."""
    runs = []
    for ctx in store.get_contexts_by_type(RUN_CONTEXT):
        p = _props(ctx)
        rows = json.loads(p["rows"]) if p.get("rows") else {}
        seconds = None
        if p.get("started") and p.get("ended"):
            seconds = round((dt.datetime.fromisoformat(p["ended"]) - dt.datetime.fromisoformat(p["started"]))
                            .total_seconds(), 1)
        runs.append({"run_id": ctx.name, "status": p.get("status"), "started": p.get("started"),
                     "seconds": seconds, "config_hash": (p.get("config_hash") or "")[:12], "rows": rows,
                     "runner": p.get("runner"), "output": p.get("output"), "error": p.get("error")})
    return sorted(runs, key=lambda r: (r["started"] or "", r["run_id"]))


def format_runs(runs: List[Dict]) -> str:
    head = f"{'run_id':<27} {'status':<9} {'seconds':>8} {'config':<12} {'input':>9} {'train':>9} {'dev':>8} " \
           f"{'test':>8} {'quar.':>7} {'dups':>6}"
    lines = [head]
    for r in runs:
        rows = r["rows"]
        lines.append(f"{r['run_id']:<27} {r['status'] or '?':<9} {r['seconds'] if r['seconds'] is not None else '':>8} "
                     f"{r['config_hash']:<12} {rows.get('input', ''):>9} {rows.get('train', ''):>9} "
                     f"{rows.get('dev', ''):>8} {rows.get('test', ''):>8} {rows.get('quarantined', ''):>7} "
                     f"{rows.get('duplicates', ''):>6}")
        if r.get("error"):
            lines.append(f"    error: {r['error'][:200]}")
    return "\n".join(lines)
