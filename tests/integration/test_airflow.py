"""The example DAG (examples/airflow/dataprep_dag.py) run by Apache Airflow 3 with `dag.test()`,
in Airflow's own venv (`scripts/airflow.sh install`, driven here as a subprocess) on SQLite, with
Airflow's OpenLineage provider and dataprep writing their events to one file transport.

- A daily run on the example data: every task succeeds, the dataprep run is COMPLETE in MLMD,
  its outputs are published, and its OpenLineage events (valid against the spec) carry the
  Airflow `run` task's OpenLineage run as parent and the DAG run as root: the two event streams
  link up.
- The next day's exports are 20x larger: the growth guard refuses the run (exit 2, REFUSED in
  MLMD), so the DAG run fails, and nothing downstream of `run` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, plain_mlmd_store
from tests.openlineage_spec import check_event, read_events

DAG_FILE = os.path.join(ROOT, "examples", "airflow", "dataprep_dag.py")
DAG_ID = "dataprep_visual_inspection"
PRODUCER = "urn:beam-dataprep"

DRIVER = """
import json, runpy, sys
dag = runpy.run_path(sys.argv[1])["dag"]
dr = dag.test(run_conf=json.loads(sys.argv[2]))
print("DAGRUN " + json.dumps({"state": str(dr.state), "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}}))
"""


def _airflow_python() -> str:
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "airflow.sh"), "python"], capture_output=True,
                          text=True)
    assert done.returncode == 0, "Airflow's venv is missing: scripts/airflow.sh install (" + done.stderr.strip() + ")"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """Airflow's python and the environment of one Airflow home (SQLite, migrated) whose DAG
    folder is examples/airflow, with the OpenLineage file transport for both venvs."""
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": os.path.dirname(DAG_FILE),
           "DATAPREP_BIN": os.path.join(os.path.dirname(sys.executable), "dataprep"),
           "OPENLINEAGE__TRANSPORT__TYPE": "file", "OPENLINEAGE__TRANSPORT__APPEND": "true",
           "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(home / "openlineage.jsonl")}
    for k in ("PYTHONPATH", "OPENLINEAGE_PARENT_ID", "OPENLINEAGE_ROOT_PARENT_ID", "OPENLINEAGE_URL",
              "OPENLINEAGE_DISABLED"):
        env.pop(k, None)
    python = _airflow_python()
    airflow_bin = os.path.join(os.path.dirname(python), "airflow")
    done = subprocess.run([airflow_bin, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {"python": python, "env": env, "home": home, "events": str(home / "openlineage.jsonl")}


def _config(folder, rows: int, output: str) -> str:
    """examples/airflow/config.yaml reading `rows` generated images per export in `folder`."""
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", "visual_inspection", "generate.py"), "--out",
                    str(folder / "data"), "--rows", str(rows)], check=True, capture_output=True)
    with open(os.path.join(ROOT, "examples", "airflow", "config.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["inputs"][0]["path"] = str(folder / "data" / "inspection-*.csv")
    cfg["labels"]["annotations"]["path"] = str(folder / "data" / "labels-*.csv")
    cfg["output"]["path"] = output
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _dag_test(airflow, config: str) -> dict:
    done = subprocess.run([airflow["python"], "-c", DRIVER, DAG_FILE, json.dumps({"config": config})],
                          env=airflow["env"], capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DAGRUN ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("DAGRUN "):])


@pytest.fixture(scope="module")
def daily(airflow, tmp_path_factory):
    """The first day: a DAG run on 150 images per export."""
    folder = tmp_path_factory.mktemp("day1")
    output = str(tmp_path_factory.mktemp("out"))
    result = _dag_test(airflow, _config(folder, 150, output))
    return {**result, "output": output, "events": read_events(airflow["events"])}


def test_the_dag_runs_validate_run_summary_lineage(daily):
    assert daily["state"] == "success", daily
    assert daily["tasks"] == {t: "success" for t in ("validate", "run", "summary", "lineage")}


def test_the_run_is_complete_in_mlmd_and_published(daily):
    store = os.path.join(daily["output"], "metadata.sqlite")
    [ctx] = plain_mlmd_store(store).get_contexts_by_type("pipeline_run")
    assert ctx.properties["status"].string_value == "COMPLETE"
    run_dir = os.path.join(daily["output"], ctx.name)
    for part in ("_SUCCESS", "report.json", "raw/train", "transformed/train", "quarantine", "review"):
        assert os.path.exists(os.path.join(run_dir, part)), part


def test_dataprep_events_validate_against_the_spec_and_carry_the_airflow_task_as_parent(daily):
    events = daily["events"]
    ours = [e for e in events if e["producer"] == PRODUCER]
    airflow = [e for e in events if e["producer"] != PRODUCER]
    assert ours and airflow, "both Airflow's provider and dataprep must have written events"
    for e in ours:
        check_event(e)
    [task_run] = {e["run"]["runId"] for e in airflow if e["job"]["name"] == f"{DAG_ID}.run"}
    [task_ns] = {e["job"]["namespace"] for e in airflow if e["job"]["name"] == f"{DAG_ID}.run"}
    dag_runs = {e["run"]["runId"] for e in airflow if e["job"]["name"] == DAG_ID}
    run_events = [e for e in ours if e["job"]["name"] == "visual-inspection"]
    assert [e["eventType"] for e in run_events] == ["START", "COMPLETE"]
    for e in run_events:
        parent = e["run"]["facets"]["parent"]
        assert (parent["job"]["namespace"], parent["job"]["name"], parent["run"]["runId"]) == \
            (task_ns, f"{DAG_ID}.run", task_run)
        assert parent["root"]["job"]["name"] == DAG_ID
        if dag_runs:   # the provider's DAG-run events, where dag.test() sends them
            assert parent["root"]["run"]["runId"] in dag_runs
    # Airflow's task ran around dataprep's run: START before, COMPLETE after
    order = [(e["job"]["name"], e["eventType"]) for e in events]
    assert order.index((f"{DAG_ID}.run", "START")) < order.index(("visual-inspection", "START"))
    assert order.index(("visual-inspection", "COMPLETE")) < order.index((f"{DAG_ID}.run", "COMPLETE"))
    stage_parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in ours if e not in run_events}
    assert stage_parents == {run_events[0]["run"]["runId"]}


def test_a_growth_past_the_guard_fails_the_dag_run(daily, airflow, tmp_path_factory):
    folder = tmp_path_factory.mktemp("day2")
    result = _dag_test(airflow, _config(folder, 3000, daily["output"]))   # 20x the first day's exports
    assert result["state"] == "failed", result
    assert result["tasks"]["validate"] == "success" and result["tasks"]["run"] == "failed"
    assert result["tasks"]["summary"] == result["tasks"]["lineage"] == "upstream_failed"
    runs = plain_mlmd_store(os.path.join(daily["output"], "metadata.sqlite")).get_contexts_by_type("pipeline_run")
    assert sorted(c.properties["status"].string_value for c in runs) == ["COMPLETE", "REFUSED"]
