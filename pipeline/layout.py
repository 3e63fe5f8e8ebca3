"""The output folders of one run (`OUT/<run_id>/...`, see ../shared/CONTRACT.md)."""

from __future__ import annotations

import logging
import posixpath
import contextlib
import os
import tempfile
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger("dataprep")
STAGING_PREFIX = ".staging-"   # OUT/.staging-<run_id>/: a run's files until it reaches COMPLETE


@dataclass(frozen=True)
class Layout:
    """Paths under one run's folder; local or gs://."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

    def name_of(self, path: str) -> str:
        """A path under the run's folder as its name there (`raw/train`)."""
        prefix = self.root.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under {self.root}")
        return path[len(prefix):]

    def raw(self, split: str) -> str:
        return self.join("raw", split)

    def transformed(self, split: str) -> str:
        return self.join("transformed", split)

    @property
    def quarantine(self) -> str:
        return self.join("quarantine")

    @property
    def duplicates(self) -> str:
        return self.join("duplicates")

    @property
    def review(self) -> str:
        return self.join("review")

    @property
    def annotation_faults(self) -> str:
        return self.join("annotation_faults")

    def tfx_examples(self, kind: str) -> str:
        """`tfx/raw` or `tfx/transformed`: TFX's Examples layout, a `Split-<name>/` folder per split."""
        return self.join("tfx", kind)

    def tfx_split(self, kind: str, split: str) -> str:
        """The TFRecord shards of one split (data files only, as TFX globs `Split-<name>/*`)."""
        return self.join("tfx", kind, f"Split-{split}")

    @property
    def tfx_statistics(self) -> str:
        """TFX's ExampleStatistics layout: `Split-<name>/FeatureStats.pb` per raw split."""
        return self.join("tfx", "statistics")

    @property
    def annotations(self) -> str:
        """The label history: every label the run read, with its source file, round and whether it was used."""
        return self.join("annotations")

    @property
    def run_id(self) -> str:
        """The run's id: the folder's name (less the staging prefix while the run writes there)."""
        name = posixpath.basename(self.root.rstrip("/"))
        return name[len(STAGING_PREFIX):] if name.startswith(STAGING_PREFIX) else name

    @property
    def transform_fn(self) -> str:
        return self.join("transform_fn")

    @property
    def transformed_metadata(self) -> str:
        return self.join("transformed_metadata")

    @property
    def report(self) -> str:
        return self.join("report.json")

    @property
    def report_html(self) -> str:
        return self.join("report.html")

    @property
    def tmp(self) -> str:
        """Scratch space of the job (TFT's temp files, the job's results); removed after a run."""
        return self.join("tmp")

    @property
    def spill(self) -> str:
        """The files the job's large shuffles move instead of rows (`transforms/spill.py`)."""
        return self.join("tmp", "spill")

    @property
    def progress(self) -> str:
        """Where the read stage leaves the bytes it has read, for the progress line."""
        return self.join("tmp", "progress")

    @property
    def job_results(self) -> str:
        """The job's small combine results, which the launcher turns into report.json."""
        return self.join("tmp", "job_results.json")


def remove_folder(path: str) -> None:
    """Removes a folder (local or gs://) if it is there; a failure is a warning naming it, never
    raised over the error of the run being closed."""
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # noqa: BLE001 - best effort: a leftover folder is named, not raised
        log.warning("could not remove %s: %s", path, e)
@contextlib.contextmanager
def temp_folder(layout: Layout):
    """Python's temp folder is the run's `tmp/` while the block runs (a local output only).

    Around `beam.Pipeline(...)`: Beam makes its `beam-pipeline-temp*` folder there, in TMPDIR
    otherwise, and removes it only when the job ends; a killed launcher left one in TMPDIR
    per run. Under the staging folder, it goes with it (`close_abandoned_runs` removes a
    killed run's staging folder)."""
    if "://" in layout.root:
        yield
        return
    os.makedirs(layout.tmp, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = layout.tmp
    try:
        yield
    finally:
        tempfile.tempdir = previous


def check_output_root(root: str, field: str) -> None:
    """A local output root is a folder, or can be made one: neither it nor a folder above
    it is a regular file. Checked before anything is recorded.

    Raises:
      ConfigError: naming `field` (`--output` or `output.path`) and the file in the way.
    """
    from pipeline.config import ConfigError

    if "://" in root:
        return
    probe = os.path.abspath(root)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(root) else f"is under {probe}, which is a file"
        raise ConfigError(f"{field}: {root} {where}, not a folder")
