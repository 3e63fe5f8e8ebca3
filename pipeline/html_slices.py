"""report.html's metadata slices section: per metadata column, where each value's rows went
(each split, quarantined by reason, duplicates), its label mix and its label agreement, as
tables and Vega-Lite charts (rendered by `pipeline/html_report.py`'s helpers), the values in
their natural order (numbers as numbers)."""

import re
from typing import Dict, List, Tuple

from pipeline.html_report import bar_chart, esc, table, vega_lite_svg
from transforms.slices import NULL, OTHER


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


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def natural_key(value: str) -> Tuple:
    """The order a reader expects of slice values: numbers as numbers (2 < 10 < 10.5), text
    by its words and numbers (cam-2 < cam-10), `<null>` and `<other>` last."""
    if value in (NULL, OTHER):
        return (2, value == OTHER, ())
    if _NUMBER.fullmatch(value.strip()):
        return (0, float(value), ())
    parts = re.split(r"(\d+)", value.casefold())
    return (1, 0.0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p))


def _column(column: str, rows: List[Dict]) -> str:
    rows = sorted(rows, key=lambda r: natural_key(str(r["value"])))
    splits = list(rows[0].get("splits") or {}) if rows else []
    cells = []
    for r in rows:
        cell = {"value": r["value"], "rows": r["rows"]}
        # where the clean rows went: each split (report.json of runs before issue 30: "clean" only)
        cell.update({name: r["splits"][name] for name in splits} if splits else {"clean": r["clean"]})
        cell.update({"quarantined": r["quarantined"], "duplicates": r["duplicates"],
                     "quarantine share": r["quarantine_share"],
                     "top reason": next(iter(r["quarantine_by_reason"]), None),
                     "label agreement": (r.get("label_agreement") or {}).get("value"),
                     "label mix": ", ".join(f"{k} {v['share']:.0%}" for k, v in r["label_mix"].items())})
        cells.append(cell)
    where = [{"value": r["value"], "went to": kind, "rows": n} for r in rows
             for kind, n in ([(s, r["splits"][s]) for s in splits] if splits else [("clean", r["clean"])])
             + [("quarantined", r["quarantined"]), ("duplicates", r["duplicates"])] if n]
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
             "with the most rows; the others together as <code>&lt;other&gt;</code>), in their natural order: its rows "
             "as read, where they went (each split, quarantine, duplicates), the label mix of its clean rows and their agreement with the consensus. Rows quarantined at "
             "ingest were never parsed into columns and are in no slice.</p>")
    return intro + "".join(_column(c, rows) for c, rows in sl["columns"].items())
