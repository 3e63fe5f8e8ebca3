"""`dataprep init DATA` (pipeline/starter.py): a starter config from a sample of a file — the
CSV dialect, types the run accepts, id, label, metadata, features, split — on CSV, JSON lines
and Parquet of our own; a header naming a column twice is reported. And the acceptance of
issue 30: on three real files of ../shared/data, the printed config validates and runs with no
`type:*` quarantine (one shared run per file, on a slice of it); on those runs, the rough
edges: a reused run says so once, `| head` ends quietly."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config
from pipeline.starter import _delimiter, _has_header
from tests.conftest import ROOT, run_cli, shared

ADULT_NAMES = ("age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,race,sex,"
               "capital_gain,capital_loss,hours_per_week,native_country,income")


def _init(capsys, *args):
    code, out, err = run_cli(["init", *map(str, args)], capsys)
    return code, out, err


def _saved(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_header_and_delimiter_are_told_from_the_lines():
    assert _delimiter(["a\tb c,d\tx", "1\t2,5\t3"], "f.txt") == "\t"
    assert _delimiter(['a,"b;c",d', "1,2,3"], "f.csv") == ","
    assert _has_header(["age,job", "39,clerk", "50,manager"], ",")[0] is True       # a column of numbers
    assert _has_header(["39,clerk", "50,manager"], ",")[0] is False                  # a number in line 1
    assert _has_header(["ham\tsome text", "spam\tother text", "ham\tmore"], "\t")[0] is False   # ham recurs
    assert _has_header(["only one line"], ",")[0] is False


def test_a_csv_with_a_header_becomes_a_config_that_types_every_row(tmp_path, capsys):
    lines = ["record_id,score,count,active,city,comment,outcome"]
    for i in range(200):
        comment = "" if i % 9 == 0 else f"the visitor number {i} wrote something long about the shop"
        lines.append(f"r{i},{i / 7:.3f},{i % 13},{'yes' if i % 2 else 'no'},{['Oslo', 'Lima', 'Pune'][i % 3]},"
                     f"{comment},{'buy' if i % 4 else 'leave'}")
    data = tmp_path / "visits.csv"
    data.write_text("\n".join(lines) + "\n")
    code, text, err = _init(capsys, data, "--label", "outcome")
    assert code == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["schema"]["columns"] == {"record_id": "string", "score": "float", "count": "int", "active": "bool",
                                        "city": "string", "comment": "string", "outcome": "string"}
    assert cfg["schema"]["id"] == "record_id" and cfg["schema"]["label"] == "outcome"
    assert cfg["schema"]["metadata"] == ["city"]
    assert cfg["features"] == {"score": "zscore", "count": "zscore", "active": "passthrough", "city": "vocabulary",
                               "comment": "tfidf:1000"}
    assert cfg["split"]["stratify_by"] == ["outcome"]
    assert "# id: 'record_id', named like an id and unique in the sample" in text
    assert "# - {column: outcome, in: [buy, leave]}" in text          # a commented rule to start from
    code, out, err = run_cli(["validate", _saved(tmp_path, text), "--strict"], capsys)
    assert code == 0 and "quarantined: none of the sampled records" in out, out + err


def test_header_less_files_take_names_or_get_numbered_ones(tmp_path, capsys):
    data = tmp_path / "plain.data"
    data.write_text("".join(f"{i}, {'a' if i % 2 else 'b'}, ?, {i * 2}\n" for i in range(50)))
    code, text, _ = _init(capsys, data)
    cfg = yaml.safe_load(text)
    assert code == 0 and cfg["inputs"][0]["csv"]["header"] is False
    assert cfg["inputs"][0]["csv"]["names"] == ["column_1", "column_2", "column_3", "column_4"]
    assert "dataprep init --names" in text and cfg["inputs"][0]["csv"]["trim"] is True
    assert cfg["inputs"][0]["csv"]["na_values"] == ["", "?"]           # "?" marks a missing value
    code, text, _ = _init(capsys, data, "--names", "n,kind,missing,double", "--label", "kind")
    cfg = yaml.safe_load(text)
    assert code == 0 and cfg["inputs"][0]["csv"]["names"] == ["n", "kind", "missing", "double"]
    assert cfg["schema"]["columns"]["double"] == "int" and cfg["schema"]["columns"]["missing"] == "string"
    assert "# missing: not a feature (empty in the sample)" in text
    code, _, err = _init(capsys, data, "--names", "n,kind,missing,double", "--label", "knd")
    assert code == 2 and "--label: no column 'knd' (did you mean 'kind'?)" in err


def test_a_header_naming_a_column_twice_is_reported(tmp_path, capsys):
    data = tmp_path / "twice.csv"
    data.write_text("id,n,x,n\n1,2,3,4\n2,3,4,5\n")
    code, out, err = _init(capsys, data)
    assert code == 2 and not out and "Traceback" not in err
    assert "the header names a column more than once ('n' at columns [2, 4])" in err


def test_json_lines_and_parquet(tmp_path, capsys):
    rows = [{"id": i, "text": f"message {i}", "spam": i % 3 == 0, "size": i * 1.5,
             "meta": {"k": i}} for i in range(60)]
    jsonl = tmp_path / "msgs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, text, err = _init(capsys, jsonl, "--label", "spam")
    assert code == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["inputs"][0]["format"] == "jsonl" and cfg["schema"]["id"] == "id"
    # a boolean label keeps its spelling as a string class; the nested value is its JSON text
    assert cfg["schema"]["columns"] == {"id": "int", "text": "string", "spam": "string", "size": "float",
                                        "meta": "string"}
    code, out, err = run_cli(["validate", _saved(tmp_path, text), "--strict"], capsys)
    assert code == 0, out + err
    table = pa.table({"id": [f"u{i}" for i in range(60)], "age": pa.array(range(60), pa.int32()),
                      "ok": [i % 2 == 0 for i in range(60)], "tags": [[i] for i in range(60)]})
    parquet = tmp_path / "users.parquet"
    pq.write_table(table, parquet)
    code, text, err = _init(capsys, parquet, "--label", "ok")
    assert code == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["inputs"][0]["format"] == "parquet"
    assert cfg["schema"]["columns"] == {"id": "string", "age": "int", "ok": "string"}
    assert "column 'tags' (list<item: int64>) is nested: not read" in text
    code, out, err = run_cli(["validate", _saved(tmp_path, text), "--strict"], capsys)
    assert code == 0, out + err


def test_the_muscatine_shape_gets_na_values_and_a_group(tmp_path, capsys):
    from tests.test_preflight import _muscatine

    code, text, err = _init(capsys, _muscatine(tmp_path), "--label", "obese")
    assert code == 0, err
    cfg = yaml.safe_load(text)
    assert cfg["inputs"][0]["csv"]["na_values"] == ["", "NA"] and cfg["split"]["group_by"] == "id"
    assert "id" not in cfg["schema"] and "id" not in cfg["features"] and "rownames" not in cfg["features"]
    code, out, err = run_cli(["validate", _saved(tmp_path, text), "--strict"], capsys)
    assert code == 0, out + err
    assert "(missing_label 25.0%)" in out


# ---- the acceptance: three real files ------------------------------------------------------------

REAL = {   # file, the lines of a slice (None: the whole file), init's extra arguments
    "chicago": ("chicago_taxi_big_tipper.csv", 3001, ["--label", "big_tipper"]),
    "adult": ("adult.data", 3000, ["--names", ADULT_NAMES, "--label", "income"]),
    "sms": ("sms_spam_collection.tsv", 2000, ["--names", "label,text"]),
}


def _slice(source: str, lines: int, folder) -> str:
    path = os.path.join(str(folder), os.path.basename(source))
    with open(source, "rb") as f, open(path, "wb") as out:
        for n, line in enumerate(f):
            if n >= lines:
                break
            out.write(line)
    return path


@pytest.fixture(scope="module", params=sorted(REAL))
def real_run(request, tmp_path_factory):
    """init on a slice of a real file, the config saved, validated and run once (CLI in-process)."""
    name = request.param
    file, lines, extra = REAL[name]
    folder = tmp_path_factory.mktemp(f"init_{name}")
    data = _slice(shared(file), lines, folder)
    from pipeline.cli import main

    def cli(args):     # the CLI in-process (capsys is per test; this fixture is shared)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return code, out.getvalue(), err.getvalue()

    code, text, err = cli(["init", data, *extra])
    assert code == 0, err
    config = os.path.join(str(folder), "config.yaml")
    with open(config, "w") as f:
        f.write(text)
    validated = cli(["validate", config, "--strict"])
    store = os.path.join(str(folder), "m.sqlite")
    code, out, err = cli(["run", config, "--output", os.path.join(str(folder), "out"), "--store", store])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return {"name": name, "text": text, "config": config, "validated": validated, "summary": summary,
            "report": report, "store": store, "cli": cli, "file": shared(file), "extra": extra, "folder": folder}


def test_init_output_validates_and_runs_with_no_type_quarantine(real_run):
    code, out, err = real_run["validated"]
    assert code == 0, out + err                                     # --strict: not one warning
    reasons = {r for stage in real_run["report"]["quarantine_reasons"].values() for r in stage}
    assert not [r for r in reasons if r.startswith("type:")], reasons
    rows = real_run["summary"]["rows"]
    assert rows["train"] > 0 and rows["dev"] > 0 and rows["test"] > 0
    assert rows["input"] == rows["train"] + rows["dev"] + rows["test"] + rows["quarantined"] + rows["duplicates"]
    assert real_run["report"].get("features", {}).get("columns")    # the features were transformed


def test_init_types_hold_for_every_row_of_the_whole_file(real_run, tmp_path):
    """init sampled the file's first 10,000 records; validate reads all of it with those types."""
    text = real_run["text"].replace(_slice_path(real_run), real_run["file"])
    config = tmp_path / "whole.yaml"
    config.write_text(text)
    code, out, err = real_run["cli"](["validate", str(config), "--sample", "100000"])
    assert code == 0, err
    assert "sample: all " in out and not [line for line in out.splitlines() if "type:" in line], out


def _slice_path(real_run) -> str:
    return load_config(real_run["config"]).inputs[0].path


@pytest.mark.parametrize("real_run", ["sms"], indirect=True)     # one of the three runs is enough
def test_a_reused_run_says_so_once_and_lineage_ends_quietly_in_a_closed_pipe(real_run, caplog):
    caplog.set_level(logging.DEBUG, logger="dataprep")
    code, out, err = real_run["cli"](["run", real_run["config"], "--output",
                                      os.path.join(str(real_run["folder"]), "out"), "--store", real_run["store"]])
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["reused_from"] == real_run["summary"]["run_id"]
    logged = [r for r in caplog.records if "identical to run" in r.getMessage() and r.levelno >= logging.INFO]
    assert err.count("identical to run") == 1 and not logged, (err, logged)
    # `dataprep lineage ... | head`: the reader is gone before the command writes
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "lineage", real_run["summary"]["run_id"],
                               "--store", real_run["store"]], stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT,
                              text=True, timeout=300)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_missing_values_per_feature_are_the_null_counts_of_the_splits(real_run):
    """report.json → feature_missing (shown per feature in report.html) is what pandas counts
    in each raw split of the run."""
    import glob

    import pandas as pd

    missing = real_run["report"]["feature_missing"]
    root = real_run["summary"]["output"]
    for split in ("train", "dev", "test"):
        frame = pd.concat([pq.read_table(p).to_pandas() for p in glob.glob(os.path.join(root, "raw", split, "*.parquet"))])
        for column, per_split in missing.items():
            assert per_split[split] == int(frame[column].isna().sum()), (column, split)
    if real_run["name"] == "chicago":      # the taxi trips miss coordinates: the test holds something
        assert sum(sum(v.values()) for v in missing.values()) > 0
