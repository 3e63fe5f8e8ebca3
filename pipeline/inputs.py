"""The run's input files: matched from the config's globs, checked, fingerprinted.

Two kinds of input: the examples (`inputs:`, kind DATA) and the long-form annotation
files (`labels.annotations`, kind ANNOTATIONS). Everything here runs in the launching
process before the job is built, so a missing file or column is a ConfigError (exit 2)
naming the config field, not a failed job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import List, Sequence, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from pipeline.config import AnnotationsConfig, Config, ConfigError, InputConfig
from runners import redact

DATA = "data"
ANNOTATIONS = "annotations"


@dataclass(frozen=True)
class InputFile:
    """One matched file: its kind, the config entry it came from, and its fingerprint."""

    kind: str          # DATA or ANNOTATIONS
    index: int         # DATA: cfg.inputs[index]; ANNOTATIONS: 0
    uri: str
    size: int
    sha256: str = ""   # filled by `fingerprinted`

    @property
    def shown(self) -> str:
        """The uri as it is recorded and printed: credentials in it (`https://u:pw@h/x.csv`) redacted."""
        return redact(self.uri)

    @property
    def where(self) -> str:
        """The config field the file came from, for messages: `inputs[1]` or `labels.annotations`."""
        return f"inputs[{self.index}]" if self.kind == DATA else "labels.annotations"


def input_entries(cfg: Config) -> List[Tuple[str, int, Union[InputConfig, AnnotationsConfig]]]:
    """(kind, index, config entry) of every input: the data inputs, then the annotations."""
    entries = [(DATA, i, inp) for i, inp in enumerate(cfg.inputs)]
    if cfg.labels and cfg.labels.annotations:
        entries.append((ANNOTATIONS, 0, cfg.labels.annotations))
    return entries


def entry_of(cfg: Config, f: InputFile) -> Union[InputConfig, AnnotationsConfig]:
    """The config entry (format, source, csv options) a matched file came from."""
    return cfg.inputs[f.index] if f.kind == DATA else cfg.labels.annotations


def match_inputs(cfg: Config) -> List[InputFile]:
    """Every file the config's globs match, in a stable order (kind, index, uri).

    Raises:
      ConfigError: an input matches no file, or cannot be listed.
    """
    out = []
    for kind, index, entry in input_entries(cfg):
        where = InputFile(kind, index, "", 0).where
        pattern = cfg.resolve(entry.path)
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # Beam raises BeamIOError and friends per filesystem
            raise ConfigError(f"{where}.path: cannot list {pattern}: {e}") from None
        files = sorted((m.path, m.size_in_bytes) for m in matched)
        if not files:
            raise ConfigError(f"{where}.path: no file matches {pattern}")
        out += [InputFile(kind, index, path, size) for path, size in files]
    return out


def check_input_columns(cfg: Config, files: Sequence[InputFile]) -> None:
    """Every file has the columns the config reads (CSV header or Parquet schema), checked
    before anything runs; header-less CSV and JSON lines are checked row by row instead.

    Raises:
      ConfigError: naming the input, the file and the missing (or repeated) columns.
    """
    import pyarrow.parquet as pq

    from pipeline.build import reader_spec
    from transforms.read import iter_line_blocks, parse_header, split_header

    for f in files:
        entry = entry_of(cfg, f)
        wanted = list(cfg.input_columns) if f.kind == DATA else [entry.id, entry.annotator, entry.label]
        if entry.format == "csv" and entry.csv.header:
            with FileSystems.open(f.uri, compression_type="uncompressed") as fh:
                head, _ = split_header(iter_line_blocks(fh, 1 << 16))
            if not head:
                continue  # an empty file: a warning and no rows, not an error
            present = parse_header(head, reader_spec(entry))
        elif entry.format == "parquet":
            with FileSystems.open(f.uri, compression_type="uncompressed") as fh:
                present = pq.ParquetFile(fh).schema_arrow.names
        else:
            continue
        repeated = sorted({c for c in present if present.count(c) > 1})
        if repeated:   # which copy is meant is a guess (pandas renames to n.1): refused
            raise ConfigError(f"{f.where}.path: {f.uri}: the header names column(s) {repeated} more than once")
        missing = [c for c in wanted if c not in present]
        if missing:
            raise ConfigError(f"{f.where}.path: {f.uri} has no column(s) {missing}; it has {present}")


def fingerprint(uri: str) -> str:
    """The sha256 of a file's bytes."""
    h = hashlib.sha256()
    with FileSystems.open(uri, compression_type="uncompressed") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprinted(files: Sequence[InputFile]) -> List[InputFile]:
    return [replace(f, sha256=fingerprint(f.uri)) for f in files]


def source_names(files: Sequence[InputFile]) -> dict:
    """uri → the name the job gives its rows' source, where the two differ (credentials)."""
    return {f.uri: f.shown for f in files if f.shown != f.uri}


def inputs_fingerprint(files: Sequence[InputFile]) -> str:
    """One hash of every input's uri and content: equal fingerprints, equal inputs."""
    listing = json.dumps(sorted((f.uri, f.sha256) for f in files))
    return hashlib.sha256(listing.encode()).hexdigest()
