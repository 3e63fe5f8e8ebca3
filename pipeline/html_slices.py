"""report.html's metadata slices section: per metadata column, where each value's rows went
(clean, quarantined by reason, duplicates), its label mix and its label agreement, as
tables and Vega-Lite charts (rendered by `pipeline/html_report.py`'s helpers)."""

from typing import Dict, List

from pipeline.html_report import bar_chart, esc, table, vega_lite_svg


def stacked_shares(values: List[Dict], category: str, part: str, value: str, title: str) -> str:
    """One horizontal bar per `category`, cut into its `part`s, each as its share of the bar."""
    spec = {"title": title, "data": {"values": values}, "width": 420, "height": {"step": 18},
            "mark": "bar",
            "encoding": {"y": {"field": category, "type": "nominal", "sort": None, "title": None},
                         "x": {"aggregate": "sum", "field": value, "type": "quantitative", "stack": "normalize",
                               "title": "share of rows", "axis": {"format": "%"}},
                         "color": {"field": part, "type": "nominal", "title": None},
                         "tooltip": [{"field": category}, {"field": part}, {"field": value}]}}
    return f'<div class="chart">{vega_lite_svg(spec)}</div>'


def _column(column: str, rows: List[Dict]) -> str:
    cells = [{"value": r["value"], "rows": r["rows"], "clean": r["clean"], "quarantined": r["quarantined"],
              "duplicates": r["duplicates"], "quarantine share": r["quarantine_share"],
              "top reason": next(iter(r["quarantine_by_reason"]), None),
              "label agreement": (r.get("label_agreement") or {}).get("value"),
              "label mix": ", ".join(f"{k} {v['share']:.0%}" for k, v in r["label_mix"].items())}
             for r in rows]
    where = [{"value": r["value"], "went to": kind, "rows": r[kind]}
             for r in rows for kind in ("clean", "quarantined", "duplicates") if r[kind]]
    reasons = [{"value": r["value"], "reason": reason, "share": v["share"]}
               for r in rows for reason, v in r["quarantine_by_reason"].items()]
    mix = [{"value": r["value"], "label": label, "rows": v["rows"]} for r in rows for label, v in r["label_mix"].items()]
    out = [f"<h3>Per {esc(column)}</h3>", table(cells, cls="metadata-slice"),
           stacked_shares(where, "value", "went to", "rows", f"where the rows of each {column} went")]
    if reasons:
        spec = {"title": f"quarantined share per reason and {column}", "data": {"values": reasons}, "width": 420,
                "height": {"step": 18}, "mark": "bar",
                "encoding": {"y": {"field": "value", "type": "nominal", "sort": None, "title": None},
                             "x": {"aggregate": "sum", "field": "share", "type": "quantitative",
                                   "title": "share of the value's rows", "axis": {"format": "%"}},
                             "color": {"field": "reason", "type": "nominal"},
                             "tooltip": [{"field": "value"}, {"field": "reason"}, {"field": "share", "format": ".2%"}]}}
        out.append(f'<div class="chart">{vega_lite_svg(spec)}</div>')
    if mix:
        out.append(stacked_shares(mix, "value", "label", "rows", f"label mix of the clean rows per {column}"))
    agreement = [{"value": r["value"], "label agreement": r["label_agreement"]["value"]} for r in rows
                 if (r.get("label_agreement") or {}).get("value") is not None]
    if agreement:
        out.append(bar_chart(agreement, "label agreement", "value", f"label agreement per {column}"))
    return "".join(out)


def slices_section(report: Dict) -> str:
    """The body of the "Metadata slices" section of report.html."""
    sl = report.get("metadata_slices")
    if not sl or not sl.get("columns"):
        return '<p class="muted">no metadata columns (schema.metadata) to slice by</p>'
    intro = (f"<p>Per value of each <code>schema.metadata</code> column (the {esc(sl.get('max_values'))} values "
             "with the most rows; the others together as <code>&lt;other&gt;</code>): its rows as read, where they "
             "went, the label mix of its clean rows and their agreement with the consensus. Rows quarantined at "
             "ingest were never parsed into columns and are in no slice.</p>")
    return intro + "".join(_column(c, rows) for c, rows in sl["columns"].items())
