"""The output folders of one run (`OUT/<run_id>/...`, see ../shared/CONTRACT.md)."""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True)
class Layout:
    """Paths under one run's folder; local or gs://."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

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
