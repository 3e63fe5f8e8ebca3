"""Config validation: a bad config exits 2 with one line naming the field."""

from __future__ import annotations

import os

import pytest
import yaml

from pipeline.build import feature_specs
from pipeline.config import ConfigError, parse_config
from tests.conftest import TESTS, run_cli

GOOD = {
    "name": "t",
    "inputs": [{"path": "data.csv", "format": "csv"}],
    "schema": {"label": "y", "columns": {"x": "float", "y": "string"}},
    "split": {"fractions": {"train": 0.6, "dev": 0.2, "test": 0.2}},
    "features": {"x": "zscore"},
}


def _with(path, value):
    import copy

    cfg = copy.deepcopy(GOOD)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("mutation, expected", [
    ((("bogus",), 1), "bogus: unknown key"),
    ((("schema", "bogus"), 1), "schema.bogus: unknown key"),
    ((("split", "fractions"), {"train": 0.6, "dev": 0.2, "test": 0.1}), "split.fractions: must sum to 1, got 0.9"),
    ((("schema", "label"), "nope"), "schema.label: column 'nope' is not in schema.columns"),
    ((("features",), {"x": "sqrt"}), "features.x: unknown feature transform 'sqrt'"),
    ((("features",), {"y": "zscore"}), "features.y: zscore needs a numeric column"),
    ((("features",), {"x": "bucketize"}), "features.x: bucketize needs a positive count"),
    ((("features",), {"x": "zscore", "tf_compat_v1": "yes"}), "features.tf_compat_v1: must be true or false"),
    ((("features",), {"tf_compat_v1": False}), "features.tf_compat_v1: set, but no feature is"),
    ((("clean",), {"rules": [{"column": "z", "min": 0}]}), "clean.rules[0].column: unknown column 'z'"),
    ((("clean",), {"rules": [{"column": "x"}]}), "clean.rules.0: a rule needs at least one check"),
    ((("clean",), {"dedup": {"keys": ["q"]}}), "clean.dedup.keys: unknown column 'q'"),
    ((("split", "stratify_by"), ["q"]), "split.stratify_by: unknown column 'q'"),
    ((("output", "shards"), 0), "output.shards: Input should be greater than or equal to 1"),
    ((("split", "fractions"), {"a": 0.5, "b": 0.5}), "split.fractions: features are analysed on the train split"),
    ((("split", "group_by"), "nope"), "split.group_by: unknown column 'nope'"),
    ((("inputs",), [{"path": "a.csv", "format": "xls"}]), "inputs.0.format: Input should be 'csv', 'jsonl' or 'parquet'"),
    ((("output", "formats"), ["tfrecord"]), "output.formats: must include parquet"),
    ((("output", "formats"), ["parquet", "parquet"]), "output.formats: lists a format twice"),
    ((("output", "formats"), ["parquet", "csv"]), "output.formats.1: Input should be 'parquet' or 'tfrecord'"),
    ((("output", "statistics"), "maybe"), "output.statistics: Input should be a valid boolean"),
])
def test_bad_config_names_the_field(mutation, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(_with(*mutation))
    assert str(e.value).startswith(expected), str(e.value)
    assert "\n" not in str(e.value)


def test_good_config_parses_with_defaults():
    cfg = parse_config(GOOD, base_dir="/data")
    assert cfg.stratify_by == ["y"]
    assert cfg.split.seed == 42
    assert cfg.tf_compat_v1 is True and [s.column for s in feature_specs(cfg)] == ["x"]
    assert parse_config(_with(("features", "tf_compat_v1"), False)).tf_compat_v1 is False
    assert cfg.resolve("data.csv") == "/data/data.csv"
    assert cfg.resolve("gs://b/x.csv") == "gs://b/x.csv"
    assert [s.output_name for s in feature_specs(cfg)] == ["x_xf"]
    assert len(cfg.config_hash) == 64


def test_metadata_columns_default_to_string():
    cfg = parse_config(_with(("schema", "metadata"), ["camera"]))
    assert cfg.column_types == {"x": "float", "y": "string", "camera": "string"}


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_cli_validate_exit_2_one_line(tmp_path, capsys):
    path = _write(tmp_path, _with(("split", "fractions"), {"train": 0.5, "test": 0.2}))
    code, out, err = run_cli(["validate", path], capsys)
    assert code == 2
    assert err.strip() == "dataprep: error: split.fractions: must sum to 1, got 0.7"
    assert "Traceback" not in err


def test_cli_missing_input_files_exit_2(tmp_path, capsys):
    path = _write(tmp_path, GOOD)  # data.csv does not exist next to it
    for command in (["validate", path], ["run", path, "--output", str(tmp_path / "o")]):
        code, _, err = run_cli(command, capsys)
        assert code == 2
        assert err.strip().startswith("dataprep: error: inputs[0].path: no file matches ")


def test_cli_validate_ok(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("x,y\n1,a\n")
    code, out, _ = run_cli(["validate", _write(tmp_path, GOOD)], capsys)
    assert code == 0 and "ok (1 input file(s))" in out


def test_cli_bad_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = run_cli(["validate", str(bad)], capsys)
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["validate", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "cannot read config" in err


def test_cli_unknown_argument_exit_2(capsys):
    code, _, err = run_cli(["lineage", "x", "--bogus"], capsys)
    assert code == 2 and "unrecognized arguments: --bogus" in err


def test_example_configs_are_valid():
    from pipeline.config import load_config

    for path in [os.path.join(TESTS, "configs", "adult.yaml"),
                 os.path.join(os.path.dirname(TESTS), "examples", "visual_inspection", "config.yaml")]:
        assert load_config(path).name


def test_cli_missing_column_in_header_exit_2(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("x,z\n1,a\n")           # no label column y
    path = _write(tmp_path, GOOD)
    for command in (["validate", path], ["run", path, "--output", str(tmp_path / "o")]):
        code, _, err = run_cli(command, capsys)
        assert code == 2
        assert err.strip().startswith("dataprep: error: inputs[0].path: ") and "has no column(s) ['y']" in err


def test_cli_version(capsys):
    from pipeline.version import package_version

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.startswith(f"dataprep {package_version()} (code {package_version()}")


def test_cli_missing_column_in_annotations_names_the_field(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("id,x\nk1,1\n")
    (tmp_path / "ann.csv").write_text("id,who,label\nk1,a,y\n")         # no column `annotator`
    cfg = {"name": "t", "inputs": [{"path": "data.csv", "format": "csv"}],
           "schema": {"id": "id", "label": "y", "columns": {"id": "string", "x": "float"}},
           "labels": {"annotations": {"path": "ann.csv", "id": "id"}}}
    code, _, err = run_cli(["validate", _write(tmp_path, cfg)], capsys)
    assert code == 2
    assert err.strip().startswith("dataprep: error: labels.annotations.path: ") and "['annotator']" in err


def test_output_formats_and_statistics_hash_only_when_they_change_the_run():
    plain = parse_config(GOOD)
    assert plain.output.formats == ["parquet"] and not plain.output.tfrecord and not plain.output.statistics
    assert plain.config_hash == "d397bdc5b32d6f31e30a1eba2777945c90ba16efb3862caa3d1aad19cb00450a"   # as before the keys
    assert parse_config(_with(("output", "formats"), ["parquet"])).config_hash == plain.config_hash
    assert parse_config(_with(("output", "statistics"), False)).config_hash == plain.config_hash
    tfrecord = parse_config(_with(("output", "formats"), ["parquet", "tfrecord"]))
    statistics = parse_config(_with(("output", "statistics"), True))
    assert tfrecord.output.tfrecord and statistics.output.statistics
    assert len({plain.config_hash, tfrecord.config_hash, statistics.config_hash}) == 3


def test_report_key_hashes_only_when_set():
    # the hash a config without `report:` had before the key existed (main before issue 16's slices)
    assert parse_config(GOOD).config_hash == "d397bdc5b32d6f31e30a1eba2777945c90ba16efb3862caa3d1aad19cb00450a"
    assert parse_config(GOOD).report.max_slice_values == 20
    with_key = parse_config(_with(("report", "max_slice_values"), 5))
    assert with_key.report.max_slice_values == 5 and with_key.config_hash != parse_config(GOOD).config_hash
    with pytest.raises(ConfigError, match=r"^report\.max_slice_values: "):
        parse_config(_with(("report", "max_slice_values"), 0))


def test_sticky_and_ordinal_hash_only_when_set():
    labelled = _with(("labels",), {"annotators": ["a", "b"], "classes": ["low", "mid", "high"]})
    labelled["schema"]["columns"].update(a="string", b="string")
    base = parse_config(labelled).config_hash
    assert parse_config(GOOD).config_hash == parse_config(_with(("split", "sticky"), False)).config_hash
    assert parse_config(GOOD).config_hash != parse_config(_with(("split", "sticky"), True)).config_hash
    off = parse_config({**labelled, "labels": {**labelled["labels"], "ordinal": False}})
    on = parse_config({**labelled, "labels": {**labelled["labels"], "ordinal": True}})
    assert off.config_hash == base != on.config_hash and on.labels.ordinal


def test_ordinal_labels_need_their_classes_in_order():
    cfg = _with(("labels",), {"annotators": ["a", "b"], "ordinal": True})
    cfg["schema"]["columns"].update(a="string", b="string")
    with pytest.raises(ConfigError, match=r"^labels\.ordinal: needs labels\.classes"):
        parse_config(cfg)
# ---- issue 35: hostile configs, encodings ------------------------------------------------------------

def _alias_bomb(levels: int = 9) -> str:
    """The probe's shape: a rule's `in:` list nesting aliases 9 wide, `levels` deep (668 bytes
    in the issue; 9**9 values once expanded)."""
    names = "abcdefghijklmnop"[:levels]
    parts = ['&a ["x","x","x","x","x","x","x","x","x"]']
    parts += [f"&{cur} [" + ",".join([f"*{prev}"] * 9) + "]" for prev, cur in zip(names, names[1:])]
    return ("name: bomb\ninputs: [{path: in.csv, format: csv}]\n"
            "schema: {label: label, columns: {label: string}}\n"
            f"clean:\n  rules:\n    - {{column: label, in: [{', '.join(parts)}]}}\n")


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert 400 < path.stat().st_size < 700
    started = time.monotonic()
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert time.monotonic() - started < 2.0      # before: 3 minutes and 3.7 GB in `run`
    assert code == 2 and err.count("\n") == 1
    assert f"{path}: YAML aliases expand it past 100,000 values (an alias bomb?)" in err
    recursive = tmp_path / "loop.yaml"
    recursive.write_text("name: &n [*n]\n")
    code, _, err = run_cli(["validate", str(recursive)], capsys)
    assert code == 2 and err == f"dataprep: error: {recursive}: a YAML alias refers to itself\n", err


def test_aliases_that_expand_a_little_are_fine(tmp_path):
    from pipeline.config import load_config

    path = tmp_path / "ok.yaml"
    path.write_text(_alias_bomb(levels=3).replace("name: bomb", "name: small"))   # 9**3 values
    cfg = load_config(str(path))
    assert len(cfg.clean.rules[0].in_) == 3


def test_a_huge_config_is_refused_before_it_is_parsed(tmp_path, capsys):
    import time

    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("name: huge\nlabels:\n  normalize:\n")
        line = "".join(f"    k{i}: v{i}\n" for i in range(1000))
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    assert path.stat().st_size > 50e6
    started = time.monotonic()
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert time.monotonic() - started < 2.0      # before: 2.5 minutes and 3.6 GB
    assert code == 2 and err.count("\n") == 1 and f"{path}: the config is 5" in err and "more than 1,048,576" in err


@pytest.mark.parametrize("mutation, expected", [
    ((("inputs",), [{"path": "d.csv", "format": "csv", "csv": {"encoding": "klingon"}}]),
     "inputs.0.csv.encoding: unknown encoding 'klingon'"),
    ((("inputs",), [{"path": "d.csv", "format": "csv", "csv": {"encoding": "base64"}}]),
     "inputs.0.csv.encoding: 'base64' is not a text encoding"),
    ((("inputs",), [{"path": "d.jsonl", "format": "jsonl", "csv": {"encoding": "latin-1"}}]),
     "csv.encoding: for a csv input; this one is jsonl (use jsonl.encoding)"),
    ((("inputs",), [{"path": "d.csv", "format": "csv", "jsonl": {"encoding": "latin-1"}}]),
     "jsonl: options for a jsonl input; this one is csv"),
])
def test_bad_encodings_name_the_field(mutation, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(_with(*mutation))
    assert expected in str(e.value)


def test_encodings_hash_only_when_set():
    """`csv.encoding` and `jsonl:` (issue 35) leave the hash of configs without them as it was
    (the values below are main's before the keys existed), and change it when set."""
    from pipeline.build import reader_spec

    annotated = _with(("labels",), {"annotations": {"path": "ann.csv", "id": "x"}})
    annotated["schema"]["id"] = "x"
    assert parse_config(GOOD).config_hash == "d397bdc5b32d6f31e30a1eba2777945c90ba16efb3862caa3d1aad19cb00450a"
    assert parse_config(annotated).config_hash == "c3f2d7b58e92a51ade2860264a984c8b7ec526a2f83cfe3616616aa2b5c0db7b"
    latin = _with(("inputs",), [{"path": "data.csv", "format": "csv", "csv": {"encoding": "latin-1"}}])
    jsonl = _with(("inputs",), [{"path": "data.jsonl", "format": "jsonl", "jsonl": {"encoding": "utf-16"}}])
    hashes = {parse_config(c).config_hash for c in (GOOD, latin, jsonl)}
    assert len(hashes) == 3
    assert reader_spec(parse_config(latin).inputs[0]).encoding == "latin-1"
    assert reader_spec(parse_config(jsonl).inputs[0]).encoding == "utf-16"
    assert reader_spec(parse_config(GOOD).inputs[0]).encoding is None
