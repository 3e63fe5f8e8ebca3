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


def example_config(folder, rows: int):
    """The visual-inspection example's config, reading `rows` generated images per file (and
    their inspectors' labels) in `folder`."""
    import subprocess
    import sys

    from pipeline.config import load_config

    example = os.path.join(ROOT, "examples", "visual_inspection")
    subprocess.run([sys.executable, os.path.join(example, "generate.py"), "--out", str(folder), "--rows", str(rows)],
                   check=True, capture_output=True)
    cfg = load_config(os.path.join(example, "config.yaml"))
    cfg.inputs[0].path = os.path.join(str(folder), "inspection-*.csv")
    cfg.labels.annotations.path = os.path.join(str(folder), "labels-*.csv")
    return cfg


def run_cli(args, capsys):
    """Runs `dataprep ARGS` in-process: (exit status, stdout, stderr)."""
    from pipeline.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_store(default: str) -> str:
    """The store the end-to-end tests use: $DATAPREP_TEST_STORE (make test-integration sets
    a MariaDB one), else a SQLite file."""
    return os.environ.get("DATAPREP_TEST_STORE") or default


def plain_mlmd_store(store: str):
    """A MetadataStore built with the plain ml_metadata API only (no code of this project)."""
    from urllib.parse import urlparse

    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    if store.startswith("mysql://"):
        u = urlparse(store)
        config.mysql.host, config.mysql.port = u.hostname, u.port or 3306
        config.mysql.database, config.mysql.user = u.path.lstrip("/"), u.username
        config.mysql.password = os.environ.get("DATAPREP_MYSQL_PASSWORD", "")
    else:
        config.sqlite.filename_uri = store
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


@pytest.fixture(scope="session")
def adult_run(tmp_path_factory):
    """One full run of tests/configs/adult.yaml (Adult data + test + a fault slice)."""
    from pipeline.cli import main
    import contextlib
    import io

    out_dir = tmp_path_factory.mktemp("adult_out")
    store = test_store(str(out_dir / "metadata.sqlite"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", os.path.join(TESTS, "configs", "adult.yaml"), "--output", str(out_dir),
                     "--store", store])
    assert code == 0, buf.getvalue()
    summary = json.loads(buf.getvalue().strip().splitlines()[-1])
    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return {"summary": summary, "report": report, "out": str(out_dir), "store": store}
