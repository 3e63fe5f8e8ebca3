"""Label Studio's JSON, read and written without a server: the export parser on a real
export (tests/data/label_studio_export.json, captured from label-studio 1.23.2) and on
variants of it; the review queue's tasks and labelling config; the launch-time checks of an
export source; the commands' errors that need no server. The round trip against a real
Label Studio is tests/integration/test_label_studio.py."""

from __future__ import annotations

import copy
import json
import os

import pytest

from pipeline.config import ConfigError, parse_config
from tests.conftest import TESTS, run_cli
from transforms.labels.label_studio import (ExportError, MISSING_FIELD, NO_CHOICE, RUN_ID, SEVERAL_CHOICES,
                                            annotator_of, choice_controls, earlier_predictions, export_annotations,
                                            export_run_ids, label_studio_config, label_studio_tasks, load_export)

EXPORT = os.path.join(TESTS, "data", "label_studio_export.json")


def _export() -> list:
    with open(EXPORT, encoding="utf-8") as f:
        return json.load(f)


def _bytes(tasks) -> bytes:
    return json.dumps(tasks).encode()


def test_a_real_export_gives_one_row_per_clear_label():
    """Six tasks as Label Studio 1.23.2 exported them: two users (numeric ids 3, 4) on the
    first, a cancelled and a kept one on the second, none on the third, an empty submission,
    two choices at once, and a task whose example no run knows."""
    with open(EXPORT, "rb") as f:
        rows, faults, counts = export_annotations(f.read(), "round-2.json")
    assert rows.to_pylist() == [
        {"id": "img-01-000013", "annotator": "3", "label": "scratch", "_source": "round-2.json", "_row": 1},
        {"id": "img-01-000013", "annotator": "4", "label": "none", "_source": "round-2.json", "_row": 2},
        {"id": "img-01-000186", "annotator": "4", "label": "discoloration", "_source": "round-2.json", "_row": 4},
        {"id": "img-99-999999", "annotator": "3", "label": "scratch", "_source": "round-2.json", "_row": 7}]
    assert counts == {"tasks": 6, "annotations": 7, "cancelled": 1, "unannotated_tasks": 1}
    by_reason = {f["reason"]: json.loads(f["record"]) for f in faults.to_pylist()}
    assert set(by_reason) == {NO_CHOICE, SEVERAL_CHOICES}
    assert by_reason[SEVERAL_CHOICES]["choices"] == ["none", "scratch"]
    assert by_reason[NO_CHOICE]["example_id"] == "img-02-000020" and by_reason[NO_CHOICE]["annotator"] == "3"
    assert set(faults.column("stage").to_pylist()) == {"labels"} and faults.column("_row").to_pylist() == [5, 6]
    # the unknown example is read like any other: the join with the examples makes it a fault


def test_completed_by_as_a_user_object_gives_the_email():
    """Some exports carry the user as an object: the email is the annotator, else the id."""
    tasks = _export()
    for t in tasks:
        for a in t["annotations"]:
            a["completed_by"] = {"id": a["completed_by"], "email": f"annotator{a['completed_by']}@example.com",
                                 "first_name": "", "last_name": ""}
    tasks[0]["annotations"][1]["completed_by"]["email"] = ""
    rows, _, _ = export_annotations(_bytes(tasks), "x")
    assert rows.column("annotator").to_pylist() == ["annotator3@example.com", "4", "annotator4@example.com",
                                                    "annotator3@example.com"]
    assert [annotator_of(v) for v in (7, "a@b", None, {"id": None}, True)] == ["7", "a@b", None, None, None]


def test_id_field_from_name_and_missing_fields():
    tasks = _export()
    for t in tasks:
        t["data"]["image"] = t["data"].pop("example_id")
    tasks[0]["data"]["image"] = 17                            # a number: read as text
    tasks[1]["annotations"][1]["completed_by"] = None          # no annotator
    rows, faults, _ = export_annotations(_bytes(tasks), "x", id_field="image")
    assert rows.column("id").to_pylist() == ["17", "17", "img-99-999999"]
    assert faults.column("reason").to_pylist() == [MISSING_FIELD, NO_CHOICE, SEVERAL_CHOICES]
    rows, faults, _ = export_annotations(_bytes(tasks), "x")   # no such key: every live annotation is a fault
    assert rows.num_rows == 0 and set(faults.column("reason").to_pylist()) == {MISSING_FIELD}
    rows, faults, _ = export_annotations(_bytes(_export()), "x", from_name="other")   # another control's choices
    assert rows.num_rows == 0 and set(faults.column("reason").to_pylist()) == {NO_CHOICE}
    assert faults.num_rows == 6


def test_only_the_choices_of_the_named_control_count():
    tasks = _export()
    extra = {"from_name": "quality", "to_name": "item", "type": "choices", "value": {"choices": ["blurry"]}}
    note = {"from_name": "note", "to_name": "item", "type": "textarea", "value": {"text": ["look again"]}}
    tasks[0]["annotations"][0]["result"] += [extra, note]
    assert choice_controls(tasks) == ["label", "quality"]
    rows, faults, _ = export_annotations(_bytes(tasks), "x", from_name="label")
    assert rows.num_rows == 4 and faults.num_rows == 2
    rows, faults, _ = export_annotations(_bytes(tasks), "x")   # any control: that annotation has two choices
    assert rows.num_rows == 3 and faults.column("reason").to_pylist()[0] == SEVERAL_CHOICES


def test_what_is_not_an_export_is_refused():
    for data, message in ((b"{", "not JSON"), (b'{"a": 1}', "a list of tasks"), (b"[1, 2]", "a list of tasks"),
                          (b'[{"id": 1, "label": "x"}]', "JSON_MIN")):
        with pytest.raises(ExportError, match=message):
            load_export(data, "f.json")
    assert load_export(b"[]", "f.json") == []
    rows, faults, counts = export_annotations(b"[]", "f.json")
    assert rows.num_rows == faults.num_rows == 0 and counts["tasks"] == 0
    assert export_run_ids(_export()) == ["20261204T192250Z-3bbb8d"]


def test_tasks_show_the_item_and_hide_the_earlier_labels():
    rows = [{"brightness": 120.5, "factory": "F1", "comment": float("nan")}, {"brightness": 3.0, "factory": "F2"}]
    earlier = [{"insp-06": "discoloration", "insp-09": "scratch", "insp-01": "discoloration"}, {}]
    tasks = label_studio_tasks(rows, earlier, ["brightness", "factory", "comment"], "run-1", ["e1", "e2"])
    data = tasks[0]["data"]
    assert data == {"example_id": "e1", "brightness": 120.5, "factory": "F1", "comment": None,
                    "dataprep_item": "brightness: 120.5\nfactory: F1\ncomment: nan", RUN_ID: "run-1"}
    assert not any("insp" in str(v) or "discoloration" in str(v) for v in data.values())
    preds = tasks[0]["predictions"]
    assert [(p["model_version"], p["score"], p["result"][0]["value"]["choices"]) for p in preds] == [
        ("run-1", 0.666667, ["discoloration"]), ("run-1", 0.333333, ["scratch"])]
    assert tasks[1]["predictions"] == [] and earlier_predictions({}, "r") == []
    config = label_studio_config(["none", "scratch", "dis<col>"])
    assert '$dataprep_item' in config and '<Choice value="dis&lt;col&gt;"/>' in config
    assert 'name="label" toName="item"' in config


def _ls_config(tmp_path, **source):
    (tmp_path / "d.csv").write_text("id,x\na,1\n")
    (tmp_path / "a.csv").write_text("example_id,annotator,label\na,u,p\n")
    return parse_config({"name": "t", "inputs": [{"path": str(tmp_path / "d.csv"), "format": "csv"}],
                         "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float"}},
                         "labels": {"annotations": [{"path": str(tmp_path / "a.csv"), "format": "csv"},
                                                    {"path": str(tmp_path / "e.json"), "format": "label_studio",
                                                     **source}]}})


def test_an_export_source_is_checked_before_the_run(tmp_path):
    from pipeline.inputs import check_input_columns, match_inputs

    tasks = _export()
    tasks[0]["annotations"][0]["result"].append(
        {"from_name": "quality", "to_name": "item", "type": "choices", "value": {"choices": ["blurry"]}})
    (tmp_path / "e.json").write_text(json.dumps(tasks))
    cfg = _ls_config(tmp_path)
    files = match_inputs(cfg)
    assert [f.where for f in files] == ["inputs[0]", "labels.annotations[0]", "labels.annotations[1]"]
    with pytest.raises(ConfigError, match=r"^labels\.annotations\[1\]\.from_name: .*\['label', 'quality'\]"):
        check_input_columns(cfg, files)
    check_input_columns(_ls_config(tmp_path, from_name="label"), files)
    with pytest.raises(ConfigError, match=r"labels\.annotations\[1\]\.from_name: .* no choices of control 'x'"):
        check_input_columns(_ls_config(tmp_path, from_name="x"), files)
    (tmp_path / "e.json").write_text('{"not": "an export"}')
    with pytest.raises(ConfigError, match=r"^labels\.annotations\[1\]\.path: .*a list of tasks"):
        check_input_columns(cfg, files)


def test_config_of_sources(tmp_path):
    """One mapping keeps its meaning and hash; a list is rounds; keys belong to their format."""
    import hashlib

    (tmp_path / "d.csv").write_text("id,x\na,1\n")
    base = {"name": "t", "inputs": [{"path": "d.csv", "format": "csv"}],
            "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float"}},
            "labels": {"annotations": {"path": "ann.csv", "id": "id"}}}
    cfg = parse_config(copy.deepcopy(base))
    dumped = cfg.model_dump(mode="json", by_alias=True)
    for key in ("guard", "report", "expect"):
        dumped.pop(key)
    dumped["clean"].pop("near_dedup"), dumped["clean"].pop("allow_non_finite"), dumped["labels"].pop("review")
    dumped["labels"].pop("ordinal"), dumped["split"].pop("sticky")     # keys added later, hashed only when set
    for entry in dumped["inputs"] + [dumped["labels"]["annotations"]]:
        entry["csv"].pop("encoding"), entry.pop("jsonl")
    dumped["output"].pop("formats"), dumped["output"].pop("statistics")
    for key in ("id_field", "from_name"):          # what a source was before label_studio existed
        dumped["labels"]["annotations"].pop(key)
    assert cfg.config_hash == hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()
    assert cfg.labels.annotation_sources[0].path == "ann.csv"
    listed = copy.deepcopy(base)
    listed["labels"]["annotations"] = [base["labels"]["annotations"], {"path": "r2.json", "format": "label_studio"}]
    two = parse_config(listed)
    assert [a.format for a in two.labels.annotation_sources] == ["csv", "label_studio"]
    assert two.config_hash != cfg.config_hash
    named = copy.deepcopy(listed)
    named["labels"]["annotations"][1]["from_name"] = "label"
    assert parse_config(named).config_hash != two.config_hash
    for value, message in (
            ([], "labels.annotations: an empty list"),
            ([{"path": "a.json", "format": "label_studio", "label": "y"}], "labels.annotations.0.label: not a key "
                                                                          "of format label_studio"),
            ({"path": "a.csv", "id_field": "k"}, "labels.annotations.id_field: only for format: label_studio"),
            ([{"path": "a.csv"}, {"format": "csv"}], "labels.annotations.1.path: required"),
            ({"path": "a.x", "format": "xml"}, "labels.annotations.format: Input should be")):
        bad = copy.deepcopy(base)
        bad["labels"]["annotations"] = value
        with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("[", r"\[")):
            parse_config(bad)


def test_commands_fail_in_one_line_without_a_server(tmp_path, capsys, monkeypatch):
    """No token: exit 2; nothing listening: exit 1; no review queue: exit 2. (401 and an
    unknown project need a server: the integration test.)"""
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code, _, err = run_cli(["review", "pull", "1", "--label-studio", "http://127.0.0.1:9", "-o",
                            str(tmp_path / "x.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and "LABEL_STUDIO_API_KEY" in err
    monkeypatch.setenv("MY_TOKEN", "abc")
    code, _, err = run_cli(["review", "pull", "1", "--label-studio", "http://127.0.0.1:9", "-o",
                            str(tmp_path / "x.json"), "--token-env", "MY_TOKEN"], capsys)
    assert code == 1 and err.count("\n") == 1 and "cannot reach Label Studio at http://127.0.0.1:9" in err
    code, _, err = run_cli(["review", "push", str(tmp_path), "--label-studio", "http://127.0.0.1:9",
                            "--token-env", "MY_TOKEN"], capsys)
    assert code == 2 and "has no review queue" in err
    code, _, err = run_cli(["review", "push", "r1", "--label-studio", "localhost:8080", "--token-env", "MY_TOKEN"],
                           capsys)
    assert code == 2 and "--label-studio: expected the server's URL" in err
    assert not os.path.exists(tmp_path / "x.json")


def test_wide_form_queue_files_hide_the_annotators_columns(tmp_path):
    """review_files (build.py) shows the data columns and metadata, never the label or the
    annotators' columns; the earlier labels come from those columns as predictions."""
    import pyarrow as pa

    from pipeline.build import review_files
    from pipeline.layout import Layout
    from transforms.labels.review import LABEL_STUDIO, LABEL_STUDIO_CONFIG, REASON, SCORE, SLICE, write_review_files

    (tmp_path / "d.csv").write_text("id,x,site,a1,a2\nk1,1,s,p,q\n")
    cfg = parse_config({"name": "t", "inputs": [{"path": str(tmp_path / "d.csv"), "format": "csv"}],
                        "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float"},
                                   "metadata": ["site"]},
                        "labels": {"annotators": ["a1", "a2"], "review": {}}})
    files = review_files(cfg, Layout(str(tmp_path / ".staging-20260101T000000Z-abcdef")))
    assert files.shown == ("x", "site") and files.run_id == "20260101T000000Z-abcdef"
    os.makedirs(tmp_path / "review")
    files = files.__class__(**{**files.__dict__, "directory": str(tmp_path / "review")})
    table = pa.table({"id": ["k1"], "x": [1.0], "site": ["s"], "a1": ["p"], "a2": ["q"], "y": [None],
                      "example_id": ["k1"], REASON: ["tie"], SCORE: [0.0], SLICE: ["<all>"]})
    report = write_review_files((table, {"tie": 1}), files)
    assert report["queued"] == 1
    with open(tmp_path / "review" / LABEL_STUDIO) as f:
        [task] = json.load(f)
    assert set(task["data"]) == {"example_id", "x", "site", "dataprep_item", RUN_ID}
    assert sorted(p["result"][0]["value"]["choices"][0] for p in task["predictions"]) == ["p", "q"]
    with open(tmp_path / "review" / LABEL_STUDIO_CONFIG) as f:
        assert '<Choice value="p"/>' in f.read()        # no labels.classes: the labels seen
