"""What changed between rounds (pipeline/rounds.py): the demo's two labelling rounds on the
visual-inspection example — round 1, reviewers relabel the queued images of the weakest
class, round 2 — checked against pandas on the split files, through report.json,
report.html and `dataprep diff`."""

from __future__ import annotations

import csv
import json
import os
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.rounds import compare_assignments, format_rounds
from pipeline.run import run
from tests.conftest import ROOT, example_config, run_cli

SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, "examples", "visual_inspection"))
    import generate

    tmp = tmp_path_factory.mktemp("rounds")
    data = tmp / "data"
    rows = 800
    cfg = example_config(data, rows)
    out, store = str(tmp / "out"), str(tmp / "m.sqlite")
    first = run(cfg, output=out, store=store)
    with open(os.path.join(first["output"], "report.json")) as f:
        report1 = json.load(f)
    weakest = min((c for c in report1["labels"]["classes_by_agreement"] if c["hlp"] is not None),
                  key=lambda c: c["hlp"])["class"]
    with open(os.path.join(first["output"], "review", "review.csv"), encoding="utf-8") as f:
        queued = list(csv.DictReader(f))
    picked = [r["image_id"] for r in queued if r["defect"] == weakest or weakest in json.loads(r["annotations"]).values()]
    generate.relabel(str(data), picked, rows_per_file=rows)
    second = run(cfg, output=out, store=store)
    with open(os.path.join(second["output"], "report.json")) as f:
        report2 = json.load(f)
    return {"first": first, "second": second, "report1": report1, "report2": report2, "weakest": weakest,
            "picked": picked, "store": store}


def _splits(summary) -> pd.DataFrame:
    return pd.concat([pq.read_table(os.path.join(summary["output"], "raw", s), columns=["image_id", "defect"])
                      .to_pandas().assign(split=s) for s in SPLITS]).set_index("image_id")


def test_first_round_has_no_rounds_section(two_rounds):
    assert "rounds" not in two_rounds["report1"]
    assert two_rounds["report2"]["rounds"]["before"] == two_rounds["first"]["run_id"]
    assert two_rounds["report2"]["rounds"]["after"] == two_rounds["second"]["run_id"]


def test_consensus_changes_and_churn_match_pandas(two_rounds):
    a, b = _splits(two_rounds["first"]), _splits(two_rounds["second"])
    both = a.index.intersection(b.index)
    d = two_rounds["report2"]["rounds"]
    changed = a.loc[both, "defect"] != b.loc[both, "defect"]
    expected = (pd.DataFrame({"from": a.loc[both, "defect"][changed], "to": b.loc[both, "defect"][changed]})
                .value_counts().to_dict())
    assert d["consensus"]["compared"] == len(both) and d["consensus"]["changed"] == int(changed.sum()) > 0
    assert {(r["from"], r["to"]): r["examples"] for r in d["consensus"]["changes"]} == expected
    moved = a.loc[both, "split"] != b.loc[both, "split"]
    assert d["split_churn"]["moved"] == int(moved.sum()) == 0 and d["split_churn"]["sticky"]   # the config is sticky
    assert d["split_churn"]["added"] == len(b.index.difference(a.index)) > 0    # ties the reviewers resolved
    assert d["split_churn"]["removed"] == len(a.index.difference(b.index))


def test_agreement_per_class_and_queue_before_and_after(two_rounds):
    d = two_rounds["report2"]["rounds"]
    weakest = two_rounds["weakest"]
    classes = {c["class"]: c for c in d["agreement"]["classes"]}
    assert set(classes) == {"none", "scratch", "discoloration"} and len(d["agreement"]["classes"]) == 3
    for name, row in classes.items():
        for key in ("hlp", "kappa"):
            before = {c["class"]: c for c in two_rounds["report1"]["labels"]["classes_by_agreement"]}[name][key]
            after = {c["class"]: c for c in two_rounds["report2"]["labels"]["classes_by_agreement"]}[name][key]
            assert row[key] == {"before": before, "after": after}
    assert classes[weakest]["hlp"]["after"] > classes[weakest]["hlp"]["before"]
    assert classes[weakest]["kappa"]["after"] > classes[weakest]["kappa"]["before"]
    queue = d["review_queue"]
    assert queue["before"] == two_rounds["report1"]["review"]["queued"]
    assert queue["after"] < queue["before"]
    print("\n" + "\n".join(format_rounds(d)))


def test_diff_command_shows_the_rounds(two_rounds, capsys):
    a, b = two_rounds["first"]["run_id"], two_rounds["second"]["run_id"]
    code, out, _ = run_cli(["diff", a, b, "--store", two_rounds["store"]], capsys)
    assert code == 0
    assert f"what changed between rounds ({a} → {b})" in out
    queue = two_rounds["report2"]["rounds"]["review_queue"]
    assert f"review queue: {queue['before']} → {queue['after']} examples" in out
    assert "split churn: 0 of" in out and "[sticky splits]" in out
    assert any(line.strip().startswith(two_rounds["weakest"]) for line in out.splitlines())
    code, out, _ = run_cli(["diff", a, b, "--store", two_rounds["store"], "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["rounds"] == two_rounds["report2"]["rounds"]


def test_report_html_has_the_rounds_and_the_sticky_deviation(two_rounds):
    with open(os.path.join(two_rounds["second"]["output"], "report.html"), encoding="utf-8") as f:
        page = f.read()
    d = two_rounds["report2"]["rounds"]
    part = page[page.index('id="rounds"'):]
    assert "What changed since the last round" in page
    assert f'<b id="rounds-moved">0</b>' in part and f'<b id="rounds-consensus-changed">{d["consensus"]["changed"]}</b>' in part
    assert "<svg" in part[:part.index("</section>")]
    sticky = two_rounds["report2"]["split"]["sticky"]
    assert sticky["previous_run"] == two_rounds["first"]["run_id"]
    assert 'id="split-sticky"' in page and "Deviation of the split totals" in page
    with open(os.path.join(two_rounds["first"]["output"], "report.html"), encoding="utf-8") as f:
        assert 'id="rounds"' not in f.read()


def test_per_class_na_in_text_and_html():
    from pipeline.html_report import render_html

    d = {"before": "r1", "after": "r2",
         "agreement": {"overall": {}, "classes": [{"class": "a", "hlp": {"before": None, "after": 0.5},
                                                  "kappa": {"before": 0.1, "after": None},
                                                  "items": {"before": 3, "after": 4}}]},
         "review_queue": {"before": 5, "after": 2},
         **compare_assignments(pa.table({"example_id": ["x"], "split": ["train"], "label": ["a"]}),
                               pa.table({"example_id": ["x"], "split": ["dev"], "label": ["b"]}))}
    text = "\n".join(format_rounds(d))
    assert "n/a → 0.500" in text and "0.100 → n/a" in text and "train → dev 1" in text and "a → b 1" in text
    report = {"rounds": d, "labels": {"overall": {}, "classes_by_agreement": [
        {"class": "a", "items": 2, "hlp": None, "mean_item_agreement": None, "kappa": 0.3}]}}
    page = render_html(report)
    assert "n/a → 0.5" in page
    classes = page[page.index('class="class-agreement"'):]
    assert "<td>n/a</td>" in classes[:classes.index("</table>")]


def test_report_rounds_false_leaves_the_comparison_out(tmp_path):
    """`report.rounds: false`: a rerun's job does not read the previous run's split files (no
    ChurnSince stage) and its report has no `rounds`; the default compares (and counts the
    churn in the job, against pandas: nothing moved between two runs of the same data)."""
    cfg = example_config(tmp_path / "data", 200)
    cfg.features = {}
    out, store = str(tmp_path / "out"), str(tmp_path / "m.sqlite")
    first = run(cfg, output=out, store=store)
    again = run(cfg, output=out, store=store, force=True)
    with open(os.path.join(again["output"], "report.json")) as f:
        churn = json.load(f)["rounds"]["split_churn"]
    assert churn["compared"] == first["rows"]["clean"] and churn["moved"] == 0 and churn["added"] == 0
    off = cfg.model_copy(update={"report": cfg.report.model_copy(update={"rounds": False})})
    quiet = run(off, output=out, store=store, force=True)
    with open(os.path.join(quiet["output"], "report.json")) as f:
        assert "rounds" not in json.load(f)
