"""report.html's "What changed since the last round" section: report.json's `rounds`
(`pipeline/rounds.py`) as tables and one Vega-Lite chart of HLP per class before → after."""

from __future__ import annotations

from typing import Dict, List

from pipeline.html_report import esc, grouped_bars, table
from pipeline.rounds import fmt


def _arrow(block: Dict) -> str:
    return f"{fmt(block.get('before'))} → {fmt(block.get('after'))}"


def rounds_section(report: Dict) -> str:
    """The section's body; empty when the run had no earlier round."""
    d = report.get("rounds")
    if not d:
        return ""
    out: List[str] = [f"<p>Against run <code>{esc(d['before'])}</code>, the pipeline's last COMPLETE run before "
                      "this one. “n/a”: no figure (undefined, or 1.0 by construction: two raters under "
                      "majority).</p>"]
    overall = d["agreement"]["overall"]
    if overall:
        out.append(table([{"measure": "HLP" if k == "hlp" else "Fleiss' kappa", "before → after": _arrow(v)}
                          for k, v in overall.items()], ["measure", "before → after"], cls="rounds-overall"))
    classes = d["agreement"]["classes"]
    if classes:
        rows = [{"class": c["class"], "HLP before → after": _arrow(c["hlp"]),
                 "kappa before → after": _arrow(c["kappa"]), "items before → after": _arrow(c["items"])}
                for c in classes]
        out += ["<h3>Per class</h3>", table(rows, cls="rounds-classes")]
        bars = [{"class": c["class"], "round": when, "HLP": c["hlp"][when]} for c in classes
                for when in ("before", "after") if c["hlp"].get(when) is not None]
        if bars:
            out.append(grouped_bars(bars, "class", "round", "HLP", "HLP per class, before and after"))
    cons = d["consensus"]
    out.append(f'<h3>Consensus labels</h3><p><b id="rounds-consensus-changed">{esc(cons["changed"])}</b> of '
               f'{esc(cons["compared"])} examples in the splits of both runs changed label.</p>')
    if cons["changes"]:
        out.append(table(cons["changes"], ["from", "to", "examples"], cls="rounds-consensus"))
    queue = d["review_queue"]
    if queue.get("before") is not None or queue.get("after") is not None:
        out.append(f'<h3>Review queue</h3><p id="rounds-review">{esc(fmt(queue.get("before")))} → '
                   f'{esc(fmt(queue.get("after")))} examples</p>')
    churn = d["split_churn"]
    out.append(f'<h3>Split churn</h3><p><b id="rounds-moved">{esc(churn["moved"])}</b> of {esc(churn["compared"])} '
               f'examples moved between splits{" (sticky splits)" if churn.get("sticky") else ""}; '
               f'{esc(churn["added"])} examples are new in the splits, {esc(churn["removed"])} left them.</p>')
    if churn["moves"]:
        out.append(table(churn["moves"], ["from", "to", "examples"], cls="rounds-churn"))
    return "".join(out)
