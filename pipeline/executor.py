"""The executor: builds the run's Beam job and runs it. It knows nothing of ML Metadata.

As TFX keeps a component's executor apart from its driver and publisher
(`tfx/dsl/components/base/base_executor.py`), this takes what the driver decided (the config,
the fingerprinted input files, the staging folder, the pipeline options) and gives back what
the job computed (`JobOutput`): the job's small results (`tmp/job_results.json`, with the rows
each output folder was written), and the analysed statistics read back from the saved
transform graph. Recording stages and outputs is the launcher's (`pipeline/run.py`) and the
publisher's (`pipeline/publisher.py`).

The Beam tuning patches (`runners/tuning/`) are installed from `build()` until `close()`:
only while this job is built and run.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.build import Plan, build_pipeline, feature_specs
from pipeline.config import Config
from pipeline.failures import PipelineFailure
from pipeline.inputs import InputFile
from pipeline.layout import Layout, temp_folder
from pipeline.report import read_json
from runners import tuning
from runners.profile import execution_profile
from runners.tuning.imports import lean


@dataclass(frozen=True)
class JobOutput:
    """What a finished job computed: its small results (see `pipeline/report.py`) and, with
    features, the analysed statistics of the saved graph; or, for a dry run, the files it
    would have staged."""

    results: Dict
    features: Optional[Dict] = None
    dry_run: bool = False
    staged: Optional[List] = None


class Job:
    """One Beam job: `build()` (tuning installed), `run()`, `close()` (tuning removed). Use it as a
    context manager. `result` (Beam's PipelineResult, once submitted) and `local_tempdir` are
    for the launcher's clean-up of a failed or canceled run."""

    def __init__(self, cfg: Config, files: Sequence[InputFile], layout: Layout, options: PipelineOptions,
                 runner: str, progress_dir: Optional[str] = None, previous_splits: Optional[Dict[str, str]] = None,
                 since: Optional[Tuple[Dict[str, str], Optional[str]]] = None):
        self._cfg = cfg
        self._files = list(files)
        self._layout = layout
        self._options = options
        self._runner = runner
        self._progress_dir = progress_dir
        self._previous_splits = previous_splits   # split.sticky: the kept run's raw split files
        self._since = since                       # (the previous run's raw split files, its label column)
        self._scope = contextlib.ExitStack()
        self.pipeline: Optional[beam.Pipeline] = None
        self.plan: Optional[Plan] = None
        self.result = None
        self.tuning: tuple = ()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self) -> Plan:
        """Adds the whole graph to a new pipeline; returns its plan (the stages built)."""
        if self._cfg.features:   # imported before the heap is frozen, so that TensorFlow is frozen too
            with lean():
                importlib.import_module("tensorflow_transform.beam")
        self.tuning = self._scope.enter_context(tuning.tuned(self._runner, self._options))
        with temp_folder(self._layout):   # Beam's beam-pipeline-temp* under the staging folder, not in TMPDIR
            self.pipeline = beam.Pipeline(options=self._options)
        profile = execution_profile(self._runner, sum(f.size for f in self._files), self._layout.spill)
        self.plan = build_pipeline(self.pipeline, self._cfg, self._files, self._layout, shuffle=profile,
                                   progress_dir=self._progress_dir, previous_splits=self._previous_splits,
                                   since=self._since)
        tuning.freeze_more()     # the traced graphs and the pipeline too
        return self.plan

    def run(self, check_canceled: Callable[[], None] = lambda: None, dry_run: bool = False) -> JobOutput:
        """Runs the built job to its end.

        Raises:
          PipelineFailure: the job ended in another state than DONE.
        """
        check_canceled()
        with tuning.submitting():     # Beam's job server for Flink would take SIGINT over
            self.result = self.pipeline.run()
        state = self.result.wait_until_finish()
        if dry_run:   # built, and its files listed for staging, but not submitted
            from runners.dataflow import staged_files

            return JobOutput(results={}, dry_run=True, staged=staged_files(self.result))
        if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
            raise PipelineFailure(f"the Beam job ended in state {state}")
        check_canceled()
        results = read_json(self.plan.job_results)
        features = None
        if "transform" in self.plan.stages:   # the analysed statistics (means, vocabulary sizes, boundaries)
            from transforms.features import summarize_transform

            features = summarize_transform(self._layout.root, feature_specs(self._cfg))
        return JobOutput(results=results, features=features)

    @property
    def local_tempdir(self) -> Optional[str]:
        """Beam's temp folder in TMPDIR, made when the pipeline was created (removed by
        `Pipeline.run()` only once it was called)."""
        return self.pipeline.local_tempdir if self.pipeline is not None else None

    def close(self) -> None:
        """The tuning patches removed: the process sees plain Beam again."""
        self._scope.close()
