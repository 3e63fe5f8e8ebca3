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

from pipeline.metadata import RUN_CONTEXT, is_abandoned

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
        unfinished = None
        while probe and probe not in ("/", "."):
            at_probe = self.store.get_artifacts_by_uri(probe)
            found = [a for a in at_probe if a.state == pb.Artifact.LIVE]
            if found:
                return _prefer_specific(found, self._atype)
            unfinished = unfinished or next((a for a in at_probe if a.state != pb.Artifact.UNKNOWN), None)
            parent = os.path.dirname(probe)
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if unfinished is not None:   # registered PENDING by a run that never published it
            state = pb.Artifact.State.Name(unfinished.state)
            raise TargetNotFound(f"{target!r} is an output of a run that did not finish (artifact {unfinished.id} "
                                 f"is {state}): it was never published")
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
        return {"kind": "artifact", "type": self._atype.get(a.type_id, "?"), "uri": a.uri, "properties": _props(a),
                "state": pb.Artifact.State.Name(a.state)}


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
    if node.get("state") not in (None, "LIVE"):   # an output its run never published
        bits.insert(1, f"[{node['state']}]")
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
    """Every run in the store, oldest first, with status, counts, duration and config hash.
    A RUNNING run whose launcher is gone (`is_abandoned`) shows as ABANDONED."""
    runs = []
    for ctx in store.get_contexts_by_type(RUN_CONTEXT):
        p = _props(ctx)
        rows = json.loads(p["rows"]) if p.get("rows") else {}
        seconds = None
        if p.get("started") and p.get("ended"):
            seconds = round((dt.datetime.fromisoformat(p["ended"]) - dt.datetime.fromisoformat(p["started"]))
                            .total_seconds(), 1)
        status = "ABANDONED" if is_abandoned(p) else p.get("status")   # its launcher died mid-run
        runs.append({"run_id": ctx.name, "pipeline": p.get("pipeline"), "status": status,
                     "started": p.get("started"), "seconds": seconds, "config_hash": (p.get("config_hash") or "")[:12],
                     "rows": rows, "runner": p.get("runner"), "output": p.get("output"), "error": p.get("error"),
                     "properties": {k: p.get(k) for k in ("pipeline", "config_hash", "inputs_fingerprint", "staging",
                                                          "reuse_key")}})
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


# ---- comparing runs and following one example ----------------------------------------------

def _run_context(store: metadata_store.MetadataStore, run_id: str) -> pb.Context:
    ctx = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    if ctx is None:
        raise TargetNotFound(f"no run {run_id!r} in the store")
    return ctx


def _run_inputs(store: metadata_store.MetadataStore, ctx: pb.Context) -> Dict[str, str]:
    types = {t.id: t.name for t in store.get_artifact_types()}
    out = {}
    for a in store.get_artifacts_by_context(ctx.id):
        if types.get(a.type_id) in ("DataFile", "DataManifest"):
            out[a.uri] = a.properties["sha256"].string_value
    return out


def diff_runs(store: metadata_store.MetadataStore, run_a: str, run_b: str) -> Dict:
    """What changed between two runs: config text, input files (by sha256), row counts
    and quarantine reasons; and, when both runs' outputs are there, what changed between
    the two rounds (`pipeline/rounds.py`: agreement per class, consensus labels, review
    queue, split churn), under "rounds" (None otherwise).

    Raises:
      TargetNotFound: a run id is not in the store.
    """
    import difflib

    ca, cb = _run_context(store, run_a), _run_context(store, run_b)
    pa_, pb_ = _props(ca), _props(cb)
    config_diff = list(difflib.unified_diff((pa_.get("config") or "").splitlines(),
                                            (pb_.get("config") or "").splitlines(), run_a, run_b, lineterm=""))
    ia, ib = _run_inputs(store, ca), _run_inputs(store, cb)
    inputs = {"only_in_a": sorted(set(ia) - set(ib)), "only_in_b": sorted(set(ib) - set(ia)),
              "changed": sorted(u for u in set(ia) & set(ib) if ia[u] != ib[u])}
    rows_a = json.loads(pa_.get("rows") or "{}")
    rows_b = json.loads(pb_.get("rows") or "{}")
    rows = {k: {"a": rows_a.get(k), "b": rows_b.get(k), "change": (rows_b.get(k) or 0) - (rows_a.get(k) or 0)}
            for k in sorted(set(rows_a) | set(rows_b), key=list(rows_a).index if rows_a else None)
            if rows_a.get(k) != rows_b.get(k)}
    reasons_a = json.loads(pa_.get("quarantine_reasons") or "{}")
    reasons_b = json.loads(pb_.get("quarantine_reasons") or "{}")
    flat_a = {f"{s}:{r}": n for s, rs in reasons_a.items() for r, n in rs.items()}
    flat_b = {f"{s}:{r}": n for s, rs in reasons_b.items() for r, n in rs.items()}
    reasons = {k: {"a": flat_a.get(k, 0), "b": flat_b.get(k, 0)} for k in sorted(set(flat_a) | set(flat_b))
               if flat_a.get(k, 0) != flat_b.get(k, 0)}
    from pipeline.run_key import changed_parts
    from pipeline.rounds import compare_runs

    return {"a": run_a, "b": run_b,
            "reuse_key": {"same": bool(pa_.get("reuse_key")) and pa_.get("reuse_key") == pb_.get("reuse_key"),
                          "changed": changed_parts(pa_, pb_)},
            "config_hash": {"a": pa_.get("config_hash"), "b": pb_.get("config_hash")},
            "config_diff": config_diff, "inputs": inputs, "rows": rows, "quarantine_reasons": reasons,
            "code_version": {"a": pa_.get("code_version"), "b": pb_.get("code_version")},
            "rounds": compare_runs(store, run_a, run_b)}


def format_diff(d: Dict) -> str:
    lines = [f"runs {d['a']} → {d['b']}"]
    key = d.get("reuse_key") or {}
    lines.append("reuse key: " + ("same (the second would have been reused)" if key.get("same") else
                                  "differs in " + (", ".join(key.get("changed") or []) or "parts not recorded")))
    same = d["config_hash"]["a"] == d["config_hash"]["b"]
    lines.append("config: " + ("same" if same else "changed"))
    lines += [f"  {line}" for line in d["config_diff"]]
    changed = any(d["inputs"].values())
    lines.append("inputs: " + ("changed" if changed else "same"))
    for key, label in (("only_in_a", "-"), ("only_in_b", "+"), ("changed", "~")):
        lines += [f"  {label} {u}" for u in d["inputs"][key]]
    lines.append("rows: " + ("same" if not d["rows"] else ""))
    lines += [f"  {k}: {v['a']} → {v['b']} ({v['change']:+d})" for k, v in d["rows"].items()]
    if d["quarantine_reasons"]:
        lines.append("quarantine reasons:")
        lines += [f"  {k}: {v['a']} → {v['b']}" for k, v in d["quarantine_reasons"].items()]
    if d["code_version"]["a"] != d["code_version"]["b"]:
        lines.append(f"code: {d['code_version']['a']} → {d['code_version']['b']}")
    if d.get("rounds"):
        from pipeline.rounds import format_rounds

        lines += format_rounds(d["rounds"])
    return "\n".join(lines)


def example_provenance(store: metadata_store.MetadataStore, example_id: str, run_id: Optional[str] = None) -> Dict:
    """Where one example ended and where it came from: its split (or duplicates, or quarantine
    with its reason), its source file and line, and that file's artifact in the store.

    Raises:
      TargetNotFound: no such run, or the example is in none of the run's outputs.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if run_id is None:
        done = [r for r in list_runs(store) if r["status"] == "COMPLETE"]
        if not done:
            raise TargetNotFound("no COMPLETE run in the store")
        run_id = done[-1]["run_id"]
    ctx = _run_context(store, run_id)
    out_dir = _props(ctx).get("output")
    types = {t.id: t.name for t in store.get_artifact_types()}
    places = [(a, types.get(a.type_id)) for a in store.get_artifacts_by_context(ctx.id)
              if types.get(a.type_id) in _EXAMPLE_PLACES
              and "payload_format" not in a.custom_properties]   # TFX's TFRecord Examples: the same rows
    places.sort(key=lambda x: (_EXAMPLE_PLACES.index(x[1]), x[0].properties["kind"].string_value != "raw",
                               x[0].uri))
    for artifact, kind in places:
        if not os.path.isdir(artifact.uri):
            continue
        dataset = ds.dataset(artifact.uri, format="parquet")
        if "example_id" not in dataset.schema.names:
            continue
        table = dataset.to_table(filter=pc.field("example_id") == example_id)
        if table.num_rows == 0:
            continue
        row = table.slice(0, 1).to_pylist()[0]
        source = row.get("_source")
        inputs = [a for a in store.get_artifacts_by_context(ctx.id)
                  if types.get(a.type_id) == "DataFile" and a.uri == source]
        return {"example_id": example_id, "run_id": run_id, "output": out_dir,
                "found_in": {"artifact_id": artifact.id, "type": kind, "uri": artifact.uri,
                             "split": artifact.properties["split"].string_value or None},
                "source": source, "row": row.get("_row"),
                "kept_example_id": row.get("kept_example_id"),
                "reason": row.get("reason"), "stage": row.get("stage"),
                "input_artifact": ({"artifact_id": inputs[0].id, "uri": inputs[0].uri,
                                    "sha256": inputs[0].properties["sha256"].string_value} if inputs else None)}
    raise TargetNotFound(f"example {example_id!r} is in no split, duplicates or quarantine of run {run_id}")


# where `example_provenance` looks for an example, in this order (quarantine/ rows carry their
# example_id since issue 30; an earlier run's quarantine has none and is skipped)
_EXAMPLE_PLACES = ("Examples", "Duplicates", "Quarantine")
