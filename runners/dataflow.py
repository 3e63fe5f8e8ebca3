"""Google Cloud Dataflow: the options a user needs, filled in so workers get our code.

Submit (the README has the full command):
    dataprep run CONFIG.yaml --output gs://BUCKET/out --runner DataflowRunner \\
        --project PROJECT --region REGION --temp_location gs://BUCKET/tmp
`--setup_file` is added (this repo's setup.py), so Dataflow workers install the
`pipeline`, `transforms` and `runners` packages; the user's modules beside the config
(`clean.filters`, `features.preprocessing_fn`) go as a wheel of their own
(`--extra_package`, see `runners/packaging.py`); `--staging_location` defaults to
`<temp_location>/staging`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import List, Sequence

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions

from runners import RunnerOptionsError

SETUP_PY = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "setup.py"))


def is_dataflow(runner: str) -> bool:
    return runner.split(".")[-1] in ("DataflowRunner", "dataflow")


def dataflow_args(beam_args: Sequence[str], user_modules: Sequence[str] = ()) -> List[str]:
    """Beam arguments for Dataflow with what workers need added: our package, and the
    `user_modules` (files or package folders beside the config) as a wheel.

    Raises:
      RunnerOptionsError: a required option (project, region, temp_location) is missing or local.
    """
    args = list(beam_args)
    options = PipelineOptions(args)
    gcp = options.view_as(GoogleCloudOptions)
    for name, value in (("--project", gcp.project), ("--region", gcp.region), ("--temp_location", gcp.temp_location)):
        if not value:
            raise RunnerOptionsError(f"{name}: DataflowRunner needs {name} (see README, 'Running on Dataflow')")
    if "://" not in gcp.temp_location:
        raise RunnerOptionsError(f"--temp_location: Dataflow workers cannot use the local path {gcp.temp_location}; "
                          "use gs://...")
    setup = options.view_as(SetupOptions)
    if not setup.setup_file and not setup.extra_packages:
        if not os.path.exists(SETUP_PY):
            raise RunnerOptionsError("--setup_file: this installation has no setup.py to ship to workers; pass "
                              "--setup_file or --extra_package")
        args += ["--setup_file", SETUP_PY]
    if user_modules:
        args += ["--extra_package", _user_code_wheel(user_modules)]
    if not gcp.staging_location:
        args += ["--staging_location", gcp.temp_location.rstrip("/") + "/staging"]
    return args


def _user_code_wheel(modules: Sequence[str]) -> str:
    """The wheel of `modules`, in a folder of its own kept until this process ends (the
    job is submitted, and the wheel staged, before then)."""
    from runners.packaging import user_code_wheel

    folder = tempfile.mkdtemp(prefix="dataprep-user-code-")
    atexit.register(shutil.rmtree, folder, True)
    return user_code_wheel(modules, folder)


def staged_files(result) -> List[str]:
    """The files a (dry-run) Dataflow job would stage: every environment dependency."""
    from apache_beam.portability.api import beam_runner_api_pb2

    job = getattr(result, "job", None)
    if job is None:
        return []
    names = []
    for env in job.proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            if dep.role_urn.endswith("staging_to:v1"):
                names.append(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name)
    return sorted(set(names))
