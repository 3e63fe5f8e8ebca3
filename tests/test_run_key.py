"""pipeline/run_key.py: a rerun is reused only when nothing that shapes its outputs changed:
the config, the inputs, dataprep's code, the libraries, and the user's modules (and what they
import from beside the config). Editing a filter module beside the config makes a new run, and
`dataprep diff` says which part changed."""

from __future__ import annotations

import json
import os
import sys

from pipeline import run_key
from pipeline.run_key import changed_parts, user_code_hashes
from tests.conftest import run_cli

# Each test names its modules apart: a process keeps every config folder it has loaded code
# from on sys.path (as a worker does), so two tests' `helpers.py` would shadow each other.
FILTER = """\
import pyarrow.compute as pc
import numpy as np
from {helpers} import WORD{extra}


def is_spam(batch):
    return np.asarray(pc.fill_null(pc.match_substring(batch.column("text"), WORD), False))
"""


def _project(folder, tag, word="free", extra=""):
    """A config beside a filter module `spamfilter_<tag>` that imports `helpers_<tag>` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"spamfilter_{tag}.py").write_text(FILTER.format(helpers=f"helpers_{tag}", extra=extra))
    (folder / f"helpers_{tag}.py").write_text(f"WORD = {word!r}\n")
    (folder / "unrelated.py").write_text("X = 1\n")
    rows = ["id,text,label"] + [f"r{i},{'free money' if i % 5 == 0 else 'hello there'} {i},{'a' if i % 2 else 'b'}"
                                for i in range(60)]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    config = {"name": "reuse-key", "inputs": [{"path": "data.csv", "format": "csv"}],
              "schema": {"id": "id", "label": "label", "columns": {"id": "string", "text": "string", "label": "string"}},
              "clean": {"filters": [f"spamfilter_{tag}:is_spam"]},
              "split": {"fractions": {"train": 0.5, "test": 0.5}}, "output": {"shards": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder / "config.json")


def _forget(*modules):
    for m in modules:   # a module edited on disk is imported afresh, as by a new process
        sys.modules.pop(m, None)


def test_user_code_hashes_follow_the_imports_beside_the_config(tmp_path):
    _project(tmp_path, "a")
    (tmp_path / "pkg_a").mkdir()
    (tmp_path / "pkg_a" / "__init__.py").write_text("from . import deep\n")
    (tmp_path / "pkg_a" / "deep.py").write_text("Z = 3\n")
    (tmp_path / "spamfilter_a.py").write_text(FILTER.format(helpers="helpers_a", extra="\nimport pkg_a"))
    hashes = user_code_hashes(["spamfilter_a:is_spam"], str(tmp_path))
    assert set(hashes) == {"spamfilter_a", "helpers_a", "pkg_a", "pkg_a.deep"}   # not numpy, pyarrow, unrelated
    (tmp_path / "unrelated.py").write_text("X = 2\n")
    assert user_code_hashes(["spamfilter_a:is_spam"], str(tmp_path)) == hashes
    (tmp_path / "pkg_a" / "deep.py").write_text("Z = 4\n")
    changed = user_code_hashes(["spamfilter_a:is_spam"], str(tmp_path))
    assert {m for m in hashes if hashes[m] != changed[m]} == {"pkg_a.deep"}
    assert user_code_hashes([], str(tmp_path)) == {}


def test_changed_parts_name_what_differs():
    a = {"config_hash": "c", "inputs_fingerprint": "i", "code_version": "0.1.0+gabc", "code_fingerprint": "x",
         "stack": '{"apache-beam": "2.62.0"}', "user_code": '{"m": "1", "n": "2"}'}
    assert changed_parts(a, dict(a)) == []
    b = dict(a, code_fingerprint="y", user_code='{"m": "1", "n": "3", "o": "4"}')
    assert changed_parts(a, b) == ["code", "user_code:n", "user_code:o"]
    assert changed_parts({"config_hash": "c"}, a)[:1] == ["inputs"]


def test_an_edited_user_module_or_dataprep_makes_a_new_run(tmp_path, capsys, monkeypatch):
    config = _project(tmp_path / "project", "b")
    out, store = str(tmp_path / "out"), str(tmp_path / "m.sqlite")
    args = ["run", config, "--output", out, "--store", store, "--no-progress"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    first = json.loads(stdout.strip().splitlines()[-1])
    assert first["rows"]["quarantined"] == 12                 # "free" in every fifth text

    code, stdout, err = run_cli(args, capsys)                 # nothing changed: reused
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["reused_from"] == first["run_id"]

    (tmp_path / "project" / "helpers_b.py").write_text("WORD = ' 1'\n")   # the imported helper changed
    _forget("spamfilter_b", "helpers_b")
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    edited = json.loads(stdout.strip().splitlines()[-1])
    assert "reused_from" not in edited and edited["rows"]["quarantined"] == 11   # the new filter's: r1, r10-r19

    code, stdout, _ = run_cli(["diff", first["run_id"], edited["run_id"], "--store", store, "--format", "json"], capsys)
    d = json.loads(stdout)
    assert d["reuse_key"] == {"same": False, "changed": ["user_code:helpers_b"]}
    code, stdout, _ = run_cli(["diff", first["run_id"], edited["run_id"], "--store", store], capsys)
    assert "reuse key: differs in user_code:helpers_b" in stdout

    monkeypatch.setattr(run_key, "code_fingerprint", lambda: "another dataprep")   # an upgrade, or an edit
    code, stdout, err = run_cli(args, capsys)
    upgraded = json.loads(stdout.strip().splitlines()[-1])
    assert "reused_from" not in upgraded
    code, stdout, _ = run_cli(["diff", edited["run_id"], upgraded["run_id"], "--store", store, "--format", "json"],
                              capsys)
    assert json.loads(stdout)["reuse_key"]["changed"] == ["code"]


def test_the_key_records_its_parts_on_the_run(tmp_path, capsys):
    from tests.conftest import plain_mlmd_store

    config = _project(tmp_path / "p2", "c")
    store = str(tmp_path / "m.sqlite")
    code, stdout, err = run_cli(["run", config, "--output", str(tmp_path / "out"), "--store", store, "--no-progress"],
                                capsys)
    assert code == 0, err
    run_id = json.loads(stdout.strip().splitlines()[-1])["run_id"]
    ctx = plain_mlmd_store(store).get_context_by_type_and_name("pipeline_run", run_id)
    props = {k: v.string_value for k, v in ctx.properties.items()}
    assert len(props["reuse_key"]) == 64 and len(props["code_fingerprint"]) == 64
    assert set(json.loads(props["user_code"])) == {"spamfilter_c", "helpers_c"}
    assert json.loads(props["stack"])["apache-beam"] == "2.62.0"


def test_the_code_fingerprint_changes_with_any_source_file(tmp_path):
    import shutil

    from pipeline.run_key import _HERE, OWN_PACKAGES, source_fingerprint

    for package in OWN_PACKAGES:
        shutil.copytree(os.path.join(_HERE, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    copy = source_fingerprint(str(tmp_path), OWN_PACKAGES)
    assert copy == source_fingerprint(_HERE, OWN_PACKAGES)       # the same files, the same fingerprint
    assert len(run_key.code_fingerprint()) == 64
    (tmp_path / "pipeline" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pipeline" / "__pycache__" / "x.py").write_text("# not source")
    assert source_fingerprint(str(tmp_path), OWN_PACKAGES) == copy
    with open(tmp_path / "transforms" / "write.py", "a") as f:
        f.write("\n# an edit\n")
    assert source_fingerprint(str(tmp_path), OWN_PACKAGES) != copy
