"""Shared fixtures: paths to the real data, and one end-to-end Adult run for many assertions."""

from __future__ import annotations

import json
import os
import warnings

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
TESTS = os.path.join(ROOT, "tests")


def shared(name: str) -> str:
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the shared data sets must sit beside the repo (../shared/data)")
    return path


def run_cli(args, capsys):
    """Runs `dataprep ARGS` in-process: (exit status, stdout, stderr)."""
    from pipeline.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def adult_run(tmp_path_factory):
    """One full run of tests/configs/adult.yaml (Adult data + test + a fault slice)."""
    from pipeline.cli import main
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("adult_out")
    store = str(out_dir / "metadata.sqlite")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", os.path.join(TESTS, "configs", "adult.yaml"), "--output", str(out_dir),
                     "--store", store])
    assert code == 0, buf.getvalue()
    summary = json.loads(buf.getvalue().strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return {"summary": summary, "report": report, "out": str(out_dir), "store": store}
