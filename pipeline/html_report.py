"""report.html: `report.json` (and the run's lineage from the store) as one self-contained page.

The page opens offline: CSS inline, every chart an inline SVG rendered here by Vega and
Vega-Lite (`vl-convert-python`, which bundles both, so nothing is fetched at run time or
when the page is opened), no script. Every value that comes from the data (sample
records, labels, metadata values, uris) goes through `html.escape`: a record holding
`<script>` is shown as text.

The lineage graph is drawn by Vega from a layered layout computed here (inputs → stages
→ outputs: each node's column is its longest path from a source), which needs no
Graphviz binary.
"""

from __future__ import annotations

import html
import json
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

FUNNEL_ORDER = ("input", "clean", "quarantined", "duplicates")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:16px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d1d9}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre.record{margin:0;white-space:pre-wrap;word-break:break-all;max-width:760px}
.chart svg{max-width:100%;height:auto}.muted{color:#57606a}.warn{color:#9a6700;font-weight:600}
.banner{border-radius:6px;padding:12px 18px;margin:16px 0;font-weight:600}.banner ul{margin:6px 0 0;font-weight:400}
.banner.failed{background:#ffebe9;border:1px solid #cf222e;color:#82071e}
.banner.warned{background:#fff8c5;border:1px solid #bf8700;color:#7d4e00}
tr.gate-failed td{color:#82071e;font-weight:600}
nav a{margin-right:12px;color:#0969da;text-decoration:none}
"""


def esc(value: Any) -> str:
    """Any value as HTML text (None as an empty cell, an integer with thousands separators)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"      # counts read as 14,568
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


def table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None, cls: str = "") -> str:
    """Rows of dicts as an HTML table; numbers right-aligned, everything escaped."""
    if not rows:
        return '<p class="muted">none</p>'
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="n">{esc(v)}</td>' if num else f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ---- charts ------------------------------------------------------------------------------

def start_chart_engine() -> threading.Thread:
    """Starts vl-convert's JavaScript engine on a thread, so that the report's first chart
    does not wait for it: its first conversion in a process takes 0.6 s (starting V8 and
    loading Vega), later ones 30 ms, and it runs outside the GIL, on the core the job's
    imports and build leave free."""
    def render_one() -> None:
        try:
            vega_lite_svg({"data": {"values": [{"x": 1}]}, "mark": "point", "encoding": {"x": {"field": "x"}}})
        except Exception:     # the report's own charts will raise it, where it is reported
            pass

    thread = threading.Thread(target=render_one, name="dataprep-chart-engine", daemon=True)
    thread.start()
    return thread


def vega_lite_svg(spec: Dict) -> str:
    """A Vega-Lite spec rendered to an SVG string (offline, by vl-convert's bundled Vega)."""
    import vl_convert as vlc

    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "config": {"font": "Helvetica", "view": {"stroke": None}}, **spec}
    return _strip_xml_header(vlc.vegalite_to_svg(spec))


def vega_svg(spec: Dict) -> str:
    import vl_convert as vlc

    return _strip_xml_header(vlc.vega_to_svg(spec))


def _strip_xml_header(svg: str) -> str:
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


def bar_chart(values: List[Dict], x: str, y: str, title: str = "", color: Optional[str] = None,
              x_type: str = "quantitative", width: int = 480) -> str:
    """Horizontal bars: `y` the category, `x` the value (Vega-Lite)."""
    enc: Dict[str, Any] = {
        "y": {"field": y, "type": "nominal", "sort": None, "title": None},
        "x": {"field": x, "type": x_type, "title": x},
        "tooltip": [{"field": y}, {"field": x}],
    }
    if color:
        enc["color"] = {"field": color, "type": "nominal"}
    layer_text = {"mark": {"type": "text", "align": "left", "dx": 3}, "encoding": {
        "y": enc["y"], "x": enc["x"], "text": {"field": x, "type": x_type, "format": ",.4~g"}}}
    spec = {"title": title, "data": {"values": values}, "width": width,
            "height": {"step": 18}, "layer": [{"mark": "bar", "encoding": enc}] + ([] if color else [layer_text])}
    return f'<div class="chart">{vega_lite_svg(spec)}</div>'


def grouped_bars(values: List[Dict], category: str, group: str, value: str, title: str = "") -> str:
    """One bar per (category, group), grouped by category (target vs actual, per split)."""
    spec = {"title": title, "data": {"values": values}, "width": 480,
            "mark": "bar",
            "encoding": {"y": {"field": category, "type": "nominal", "title": None},
                         "yOffset": {"field": group}, "x": {"field": value, "type": "quantitative"},
                         "color": {"field": group, "type": "nominal"}}}
    return f'<div class="chart">{vega_lite_svg(spec)}</div>'


def heatmap(values: List[Dict], title: str) -> str:
    """A confusion matrix (true × given, probability) as a Vega-Lite heat map."""
    spec = {"title": title, "data": {"values": values},
            "encoding": {"x": {"field": "given", "type": "nominal"}, "y": {"field": "true", "type": "nominal"}},
            "layer": [{"mark": "rect", "encoding": {"color": {"field": "p", "type": "quantitative",
                                                              "scale": {"domain": [0, 1]}}}},
                      {"mark": "text", "encoding": {"text": {"field": "p", "format": ".2f"}}}]}
    return f'<div class="chart">{vega_lite_svg(spec)}</div>'


# ---- the lineage graph ---------------------------------------------------------------------

def layered_layout(nodes: Sequence[str], edges: Iterable[Tuple[str, str]]) -> Dict[str, Tuple[int, int]]:
    """(column, row) of each node of a DAG: the column is the longest path from a source, the
    row the node's rank within its column (sorted by key, so the layout is deterministic)."""
    edges = sorted(set(edges))
    parents: Dict[str, List[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].append(a)
    depth: Dict[str, int] = {}

    def walk(n: str, stack: Tuple[str, ...] = ()) -> int:
        if n not in depth:
            depth[n] = 0 if n in stack else 1 + max((walk(p, stack + (n,)) for p in parents[n]), default=-1)
        return depth[n]

    for n in nodes:
        walk(n)
    columns: Dict[int, List[str]] = {}
    for n in sorted(nodes):
        columns.setdefault(depth[n], []).append(n)
    return {n: (col, row) for col, ns in columns.items() for row, n in enumerate(ns)}


def lineage_svg(graph: Dict) -> str:
    """The run's lineage (`Graph.to_json()`: nodes, edges) drawn by Vega: artifacts as
    light boxes, executions (stages) as dark ones, inputs at the top."""
    nodes = {n["id"]: n for n in graph.get("nodes", [])}
    edges = [(e["from"], e["to"]) for e in graph.get("edges", []) if e["from"] in nodes and e["to"] in nodes]
    if not nodes:
        return '<p class="muted">no lineage in the store for this run</p>'
    pos = layered_layout(list(nodes), edges)
    # top to bottom: a layer per row, so that a dozen stages stay readable on a page
    col_w, row_h, box_w, box_h = 250, 64, 230, 38
    width_of = max(r for _, r in pos.values()) + 1
    points = []
    for key, (layer, r) in pos.items():
        n = nodes[key]
        if n.get("kind") == "execution":
            title, sub = n.get("type", "?"), n.get("state", "")
        else:
            props = n.get("properties", {})
            title = n.get("type", "?") + (f" [{props['split']}]" if props.get("split") else "")
            uri = str(n.get("uri", ""))
            sub = ("…" + uri[-34:]) if len(uri) > 35 else uri
            if props.get("rows") not in (None, ""):
                rows = props["rows"]
                sub = f"{rows:,} rows · {sub}" if isinstance(rows, int) else f"{rows} rows · {sub}"
        in_layer = sum(1 for _, (lay, _) in pos.items() if lay == layer)
        offset = (width_of - in_layer) * col_w / 2          # each layer centred
        points.append({"id": key, "x": offset + r * col_w + 10, "y": layer * row_h + 10, "title": title,
                       "sub": sub[:48], "exec": n.get("kind") == "execution"})
    by_id = {p["id"]: p for p in points}
    links = [{"x": by_id[a]["x"] + box_w / 2, "y": by_id[a]["y"] + box_h, "x2": by_id[b]["x"] + box_w / 2,
              "y2": by_id[b]["y"]} for a, b in edges]
    width = width_of * col_w + 20
    height = (max(lay for lay, _ in pos.values()) + 1) * row_h + 20
    spec = {
        "$schema": "https://vega.github.io/schema/vega/v5.json", "width": width, "height": height,
        "padding": 5, "config": {"text": {"font": "Helvetica"}},
        "data": [{"name": "nodes", "values": points}, {"name": "links", "values": links}],
        "marks": [
            {"type": "rule", "from": {"data": "links"}, "encode": {"enter": {
                "x": {"field": "x"}, "y": {"field": "y"}, "x2": {"field": "x2"}, "y2": {"field": "y2"},
                "stroke": {"value": "#8c959f"}, "strokeWidth": {"value": 1.2}}}},
            {"type": "symbol", "from": {"data": "links"}, "encode": {"enter": {
                "x": {"field": "x2"}, "y": {"signal": "datum.y2 - 4"}, "shape": {"value": "triangle-down"},
                "size": {"value": 40}, "fill": {"value": "#8c959f"}}}},
            {"type": "rect", "from": {"data": "nodes"}, "encode": {"enter": {
                "x": {"field": "x"}, "y": {"field": "y"}, "width": {"value": box_w}, "height": {"value": box_h},
                "cornerRadius": {"value": 4},
                "fill": {"signal": "datum.exec ? '#24292f' : '#ddf4ff'"},
                "stroke": {"signal": "datum.exec ? '#24292f' : '#54aeff'"}}}},
            {"type": "text", "from": {"data": "nodes"}, "encode": {"enter": {
                "x": {"signal": "datum.x + 8"}, "y": {"signal": "datum.y + 15"}, "text": {"field": "title"},
                "fontWeight": {"value": "bold"}, "fontSize": {"value": 11},
                "fill": {"signal": "datum.exec ? '#ffffff' : '#1f2328'"}}}},
            {"type": "text", "from": {"data": "nodes"}, "encode": {"enter": {
                "x": {"signal": "datum.x + 8"}, "y": {"signal": "datum.y + 30"}, "text": {"field": "sub"},
                "fontSize": {"value": 9.5}, "fill": {"signal": "datum.exec ? '#c9d1d9' : '#57606a'"}}}},
        ],
    }
    return f'<div class="chart" id="lineage-graph">{vega_svg(spec)}</div>'


# ---- the page ------------------------------------------------------------------------------

def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def _funnel(report: Dict) -> str:
    rows = report.get("rows", {})
    order = [k for k in FUNNEL_ORDER if k in rows] + [k for k in rows if k not in FUNNEL_ORDER]
    values = [{"stage": k, "rows": rows[k]} for k in order]
    splits = [k for k in rows if k not in FUNNEL_ORDER]
    identity = (f"input {esc(rows.get('input'))} = " + " + ".join(f"{s} {esc(rows[s])}" for s in splits)
                + f" + quarantined {esc(rows.get('quarantined'))} + duplicates {esc(rows.get('duplicates'))}")
    cells = "".join(f'<tr><th>{esc(k)}</th><td class="n" data-funnel="{esc(k)}">{esc(rows[k])}</td></tr>'
                    for k in order)
    return (f'<p><code>{esc(identity)}</code></p><table id="funnel-table"><tbody>{cells}</tbody></table>'
            + bar_chart(values, "rows", "stage", "rows per stage")
            + _inputs(report))


def _inputs(report: Dict) -> str:
    inputs = report.get("inputs") or {}
    return "<h3>Rows per input file</h3>" + table([{"file": k, "rows": v} for k, v in inputs.items()])


def _quarantine(report: Dict) -> str:
    reasons = report.get("quarantine_reasons") or {}
    samples = report.get("quarantine_samples") or {}
    flat = [{"stage": stage, "reason": r, "rows": n} for stage, rs in reasons.items()
            for r, n in sorted(rs.items(), key=lambda kv: -kv[1])]
    if not flat:
        return '<p class="muted">no row was quarantined</p>'
    out = [table(flat, ["stage", "reason", "rows"]),
           bar_chart([{"reason": f"{f['stage']}: {f['reason']}", "rows": f["rows"]} for f in flat], "rows", "reason",
                     "quarantined rows per reason")]
    for f in flat:
        rows = samples.get(f"{f['stage']}\t{f['reason']}", [])
        if rows:
            out.append(f"<h3>{esc(f['stage'])}: {esc(f['reason'])} — {len(rows)} sample(s) of {esc(f['rows'])}</h3>")
            # a line number as `sed -n 14568p` takes it, not as a count
            out.append(table([{"source": s.get("_source"), "row": None if s.get("_row") is None else str(s["_row"]),
                               "record": s.get("record")} for s in rows], ["source", "row", "record"],
                             cls="samples"))
    return "".join(out)


def _split(report: Dict) -> str:
    bal = report.get("split") or {}
    strata = bal.get("strata", [])
    if not strata:
        return '<p class="muted">no split balance</p>'
    sticky = bal.get("sticky")
    out = [f"<p>unit: {esc(bal.get('unit'))}; largest deviation from target: "
           f"{esc(bal.get('largest_deviation'))}</p>"]
    if sticky:
        out.append(f'<p id="split-sticky">Sticky splits: every example that was in a split of run '
                   f'<code>{esc(sticky.get("previous_run"))}</code> kept it ('
                   + ", ".join(f"{esc(k)} {esc(v)}" for k, v in sticky.get("kept", {}).items())
                   + "); new examples filled the quotas as closely as they allowed ("
                   + ", ".join(f"{esc(k)} {esc(v)}" for k, v in sticky.get("new", {}).items())
                   + "). Deviation of the split totals from their targets: "
                   + ", ".join(f"{esc(k)} {v:+d}" for k, v in sticky.get("deviation", {}).items()) + ".</p>")
    out.append(table(strata, ["stratum", "split", "n", "target", "actual", "proportion"]
                     + (["kept", "new"] if sticky else [])))
    chart = []
    for r in strata:
        chart += [{"stratum / split": f"{r['stratum']} / {r['split']}", "kind": "target", "count": r["target"]},
                  {"stratum / split": f"{r['stratum']} / {r['split']}", "kind": "actual", "count": r["actual"]}]
    out.append(grouped_bars(chart, "stratum / split", "kind", "count", "target vs actual per stratum"))
    if bal.get("examples"):
        out += ["<h3>Example-level balance</h3>", table(bal["examples"])]
    return "".join(out)


def _metric(block: Optional[Dict]) -> Any:
    return block.get("value") if isinstance(block, dict) else block


_PER_CLASS_FIGURES = ("mean_item_agreement", "hlp", "label_agreement", "kappa", "label_share")


def _labels(report: Dict) -> str:
    lab = report.get("labels")
    if not lab:
        return '<p class="muted">one label per example: no agreement to measure</p>'
    overall = lab.get("overall", {})
    facts = [{"measure": "HLP (mean pairwise agreement)", "value": _metric(overall.get("hlp"))},
             {"measure": "Fleiss' kappa", "value": _metric(overall.get("fleiss_kappa"))},
             {"measure": "Krippendorff's alpha (nominal)", "value": _metric(overall.get("krippendorff_alpha_nominal"))},
             {"measure": "items", "value": overall.get("items")}]
    if "weighted_kappa" in overall:   # labels.ordinal
        facts[2:2] = [{"measure": "weighted kappa (quadratic)", "value": _metric(overall.get("weighted_kappa"))},
                      {"measure": "Krippendorff's alpha (ordinal)",
                       "value": _metric(overall.get("krippendorff_alpha_ordinal"))}]
    unchosen = (overall.get("consensus") or {}).get("unchosen_items")
    if unchosen:
        facts.append({"measure": "consensus no annotator of the item chose", "value": unchosen})
    out = ['<h3>Overall</h3>', table(facts, ["measure", "value"], cls="overall-agreement")]
    classes = lab.get("classes_by_agreement") or []
    if classes:
        # a figure that is None per class is n/a (undefined, or 1.0 by construction), not blank
        shown = [{k: ("n/a" if v is None and k in _PER_CLASS_FIGURES else v) for k, v in c.items()} for c in classes]
        out += ['<h3>Per class, lowest first</h3>', table(shown, cls="class-agreement")]
        key = next((k for k in ("mean_item_agreement", "hlp", "label_agreement") if k in classes[0]), None)
        if key:
            out.append(bar_chart([{"class": c.get("class"), key: _metric(c.get(key))} for c in classes
                                  if _metric(c.get(key)) is not None], key, "class", f"{key} per class"))
    for col, rows in (lab.get("slices_by_agreement") or {}).items():
        out += [f"<h3>Per {esc(col)}, lowest first</h3>", table(rows, cls="slice-agreement")]
    annotators = lab.get("annotators_by_agreement") or []
    if annotators:
        out += ["<h3>Per annotator, lowest first</h3>", table(annotators, cls="annotator-agreement")]
    confusion = lab.get("dawid_skene", {}).get("confusion") if isinstance(lab.get("dawid_skene"), dict) else None
    if confusion:
        out.append("<h3>Dawid-Skene confusion matrices (P(given | true))</h3>")
        for annotator, m in confusion.items():
            classes_ = m.get("classes", [])
            values = [{"true": t, "given": g, "p": p} for t, row in zip(classes_, m.get("matrix", []))
                      for g, p in zip(classes_, row)]
            out.append(heatmap(values, str(annotator)))
    return "".join(out)


def _review(report: Dict) -> str:
    rv = report.get("review")
    if not rv:
        return '<p class="muted">no review queue (set labels.review)</p>'
    cand = rv.get("candidates", {})
    rows = [{"reason": r, "candidates": n, "queued": rv.get("per_reason", {}).get(r, 0)} for r, n in cand.items()]
    return (f'<p><b id="review-queued">{esc(rv.get("queued"))}</b> example(s) queued for the next labelling round '
            f'(of {esc(sum(cand.values()))} candidate(s)), weakest first, in <code>review/</code>: '
            + ", ".join(f"<code>{esc(f)}</code>" for f in rv.get("files", []))
            + ". Nothing left a split because of it.</p>" + table(rows, ["reason", "candidates", "queued"]))


def _near_dedup(report: Dict) -> str:
    nd = report.get("near_dedup")
    if not nd:
        return '<p class="muted">no near-duplicate search (set clean.near_dedup)</p>'
    leakage = nd.get("leakage") or {}
    settings = {k: v for k, v in nd.items() if k != "leakage" and not isinstance(v, (dict, list))}
    across = [{"splits": k, "near-duplicate pairs across": v} for k, v in (leakage.get("across") or {}).items()]
    within = [{"split": k, "pairs within": v} for k, v in (leakage.get("within") or {}).items()]
    return (f'<p><b id="near-dedup-leakage">{esc(leakage.get("cross_split_pairs", 0))}</b> near-duplicate pair(s) '
            "across splits after the split (leakage into dev/test).</p>"
            + table(across, ["splits", "near-duplicate pairs across"])
            + table(within, ["split", "pairs within"])
            + "<h3>Settings and counts</h3>" + table([{"key": k, "value": v} for k, v in settings.items()],
                                                      ["key", "value"], cls="facts"))


def _features(report: Dict) -> str:
    feats = report.get("features")
    if not feats:
        return '<p class="muted">no features</p>'
    rows = []
    missing = report.get("feature_missing") or {}
    for column, st in (feats.get("columns") or {}).items():
        row = {"column": column}
        if column in missing:    # missing values, filled before the transform (per split)
            per_split = missing[column]
            row["missing"] = sum(per_split.values())
            row["missing per split"] = " · ".join(f"{k} {v:,}" for k, v in per_split.items())
        row.update({k: v for k, v in st.items() if not isinstance(v, (list, dict))})
        for k, v in st.items():
            if isinstance(v, list):
                row[k] = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v[:12]) + (
                    " …" if len(v) > 12 else "")
        rows.append(row)
    out = [table(rows)]
    heads = feats.get("vocabulary_heads") or {}
    for name, size in (feats.get("vocabularies") or {}).items():
        head = heads.get(name, [])
        out.append(f"<h3>Vocabulary {esc(name)} ({esc(size)} entries)</h3>"
                   + (f"<p>{', '.join(f'<code>{esc(v)}</code>' for v in head)}"
                      f"{' …' if isinstance(size, int) and size > len(head) else ''}</p>" if head else ""))
    return "".join(out)


def _facts(report: Dict) -> str:
    keys = ("run_id", "pipeline", "runner", "config_hash", "inputs_fingerprint", "code_version", "store",
            "started", "ended", "seconds")
    rows = [{"fact": k, "value": report.get(k)} for k in keys if k in report]
    stages = report.get("stage_seconds")
    if stages:
        rows += [{"fact": f"seconds: {k}", "value": v} for k, v in stages.items()]
    return table(rows, ["fact", "value"], cls="facts")


def _guard(report: Dict) -> str:
    g = report.get("guard")
    if not g or not g.get("exceeded"):
        return ""
    return _section("guard", "Growth guard", f'<p class="warn">{esc(g.get("message"))}</p>')


def _gate_banner(report: Dict) -> str:
    """At the top of the page: which quality gates failed (the run published nothing), or,
    with `expect.warn_only`, which would have."""
    gates = report.get("gates") or {}
    failed = [r for r in gates.get("results", []) if not r.get("passed")]
    if not failed:
        return ""
    kind = "warned" if gates.get("warn_only") else "failed"
    head = ("Quality gates failed with expect.warn_only: the run was published anyway"
            if kind == "warned" else "Quality gates failed: this run published nothing (no split, no _SUCCESS)")
    items = "".join(f"<li><code>{esc(r['gate'])}</code>: {esc(r['message'])}</li>" for r in failed)
    return f'<div class="banner {kind}" id="gates-banner">{esc(head)}<ul>{items}</ul></div>'


def _gates(report: Dict) -> str:
    gates = report.get("gates") or {}
    results = gates.get("results") or []
    if not results:
        return '<p class="muted">no quality gate was checked</p>'
    rows = "".join(f'<tr class="gate-{"passed" if r["passed"] else "failed"}"><td><code>{esc(r["gate"])}</code>'
                   f'{" (default)" if r.get("default") else ""}</td><td>{"passed" if r["passed"] else "FAILED"}</td>'
                   f'<td>{esc(r["message"])}</td></tr>' for r in results)
    return (f'<table id="gates-table"><thead><tr><th>gate</th><th>result</th><th>numbers</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def render_html(report: Dict, lineage: Optional[Dict] = None) -> str:
    """The whole page for one run's `report` (report.json) and its `lineage`
    (`Graph.to_json()` of the run's outputs, upstream), as a string."""
    from pipeline.html_rounds import rounds_section   # they build on this file's helpers
    from pipeline.html_slices import slices_section

    title = f"dataprep report · {report.get('pipeline', '')} · {report.get('run_id', '')}"
    parts = [
        ("gates", "Quality gates", _gates(report)),
        ("funnel", "Row funnel", _funnel(report)),
        ("quarantine", "Quarantine reasons and samples", _quarantine(report)),
        ("split", "Split balance per stratum (target vs actual)", _split(report)),
        ("labels", "Label agreement (human-level performance)", _labels(report)),
        ("slices", "Metadata slices (error analysis)", slices_section(report)),
        ("review", "Review queue", _review(report)),
        *([("rounds", "What changed since the last round", rounds_section(report))] if report.get("rounds") else []),
        ("near-dedup", "Near-duplicates and split leakage", _near_dedup(report)),
        ("features", "Feature statistics and vocabularies", _features(report)),
        ("lineage", "Lineage of the run (inputs → stages → outputs)",
         lineage_svg(lineage) if lineage else '<p class="muted">no store reachable: lineage not drawn</p>'),
        ("facts", "Run facts", _facts(report)),
    ]
    nav = "".join(f'<a href="#{sid}">{esc(t.split(" (")[0])}</a>' for sid, t, _ in parts)
    body = _gate_banner(report) + _guard(report) + "".join(_section(sid, t, b) for sid, t, b in parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(report.get('started', ''))} · {esc(report.get('runner', ''))}"
            f"</p></header><main><nav>{nav}</nav>{body}</main></body></html>\n")
