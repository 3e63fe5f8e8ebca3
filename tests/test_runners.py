"""Runner-specific behaviour: the Dataflow job builds offline and ships our package;
local paths are refused where workers could not see them."""

from __future__ import annotations

import os

import pytest

from pipeline.config import ConfigError
from runners import RunnerOptionsError
from pipeline.run import run
from runners.dataflow import SETUP_PY, dataflow_args
from tests.conftest import example_config

DATAFLOW = ["--runner", "DataflowRunner", "--project", "test-project", "--region", "us-central1",
            "--temp_location", "gs://fake-bucket/tmp", "--no_auth"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return example_config(tmp_path_factory.mktemp("vi"), rows=300)


def test_dataflow_dry_run_builds_the_job_and_stages_our_package(example, tmp_path, monkeypatch):
    # TFT touches its gs:// temp folder while the graph is built, which needs the network:
    # offline, the job is built without the features stage.
    monkeypatch.chdir(tmp_path)
    example = example.model_copy(deep=True)
    example.features = {}
    summary = run(example, output="gs://fake-bucket/out", store=str(tmp_path / "m.sqlite"),
                  beam_args=DATAFLOW + ["--dry_run", "True"])
    assert summary["dry_run"] is True and summary["output"].startswith("gs://fake-bucket/out/")
    assert "workflow.tar.gz" in summary["staged"]          # the sdist of setup.py: pipeline/, transforms/, runners/
    from pipeline.metadata import StoreLocation, open_store

    [ctx] = open_store(StoreLocation.parse(str(tmp_path / "m.sqlite"))).get_contexts_by_type("pipeline_run")
    assert ctx.properties["status"].string_value == "DRY_RUN"
    assert SETUP_PY in ctx.properties["options"].string_value


def test_dataflow_args_fill_in_setup_file_and_staging():
    args = dataflow_args(DATAFLOW)
    assert args[args.index("--setup_file") + 1] == SETUP_PY and os.path.exists(SETUP_PY)
    assert args[args.index("--staging_location") + 1] == "gs://fake-bucket/tmp/staging"
    with pytest.raises(RunnerOptionsError, match="--project"):
        dataflow_args(["--runner", "DataflowRunner", "--region", "r", "--temp_location", "gs://b/t"])
    with pytest.raises(RunnerOptionsError, match="--temp_location: Dataflow workers cannot use the local path"):
        dataflow_args(["--project", "p", "--region", "r", "--temp_location", "/tmp/x"])


def test_local_output_refused_on_dataflow(example, tmp_path):
    with pytest.raises(ConfigError, match="output.path: DataflowRunner workers cannot write the local path"):
        run(example, output=str(tmp_path / "out"), store=str(tmp_path / "m.sqlite"), beam_args=DATAFLOW)
    with pytest.raises(ConfigError, match=r"inputs\[0\].path: DataflowRunner workers cannot read the local path"):
        run(example, output="gs://fake-bucket/out", store=str(tmp_path / "m.sqlite"), beam_args=DATAFLOW)
