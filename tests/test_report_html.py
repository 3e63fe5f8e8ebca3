"""report.html and review/: the page is self-contained and escapes what the data holds; the
review queue is what a pandas filter of the outputs gives; the Label Studio tasks follow
its documented import format; `dataprep report` renders the page again."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.html_report import layered_layout, render_html, start_chart_engine, vega_lite_svg
from pipeline.run import run
from tests.conftest import example_config, run_cli
from transforms.labels.review import (LABEL_STUDIO, LABEL_STUDIO_CONFIG, REASON, SCORE, SLICE, ReviewSpec,
                                      review_rows, weakest_per_slice)

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _report_with(record: str) -> dict:
    return {
        "run_id": "r1", "pipeline": "p<b>", "runner": "DirectRunner",
        "rows": {"input": 3, "clean": 1, "quarantined": 1, "duplicates": 1, "train": 1},
        "quarantine_reasons": {"clean": {"spam": 1}},
        "quarantine_samples": {"clean\tspam": [{"record": record, "_source": "/d/a.csv", "_row": 2}]},
        "inputs": {"/d/a.csv": 3},
        "split": {"unit": "examples", "largest_deviation": 0, "strata": [
            {"stratum": EVIL, "split": "train", "n": 1, "target": 1, "actual": 1, "proportion": 1.0}]},
        "labels": {"overall": {"hlp": {"value": 0.9}, "fleiss_kappa": {"value": 0.8}, "items": 1},
                   "classes_by_agreement": [{"class": EVIL, "items": 1, "mean_item_agreement": 0.5}],
                   "slices_by_agreement": {"camera": [{"value": EVIL, "items": 1, "hlp": 0.5}]},
                   "annotators_by_agreement": [{"annotator": EVIL, "labels": 1}]},
    }


def test_a_record_holding_script_renders_as_text():
    page = render_html(_report_with(EVIL), {"nodes": [
        {"id": "a:1", "kind": "artifact", "type": "DataFile", "uri": EVIL, "properties": {}},
        {"id": "e:1", "kind": "execution", "type": "dataprep.ingest", "state": "COMPLETE", "properties": {}}],
        "edges": [{"from": "a:1", "to": "e:1"}]})
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5   # sample, stratum, class, ...
    assert not re.search(r"<img\b", page)
    # self-contained: nothing to fetch (no src/href to another place, a CSP that forbids it)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "default-src 'none'" in page


def test_the_chart_engine_started_on_a_thread_leaves_charts_working():
    """run() starts vl-convert's engine on a thread while the job runs; the report's charts,
    drawn later on the main thread, use it."""
    thread = start_chart_engine()
    assert thread.daemon and thread.name == "dataprep-chart-engine"
    thread.join(60)
    assert not thread.is_alive()
    svg = vega_lite_svg({"data": {"values": [{"a": "x", "b": 3}]}, "mark": "bar",
                         "encoding": {"x": {"field": "a", "type": "nominal"}, "y": {"field": "b", "type": "quantitative"}}})
    assert svg.startswith("<svg") and ET.fromstring(svg).tag.endswith("svg")


def test_layered_layout_puts_each_node_after_its_parents():
    pos = layered_layout(["in", "stage", "out", "other"], [("in", "stage"), ("stage", "out"), ("in", "out")])
    assert pos["in"][0] == 0 and pos["stage"][0] == 1 and pos["out"][0] == 2 and pos["other"][0] == 0


def test_weakest_per_slice_is_a_pandas_sort_and_head():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"example_id": [f"e{i:03d}" for i in range(300)],
                       SLICE: rng.choice(["a", "b", "c"], 300), SCORE: rng.choice([0.0, 0.33, 0.5, 0.6], 300),
                       REASON: "low_agreement"})
    got = weakest_per_slice(pa.Table.from_pandas(df, preserve_index=False), 7).to_pandas()
    want = (df.sort_values([SLICE, SCORE, "example_id"]).groupby(SLICE).head(7)
            .sort_values([SCORE, "example_id"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(got, want)


def test_review_rows_picks_ties_and_low_agreement():
    batch = pa.RecordBatch.from_pydict({"example_id": ["a", "b", "c", "d"], "cam": ["x", "y", None, "x"]})
    out = review_rows(batch, np.array([1.0, 0.5, 0.5, np.nan]), np.array([False, False, True, False]), None,
                      np.array([True, True, True, False]), ReviewSpec(max_agreement=0.67, slice_by="cam"))
    assert out.column("example_id").to_pylist() == ["b", "c"]
    assert out.column(REASON).to_pylist() == ["low_agreement", "tie"]
    assert out.column(SCORE).to_pylist() == [0.5, 0.0] and out.column(SLICE).to_pylist() == ["y", "<null>"]


# ---- end to end on the demo data ------------------------------------------------------------

@contextlib.contextmanager
def _library_logs():
    """Every log record of the block, at INFO and above, as text: what `dataprep run --verbose`
    shows (the CLI may have turned the libraries' loggers down earlier in the session)."""
    records: list = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(f"{record.name}: {record.getMessage()}")
    names = ["", "apache_beam", "absl", "tensorflow", "tensorflow_transform", "tfx_bsl"]
    levels = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger()
    root.addHandler(handler)
    for n in names:
        logging.getLogger(n).setLevel(logging.INFO)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vi")
    cfg = example_config(folder, rows=600).model_copy(deep=True)
    cfg.labels.review.per_slice = 10_000          # no cap: the queue is then a plain filter
    cfg.report.max_slice_values = 2               # cameras and lines have more: some fold into <other>
    out = tmp_path_factory.mktemp("out")
    with _library_logs() as logs:
        summary = run(cfg, output=str(out), store=str(out / "m.sqlite"))
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return {"cfg": cfg, "summary": summary, "report": report, "out": str(out), "logs": logs, "data": str(folder)}


def test_the_run_logs_none_of_the_warnings_the_project_caused(demo):
    assert any("apache_beam" in line for line in demo["logs"])      # the capture works: Beam logs at INFO
    for message in ("Converting string literal type hint to Any", "No iterator is returned by the process method",
                    "has no shape"):
        found = [line for line in demo["logs"] if message in line]
        assert not found, found[:3]


def _rows_with_values(demo) -> pd.DataFrame:
    """Every output row (splits, quarantine but ingest's, duplicates) with where it went and
    the metadata values of its line in the input file, read with the csv module."""
    root = demo["summary"]["output"]
    splits = pd.concat([pq.read_table(p).to_pandas().assign(split=os.path.basename(os.path.dirname(p)))
                        for p in glob.glob(os.path.join(root, "raw", "*", "*.parquet"))])
    quarantine = pq.read_table(os.path.join(root, "quarantine")).to_pandas()
    quarantine = quarantine[quarantine["stage"] != "ingest"]
    duplicates = pq.read_table(os.path.join(root, "duplicates")).to_pandas()
    frames = [splits.assign(dest="clean", reason=None)[["_source", "_row", "dest", "reason", "defect",
                                                          "label_agreement", "split"]],
              quarantine.assign(dest="quarantined")[["_source", "_row", "dest", "reason"]],
              duplicates.assign(dest="duplicates")[["_source", "_row", "dest"]]]
    rows = pd.concat(frames, ignore_index=True)
    lines = {}
    for source in rows["_source"].unique():
        with open(source, newline="", encoding="utf-8") as f:
            text = f.read().split("\n")
        header = next(csv.reader([text[0]]))
        lines[source] = (header, text)
    values = []
    for source, row in zip(rows["_source"], rows["_row"]):
        header, text = lines[source]
        fields = next(csv.reader([text[row - 1]]))
        assert len(fields) == len(header)
        values.append({c: (v if v != "" else "<null>") for c, v in zip(header, fields)})
    return pd.concat([rows, pd.DataFrame(values)[demo["cfg"].schema.metadata]], axis=1)


def _expected_slice(group: pd.DataFrame) -> dict:
    clean = group[group["dest"] == "clean"]
    reasons = group["reason"].dropna().value_counts()
    return {"rows": len(group), "clean": len(clean), "quarantined": int((group["dest"] == "quarantined").sum()),
            "duplicates": int((group["dest"] == "duplicates").sum()),
            "reasons": {r: int(n) for r, n in reasons.items()},
            "labels": {k: int(n) for k, n in clean["defect"].value_counts().items()},
            "agreement": clean["label_agreement"].mean(),
            "splits": {s: int((clean["split"] == s).sum()) for s in ("train", "dev", "test")}}


def test_metadata_slices_equal_a_pandas_groupby_of_the_outputs(demo):
    frame = _rows_with_values(demo)
    section = demo["report"]["metadata_slices"]
    k = section["max_values"]
    assert k == 2 and list(section["columns"]) == ["factory", "line", "camera"]
    folded = 0
    for column, got_rows in section["columns"].items():
        sizes = frame.groupby(column).size().reset_index(name="n")
        top = sizes.sort_values(["n", column], ascending=[False, True])[column].head(k).tolist()
        keyed = frame.assign(slice=frame[column].where(frame[column].isin(top), "<other>"))
        expected = {v: _expected_slice(g) for v, g in keyed.groupby("slice")}
        assert [r["value"] for r in got_rows] == top + (["<other>"] if len(sizes) > k else [])
        for r in got_rows:
            want = expected[r["value"]]
            assert (r["rows"], r["clean"], r["quarantined"], r["duplicates"]) == (
                want["rows"], want["clean"], want["quarantined"], want["duplicates"]), (column, r["value"])
            assert {k_: v["rows"] for k_, v in r["quarantine_by_reason"].items()} == want["reasons"]
            assert r["quarantine_share"] == pytest.approx(want["quarantined"] / want["rows"])
            assert {k_: v["rows"] for k_, v in r["label_mix"].items()} == want["labels"]
            assert r["label_agreement"]["value"] == pytest.approx(want["agreement"], abs=1e-12)
            assert r["label_agreement"]["items"] == want["clean"]
            assert r["splits"] == want["splits"] and sum(r["splits"].values()) == r["clean"], (column, r["value"])
        if len(sizes) > k:
            folded += 1
            assert got_rows[-1]["values"] == len(sizes) - k
    assert folded >= 2                                    # line and camera have more than 2 values
    total = sum(r["rows"] for r in section["columns"]["camera"])
    rows = demo["summary"]["rows"]
    ingest = sum(demo["report"]["quarantine_reasons"].get("ingest", {}).values())
    assert total == rows["input"] - ingest == len(frame)
    page = open(os.path.join(demo["summary"]["output"], "report.html"), encoding="utf-8").read()
    part = page[page.index('id="slices"'):page.index('id="review"')]
    assert part.count("<svg") >= 3 * 3 and part.count('class="metadata-slice"') == 3 and "&lt;other&gt;" in part
    head = part[part.index('class="metadata-slice"'):]
    head = head[:head.index("</thead>")]
    assert "<th>train</th><th>dev</th><th>test</th>" in head and "<th>clean</th>" not in head   # where rows went


def test_review_queue_is_the_pandas_filter_of_the_outputs(demo):
    root = demo["summary"]["output"]
    splits = pd.concat([pq.read_table(p).to_pandas().assign(split=os.path.basename(os.path.dirname(p)))
                        for p in glob.glob(os.path.join(root, "raw", "*", "*.parquet"))])
    quarantine = pq.read_table(os.path.join(root, "quarantine")).to_pandas()
    ties = quarantine[quarantine["reason"] == "label_tie"]
    tied_ids = {json.loads(r)["image_id"] for r in ties["record"]}
    weak = splits[splits["label_agreement"] < 0.67]
    review = pq.read_table(os.path.join(root, "review", "part-00000-of-00001.parquet")).to_pandas()
    assert set(review["image_id"]) == set(weak["image_id"]) | tied_ids
    assert len(review) == len(weak) + len(tied_ids) > 0
    assert set(review.loc[review[REASON] == "tie", "image_id"]) == tied_ids
    # weakest first, and every queued example keeps its place: nothing left a split
    assert list(review[SCORE]) == sorted(review[SCORE])
    assert set(weak["image_id"]) <= set(splits["image_id"])
    rows = demo["summary"]["rows"]
    assert rows["input"] == rows["train"] + rows["dev"] + rows["test"] + rows["quarantined"] + rows["duplicates"]
    assert demo["report"]["review"]["queued"] == len(review)
    assert {"annotations", "camera", "factory", "line"} <= set(review.columns)
    csv = pd.read_csv(os.path.join(root, "review", "review.csv"))
    assert list(csv["image_id"]) == list(review["image_id"])


# Label Studio's "basic JSON format" for importing tasks (labelstud.io/guide/tasks and
# /guide/predictions): a list of tasks, each with a `data` object; pre-annotations go in
# `predictions`, each with a `result` list of regions {from_name, to_name, type, value},
# `choices` regions holding {"choices": [label, ...]}.
LABEL_STUDIO_TASKS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object", "required": ["data"],
        "properties": {
            "data": {"type": "object", "minProperties": 1},
            "predictions": {"type": "array", "items": {
                "type": "object", "required": ["result"],
                "properties": {
                    "model_version": {"type": "string"}, "score": {"type": "number"},
                    "result": {"type": "array", "items": {
                        "type": "object", "required": ["from_name", "to_name", "type", "value"],
                        "properties": {"from_name": {"type": "string"}, "to_name": {"type": "string"},
                                       "type": {"const": "choices"},
                                       "value": {"type": "object", "required": ["choices"], "properties": {
                                           "choices": {"type": "array", "items": {"type": "string"}}}}}}}}}},
            "annotations": {"type": "array"},
        },
    },
}


def test_label_studio_tasks_follow_its_import_format(demo):
    import jsonschema

    folder = os.path.join(demo["summary"]["output"], "review")
    with open(os.path.join(folder, LABEL_STUDIO)) as f:
        tasks = json.load(f)
    jsonschema.validate(tasks, LABEL_STUDIO_TASKS_SCHEMA)
    assert len(tasks) == demo["report"]["review"]["queued"]
    config = ET.parse(os.path.join(folder, LABEL_STUDIO_CONFIG)).getroot()
    choices = config.find("Choices")
    names = {el.get("name") for el in config.iter() if el.get("name")}
    variables = {el.get("value")[1:] for el in config.iter() if (el.get("value") or "").startswith("$")}
    classes = {c.get("value") for c in choices.iter("Choice")}
    assert classes == {"none", "scratch", "discoloration"}
    for t in tasks:
        assert variables <= set(t["data"])                       # every $variable of the config is there
        for p in t["predictions"]:
            for r in p["result"]:
                assert {r["from_name"], r["to_name"]} <= names and set(r["value"]["choices"]) <= classes


def test_report_html_is_written_and_rendered_again(demo, capsys, tmp_path):
    root = demo["summary"]["output"]
    path = os.path.join(root, "report.html")
    with open(path, encoding="utf-8") as f:
        page = f.read()
    rows = demo["summary"]["rows"]
    # counts with thousands separators (issue 30: 14,568, not 14568)
    assert f'data-funnel="input">{rows["input"]:,}<' in page and f'data-funnel="train">{rows["train"]:,}<' in page
    assert "," in f'{rows["input"]:,}'        # the demo's input is in the thousands: the format is tested
    assert 'id="lineage-graph"' in page and "dataprep.transform" in page
    assert page.count("<svg") >= 5 and "<script" not in page
    os.remove(path)
    code, out, err = run_cli(["report", root], capsys)
    assert code == 0, err
    assert out.strip() == path and os.path.exists(path)
    os.remove(path)
    code, out, err = run_cli(["report", demo["summary"]["run_id"], "--store", os.path.join(demo["out"], "m.sqlite")],
                             capsys)
    assert code == 0 and out.strip() == path, err
    code, out, err = run_cli(["report", "no-such-run", "--store", os.path.join(demo["out"], "m.sqlite")], capsys)
    assert code == 2 and "no-such-run" in err


def test_review_rows_with_dawid_skene_posteriors():
    batch = pa.RecordBatch.from_pydict({"example_id": ["a", "b", "c"]})
    out = review_rows(batch, np.array([1.0, 1.0, 0.5]), np.array([False, False, False]), np.array([0.99, 0.6, 0.9]),
                      np.array([True, True, True]), ReviewSpec(max_agreement=0.67, min_posterior=0.8))
    assert out.column("example_id").to_pylist() == ["b", "c"]
    assert out.column(REASON).to_pylist() == ["low_posterior", "low_agreement"]
    assert out.column(SCORE).to_pylist() == [0.6, 0.9]     # the posterior is the score


def test_near_duplicate_leakage_is_in_the_page():
    report = _report_with("a,b")
    report["near_dedup"] = {"action": "none", "threshold": 0.8, "bands": 14, "rows": 9, "verified_pairs": 31,
                            "leakage": {"across": {"train/dev": 4, "train/test": 19, "dev/test": 2},
                                        "within": {"train": 5, "dev": 0, "test": 1}, "cross_split_pairs": 25}}
    page = render_html(report)
    assert '<b id="near-dedup-leakage">25</b>' in page
    for cell in ("train/test", ">19<", "verified_pairs", ">31<"):
        assert cell in page, cell
    assert "no near-duplicate search" in render_html(_report_with("a,b"))


def test_counts_slices_and_missing_values_as_a_reader_wants_them():
    """Issue 30's rough edges in the page: 14,568 not 14568, slice values in natural order
    (numbers as numbers) with where their rows went per split, missing values per feature."""
    from pipeline.html_slices import natural_key

    report = _report_with("a,b")
    report["rows"] = {"input": 14568, "clean": 14000, "quarantined": 500, "duplicates": 68, "train": 8400,
                      "dev": 2800, "test": 2800}

    def value(v, rows, train):
        return {"value": v, "rows": rows, "clean": rows, "quarantined": 0, "duplicates": 0,
                "splits": {"train": train, "dev": rows - train, "test": 0}, "quarantine_share": 0.0,
                "quarantine_by_reason": {}, "label_mix": {}, "label_agreement": {"value": None, "items": 0}}

    report["metadata_slices"] = {"max_values": 20, "columns": {"base_age": [
        value("10", 3000, 2000), value("6", 2500, 1500), value("<other>", 50, 40), value("8", 1200, 1000),
        value("12", 1000, 900)]}}
    report["features"] = {"columns": {"age": {"transform": "zscore", "mean": 10.5}}, "vocabularies": {}}
    report["feature_missing"] = {"age": {"train": 1204, "dev": 3, "test": 0}}
    page = render_html(report)
    assert 'data-funnel="input">14,568<' in page and "input 14,568 = train 8,400 + dev 2,800" in page
    part = page[page.index('id="slices"'):page.index('id="review"')]
    order = [v for v in ("<td>6</td>", "<td>8</td>", "<td>10</td>", "<td>12</td>", "<td>&lt;other&gt;</td>")]
    assert sorted(order, key=part.index) == order                    # 6, 8, 10, 12, then <other>
    assert "<th>train</th><th>dev</th><th>test</th>" in part and '<td class="n">2,000</td>' in part
    features = page[page.index('id="features"'):page.index('id="lineage"')]
    assert '<td class="n">1,207</td>' in features and "train 1,204 · dev 3 · test 0" in features
    assert sorted(["cam-10", "cam-2", "<null>", "Cam-3"], key=natural_key) == ["cam-2", "Cam-3", "cam-10", "<null>"]
