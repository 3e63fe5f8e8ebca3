"""The example pipeline as a daily Apache Airflow 3 DAG: validate → run → summary → lineage.

- `validate`: `dataprep validate CONFIG` (the config, its user code, the inputs' headers): a bad
  config fails the DAG run before anything is recorded.
- `run`: `dataprep run CONFIG` on the exports that have arrived (the config's glob), with the
  growth guard failing a run whose input grew more than 10x (`guard.on_exceed: fail` in
  config.yaml). A failed (exit 1), refused (exit 2) or canceled (Airflow's SIGTERM: exit 143,
  recorded CANCELED) run fails the task, so the DAG run fails. Its last stdout line, the run's
  JSON summary, is the task's XCom. The task's OpenLineage run is handed to dataprep as its
  parent (`OPENLINEAGE_PARENT_ID`, from the OpenLineage provider's `lineage_parent_id` macro;
  the DAG run as root, `lineage_root_parent_id`), so the catalog shows dataprep's run, and its
  stages, under this task.
- `summary`: the run id (and output, store) out of that JSON line, as this task's XCom for
  whatever comes next; a rerun on unchanged files reuses the earlier run (`reused_from`).
- `lineage`: the downstream step here: `dataprep lineage RUN_ID`, the run's lineage from the store.

dataprep is called through its CLI (`BashOperator`) in its own venv (`$DATAPREP_BIN`, default
this repository's `.venv/bin/dataprep`): its pinned stack (Beam 2.62, TFT 1.16, pyarrow 10,
protobuf 4) cannot share Airflow's venv (pyarrow >= 14, protobuf 7, ...). See README
"Scheduling with Airflow" for why BashOperator rather than `@task.external_python`.

Parameters (`params`, or `dag.test(run_conf=...)`): `config` (default `$DATAPREP_CONFIG`, else
config.yaml beside this file), `output` and `store` (default: the config's).
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, task

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATAPREP = os.environ.get("DATAPREP_BIN", os.path.join(REPO, ".venv", "bin", "dataprep"))
CONFIG = os.environ.get("DATAPREP_CONFIG", os.path.join(HERE, "config.yaml"))

# Values reach the commands as environment variables, never spliced into the shell text.
# With the OpenLineage provider installed, these macros name this task's run and the DAG run.
_PROVIDER = "macros.OpenLineageProviderPlugin"
PARENT = f"{{{{ {_PROVIDER}.lineage_parent_id(task_instance) if {_PROVIDER} is defined else '' }}}}"
ROOT = f"{{{{ {_PROVIDER}.lineage_root_parent_id(task_instance) if {_PROVIDER} is defined else '' }}}}"
ARGS = {"DATAPREP": DATAPREP, "CONFIG": "{{ params.config }}", "OUTPUT": "{{ params.output }}",
        "STORE": "{{ params.store }}"}

with DAG(
    dag_id="dataprep_visual_inspection",
    description="dataprep: clean, label-check, split and transform the day's inspection exports",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,          # runs of one pipeline share a store and a growth baseline: one at a time
    params={"config": Param(CONFIG, type="string"), "output": Param("", type="string"),
            "store": Param("", type="string")},
    tags=["dataprep"],
) as dag:
    validate = BashOperator(task_id="validate", bash_command='"$DATAPREP" validate "$CONFIG"', env=ARGS,
                            append_env=True)

    run = BashOperator(
        task_id="run",
        bash_command='"$DATAPREP" run "$CONFIG" --no-progress ${OUTPUT:+--output "$OUTPUT"} ${STORE:+--store "$STORE"}',
        env={**ARGS, "OPENLINEAGE_PARENT_ID": PARENT, "OPENLINEAGE_ROOT_PARENT_ID": ROOT},
        append_env=True,       # Airflow's environment: the OpenLineage transport settings reach dataprep too
        do_xcom_push=True,     # the last stdout line: dataprep's JSON summary
    )

    @task
    def summary(line: str) -> dict:
        """The run's summary line → {run_id, output, store, rows}; no run id is a failed task."""
        s = json.loads(line)
        if not s.get("run_id") or s.get("dry_run"):
            raise ValueError(f"dataprep printed no finished run: {line}")
        if s.get("reused_from"):
            print(f"no new input: reused run {s['reused_from']}")
        return {"run_id": s["run_id"], "output": s["output"], "store": s["store"], "rows": s["rows"]}

    facts = summary(run.output)

    lineage = BashOperator(
        task_id="lineage",
        bash_command='"$DATAPREP" lineage "$RUN_ID" --store "$RUN_STORE"',
        env={"DATAPREP": DATAPREP, "RUN_ID": "{{ ti.xcom_pull(task_ids='summary')['run_id'] }}",
             "RUN_STORE": "{{ ti.xcom_pull(task_ids='summary')['store'] }}"},
        append_env=True,
    )

    validate >> run
    facts >> lineage


if __name__ == "__main__":   # one run in this process, on SQLite: `python dataprep_dag.py`
    dag.test()
