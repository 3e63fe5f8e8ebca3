"""The example on a real Flink 1.19 session cluster (make test-integration): the same
split assignment, byte for byte, as on DirectRunner single- and multi-process."""

from __future__ import annotations

import glob
import json
import os
import time
import urllib.request

import pytest

from pipeline.run import run
from tests.conftest import example_config

JAR = os.environ.get("DATAPREP_FLINK_JAR", "")
if not JAR:
    raise RuntimeError("tests/integration/test_flink.py runs under `make test-integration`, which starts Flink")
REST = "http://localhost:8081"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return example_config(tmp_path_factory.mktemp("vi"), rows=1500)


def _raw_files(summary):
    out = {}
    for path in sorted(glob.glob(os.path.join(summary["output"], "raw", "*", "*.parquet"))):
        with open(path, "rb") as f:
            out[os.path.relpath(path, summary["output"])] = f.read()
    return out


def _jobs():
    with urllib.request.urlopen(f"{REST}/jobs/overview", timeout=10) as r:
        return json.load(r)["jobs"]


def test_flink_matches_direct_runner_byte_for_byte(example, tmp_path):
    runs = {}
    timings = {}
    for name, args in [("direct", []),
                       ("direct-multiprocess", ["--direct_num_workers", "2", "--direct_running_mode",
                                                "multi_processing"]),
                       ("flink", ["--runner", "FlinkRunner", "--flink_master", "localhost:8081",
                                  "--flink_job_server_jar", JAR, "--environment_type", "LOOPBACK",
                                  "--parallelism", "2"])]:
        before = {j["jid"] for j in _jobs()} if name == "flink" else set()
        start = time.time()
        runs[name] = run(example, output=str(tmp_path / name), store=str(tmp_path / f"{name}.sqlite"),
                         beam_args=args, force=True)
        timings[name] = time.time() - start
        if name == "flink":
            new = [j for j in _jobs() if j["jid"] not in before]
            assert len(new) == 1, new
            print(f"\nFlink job {new[0]['jid']} ({new[0]['name']}): {new[0]['state']} per {REST}/jobs/overview")
            assert new[0]["state"] == "FINISHED"
    print("wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert runs["flink"]["rows"] == runs["direct"]["rows"] == runs["direct-multiprocess"]["rows"]
    direct = _raw_files(runs["direct"])
    assert direct and _raw_files(runs["flink"]) == direct == _raw_files(runs["direct-multiprocess"])
