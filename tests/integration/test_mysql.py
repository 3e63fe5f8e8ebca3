"""Against a real MariaDB server (make test-integration): config-named stores, secrets."""

from __future__ import annotations

import json
import os


from pipeline.config import parse_config
from pipeline.run import run
from tests.conftest import run_cli

URL = os.environ.get("DATAPREP_TEST_STORE", "")
if not URL.startswith("mysql://"):
    raise RuntimeError("tests/integration/test_mysql.py runs under `make test-integration`, which starts MariaDB")


def test_config_named_mysql_store_and_no_password_anywhere(tmp_path, capsys):
    from urllib.parse import urlparse

    u = urlparse(URL)
    data = tmp_path / "d.csv"
    data.write_text("id,y\n" + "".join(f"r{i},{'a' if i % 2 else 'b'}\n" for i in range(40)))
    os.environ["MY_MLMD_SECRET"] = os.environ["DATAPREP_MYSQL_PASSWORD"]
    cfg = {"name": "mysql-config", "inputs": [{"path": str(data), "format": "csv"}],
           "schema": {"id": "id", "label": "y", "columns": {"id": "string", "y": "string"}},
           "split": {"fractions": {"train": 0.5, "test": 0.5}}, "output": {"path": str(tmp_path / "out")},
           "metadata_store": {"mysql": {"host": u.hostname, "port": u.port, "database": u.path.lstrip("/"),
                                        "user": u.username, "password_env": "MY_MLMD_SECRET"}}}
    summary = run(parse_config(cfg))
    assert summary["store"] == URL
    secret = os.environ["DATAPREP_MYSQL_PASSWORD"]
    report = open(os.path.join(summary["output"], "report.json")).read()
    assert secret not in report and secret not in json.dumps(summary)
    code, out, _ = run_cli(["runs", "--store", URL, "--format", "json"], capsys)
    runs = json.loads(out)
    mine = [r for r in runs if r["run_id"] == summary["run_id"]]
    assert code == 0 and mine[0]["status"] == "COMPLETE" and secret not in out
