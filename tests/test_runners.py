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
    """Our package (setup.py's sdist) and the filter module beside the config (a wheel of
    its own, which pip installs and which imports without the config's folder) are staged."""
    import json
    import subprocess
    import sys
    import zipfile

    # TFT touches its gs:// temp folder while the graph is built, which needs the network:
    # offline, the job is built without the features stage.
    monkeypatch.chdir(tmp_path)
    example = example.model_copy(deep=True)
    example.features = {}
    beside = tmp_path / "config"
    beside.mkdir()
    module = "import numpy as np\n\n\ndef keep_all(batch):\n    return np.zeros(batch.num_rows, bool)\n"
    (beside / "mymod15.py").write_text(module)
    example.base_dir = str(beside)
    example.clean.filters = ["mymod15:keep_all"]
    summary = run(example, output="gs://fake-bucket/out", store=str(tmp_path / "m.sqlite"),
                  beam_args=DATAFLOW + ["--dry_run", "True"])
    assert summary["dry_run"] is True and summary["output"].startswith("gs://fake-bucket/out/")
    assert "workflow.tar.gz" in summary["staged"]          # the sdist of setup.py: pipeline/, transforms/, runners/
    from pipeline.metadata import StoreLocation, open_store

    [ctx] = open_store(StoreLocation.parse(str(tmp_path / "m.sqlite"))).get_contexts_by_type("pipeline_run")
    assert ctx.properties["status"].string_value == "DRY_RUN"
    options = json.loads(ctx.properties["options"].string_value)
    assert options["setup_file"] == SETUP_PY
    [wheel] = options["extra_packages"]
    assert os.path.basename(wheel) in summary["staged"] and "extra_packages.txt" in summary["staged"]
    with zipfile.ZipFile(wheel) as z:
        assert z.read("mymod15.py").decode() == module
    target = tmp_path / "worker"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    wheel], check=True, capture_output=True)
    probe = subprocess.run([sys.executable, "-c", "import mymod15, pyarrow as pa; "
                            "print(mymod15.keep_all(pa.record_batch([pa.array([1, 2])], ['n'])).tolist())"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "[False, False]", probe.stderr


def test_only_the_modules_beside_the_config_are_shipped(tmp_path):
    from pipeline.config import parse_config, user_modules
    from runners.packaging import module_sources, user_code_wheel

    (tmp_path / "mymod15.py").write_text("def f(batch):\n    return None\n")
    (tmp_path / "feats15" / "__pycache__").mkdir(parents=True)
    (tmp_path / "feats15" / "__init__.py").write_text("")
    (tmp_path / "feats15" / "fn.py").write_text("def preprocessing_fn(inputs):\n    return inputs\n")
    (tmp_path / "feats15" / "__pycache__" / "fn.cpython-311.pyc").write_bytes(b"x")
    cfg = parse_config({"name": "m", "inputs": [{"path": "d.csv", "format": "csv"}],
                        "schema": {"label": "y", "columns": {"y": "string", "x": "float"}},
                        "clean": {"filters": ["mymod15:f", "os:getcwd", "tests.faults:slow"]},
                        "features": {"preprocessing_fn": "feats15.fn:preprocessing_fn"}}, base_dir=str(tmp_path))
    assert user_modules(cfg) == [str(tmp_path / "feats15"), str(tmp_path / "mymod15.py")]
    assert [name for name, _ in module_sources(user_modules(cfg))] == ["feats15/__init__.py", "feats15/fn.py",
                                                                       "mymod15.py"]
    first = user_code_wheel(user_modules(cfg), str(tmp_path / "a"))
    again = user_code_wheel(user_modules(cfg), str(tmp_path / "b"))
    assert os.path.basename(first) == os.path.basename(again)
    assert open(first, "rb").read() == open(again, "rb").read()      # the same modules, the same file
    (tmp_path / "mymod15.py").write_text("def f(batch):\n    return 1\n")
    assert os.path.basename(user_code_wheel(user_modules(cfg), str(tmp_path / "c"))) != os.path.basename(first)


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


# ---------------------------------------------------------------- Flink (no cluster needed)

def _serve_config(flink_version: str):
    """A loopback HTTP server answering /config as Flink's REST API does; (url, stop)."""
    import http.server
    import json as _json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = _json.dumps({"flink-version": flink_version}).encode()
            self.send_response(200 if self.path == "/config" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_port}", server.shutdown


def test_flink_args_fill_in_job_server_environment_and_version(tmp_path, monkeypatch):
    from runners.flink import JAR_ENV, flink_args

    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv(JAR_ENV, str(jar))
    master, stop = _serve_config("1.19.3")
    try:
        args = flink_args(["--runner", "FlinkRunner", "--flink_master", master, "--parallelism", "2"])
        assert args[args.index("--flink_job_server_jar") + 1] == str(jar)
        assert args[args.index("--environment_type") + 1] == "LOOPBACK"
        assert args[args.index("--flink_version") + 1] == "1.19"
        given = flink_args(["--flink_master", master, "--flink_job_server_jar", "/x.jar"])
        assert given.count("--flink_job_server_jar") == 1 and "/x.jar" in given
        with pytest.raises(RunnerOptionsError, match="--flink_version: 1.18 given, but the cluster at .* runs Flink 1.19.3"):
            flink_args(["--flink_master", master, "--flink_version", "1.18"])
        with pytest.raises(RunnerOptionsError, match="--environment_config: EXTERNAL needs"):
            flink_args(["--flink_master", master, "--environment_type", "EXTERNAL"])
        with pytest.raises(RunnerOptionsError, match="--environment_config: no SDK worker pool answers at 127.0.0.1:1"):
            flink_args(["--flink_master", master, "--environment_type", "EXTERNAL",
                        "--environment_config", "127.0.0.1:1"])
    finally:
        stop()
    old, stop = _serve_config("1.16.3")
    try:
        with pytest.raises(RunnerOptionsError, match=r"--flink_master: the cluster runs Flink 1.16.3"):
            flink_args(["--flink_master", old])
    finally:
        stop()
    with pytest.raises(RunnerOptionsError, match="--flink_master: no Flink cluster answers at http://127.0.0.1:1"):
        flink_args(["--flink_master", "127.0.0.1:1"])


def test_flink_pool_environment_gets_one_worker_per_slot_kept_across_stages(tmp_path, monkeypatch):
    import socket

    from runners.flink import ENVIRONMENT_CACHE_MILLIS, JAR_ENV, flink_args

    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv(JAR_ENV, str(jar))
    with socket.socket() as pool:                        # something listening, as the worker pool does
        pool.bind(("127.0.0.1", 0))
        pool.listen()
        address = f"127.0.0.1:{pool.getsockname()[1]}"
        args = flink_args(["--flink_master", "[auto]", "--parallelism", "2", "--environment_type", "EXTERNAL",
                           "--environment_config", address])
    assert args[args.index("--sdk_worker_parallelism") + 1] == "2"
    assert args[args.index("--environment_cache_millis") + 1] == str(ENVIRONMENT_CACHE_MILLIS)
    assert "--flink_version" not in args                 # [auto]: Beam's embedded cluster, nothing to ask


def test_flink_job_server_is_found_in_the_cache_or_named_clearly(tmp_path, monkeypatch):
    import apache_beam

    from runners.flink import CACHE_ENV, JAR_ENV, find_job_server_jar

    monkeypatch.delenv(JAR_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr("runners.flink.REPO_CACHE", str(tmp_path / "nothing-here"))
    with pytest.raises(RunnerOptionsError, match=r"--flink_job_server_jar: no Beam .* found; get one with "
                                                 r"`scripts/flink.sh jobserver`"):
        find_job_server_jar()
    v = apache_beam.__version__
    launcher = tmp_path / f"beam-flink-1.19-job-server-{v}" / f"beam-flink-1.19-job-server-{v}-launcher.jar"
    launcher.parent.mkdir()
    launcher.write_bytes(b"PK")
    (tmp_path / "beam-flink-1.19-job-server-2.0.0").mkdir()     # another Beam version: never picked
    assert find_job_server_jar() == str(launcher)
    shaded = tmp_path / f"beam-runners-flink-1.19-job-server-{v}.jar"
    shaded.write_bytes(b"PK")
    assert find_job_server_jar() == str(shaded)                 # the shaded jar first, where Maven served it
    monkeypatch.setenv(JAR_ENV, str(tmp_path / "missing.jar"))
    with pytest.raises(RunnerOptionsError, match=f"{JAR_ENV}: no file at"):
        find_job_server_jar()


def test_beams_job_server_does_not_take_sigint_over_while_the_job_is_submitted():
    """Beam's StopOnExitJobServer.start sets SIGINT's handler to its stop() (which fails with a
    TypeError when called as one); inside the `signals` patch (runners.tuning.submitting) the launcher's handler stays."""
    import signal

    from apache_beam.runners.portability.job_server import StopOnExitJobServer

    from runners.tuning import submitting

    class Inner:
        stopped = 0

        def start(self):
            return "localhost:1"

        def stop(self):
            Inner.stopped += 1

    def ours(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, ours)
    original = signal.signal
    try:
        server = StopOnExitJobServer(Inner())
        with submitting():
            assert server.start() == "localhost:1"
            assert signal.getsignal(signal.SIGINT) is ours
            signal.signal(signal.SIGTERM, signal.SIG_IGN)       # SIG_IGN / SIG_DFL still go through
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert signal.signal is original
        StopOnExitJobServer(Inner()).start()                    # outside it, Beam takes SIGINT as before
        assert signal.getsignal(signal.SIGINT) != ours
        server.stop()
        assert Inner.stopped == 1
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_flink_job_is_named_after_its_run_unless_the_user_named_it():
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    from runners.cancel import name_job

    options = PipelineOptions(["--runner", "FlinkRunner"])
    name_job("FlinkRunner", options, "20261203T173053Z-e23b58")
    assert options.view_as(GoogleCloudOptions).job_name == "dataprep-20261203t173053z-e23b58"
    assert options.get_all_options()["job_name"] == "dataprep-20261203t173053z-e23b58"  # what the job server gets
    named = PipelineOptions(["--runner", "FlinkRunner", "--job_name", "mine"])
    name_job("FlinkRunner", named, "20261203T173053Z-e23b58")
    assert named.view_as(GoogleCloudOptions).job_name == "mine"
    direct = PipelineOptions([])
    name_job("DirectRunner", direct, "20261203T173053Z-e23b58")
    assert direct.view_as(GoogleCloudOptions).job_name is None
