"""The growth guard: two runs on one store, the second with 20× the input of the first:
a warning on stderr and in both reports (warn), or exit 2 before the job runs (fail),
recorded on the run context either way."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.guard import Baseline, after_job, check_growth
from tests.conftest import example_config, plain_mlmd_store, run_cli


def test_check_growth_on_bytes_then_rows():
    v = check_growth(Baseline("r0", rows=100, bytes=1000), 20_000, 10)
    assert v["exceeded"] and v["growth"] == 20 and v["estimated_rows"] == 2000 and "20.0x" in v["message"]
    ok = check_growth(Baseline("r0", rows=100, bytes=1000), 5000, 10)
    assert not ok["exceeded"]
    assert after_job(ok, 1500)["exceeded"] and "15.0x" in after_job(ok, 1500)["message"]
    assert not check_growth(None, 10**9, 10)["exceeded"]


def _config_file(folder, rows, on_exceed, store):
    cfg = example_config(folder, rows)
    raw = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    raw["features"] = {}                  # the guard is about inputs: no TFT, a faster run
    raw["guard"] = {"max_growth": 10, "on_exceed": on_exceed}
    raw["metadata_store"] = {"sqlite": store}
    path = os.path.join(str(folder), "config.json")   # JSON is YAML
    with open(path, "w") as f:
        json.dump(raw, f)
    return path


def _runs(store):
    return {c.name: c for c in plain_mlmd_store(store).get_contexts_by_type("pipeline_run")}


@pytest.mark.parametrize("on_exceed", ["warn", "fail"])
def test_a_tenfold_growth_warns_or_fails(tmp_path, capsys, on_exceed):
    store = str(tmp_path / "m.sqlite")
    small = _config_file(tmp_path / "small", 30, on_exceed, store)
    big = _config_file(tmp_path / "big", 600, on_exceed, store)
    code, out, err = run_cli(["run", small, "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    assert "guard" not in err
    code, out, err = run_cli(["run", big, "--output", str(tmp_path / "out")], capsys)
    runs = _runs(store)
    assert len(runs) == 2
    [second] = [c for name, c in runs.items() if name != first["run_id"]]
    guard = json.loads(second.properties["guard"].string_value)
    assert guard["exceeded"] and guard["baseline_run"] == first["run_id"] and guard["growth"] > 10
    if on_exceed == "warn":
        assert code == 0, err
        assert "dataprep: warning: guard: the input is" in err
        summary = json.loads(out.strip().splitlines()[-1])
        with open(os.path.join(summary["output"], "report.json")) as f:
            report = json.load(f)
        assert report["guard"]["exceeded"] and report["guard"]["row_growth"] > 10
        with open(os.path.join(summary["output"], "report.html"), encoding="utf-8") as f:
            assert "Growth guard" in f.read()
        assert second.properties["status"].string_value == "COMPLETE"
    else:
        assert code == 2 and "guard" in err and "guard.on_exceed: fail" in err and "Traceback" not in err
        assert second.properties["status"].string_value == "REFUSED"
        assert not os.path.exists(os.path.join(str(tmp_path / "out"), second.name))
