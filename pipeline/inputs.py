"""The run's input files: matched from the config's globs, checked, fingerprinted.

Two kinds of input: the examples (`inputs:`, kind DATA) and the long-form annotation
files (`labels.annotations`: one source or a list of them, the labelling rounds; kind
ANNOTATIONS, tables or Label Studio exports). Everything here runs in the launching
process before the job is built, so a missing file or column is a ConfigError (exit 2)
naming the config field, not a failed job.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from pipeline.config import AnnotationsConfig, Config, ConfigError, InputConfig, did_you_mean
from runners import redact

DATA = "data"
ANNOTATIONS = "annotations"


@dataclass(frozen=True)
class InputFile:
    """One matched file: its kind, the config entry it came from, and its fingerprint."""

    kind: str          # DATA or ANNOTATIONS
    index: int         # DATA: cfg.inputs[index]; ANNOTATIONS: cfg.labels.annotation_sources[index] (round index + 1)
    uri: str
    size: int
    sha256: str = ""   # filled by `fingerprinted`
    field: str = ""    # the config field it came from, where it is not `inputs[index]` (`labels.annotations[1]`)
    mtime: float = 0.0  # when it was fingerprinted (with `size`): `check_unchanged` compares them after the job

    @property
    def shown(self) -> str:
        """The uri as it is recorded and printed: credentials in it (`https://u:pw@h/x.csv`) redacted."""
        return redact(self.uri)

    @property
    def where(self) -> str:
        """The config field the file came from, for messages: `inputs[1]` or `labels.annotations`."""
        return self.field or (f"inputs[{self.index}]" if self.kind == DATA else "labels.annotations")


def input_entries(cfg: Config) -> List[Tuple[str, int, Union[InputConfig, AnnotationsConfig]]]:
    """(kind, index, config entry) of every input: the data inputs, then the annotations."""
    entries = [(DATA, i, inp) for i, inp in enumerate(cfg.inputs)]
    if cfg.labels:
        entries += [(ANNOTATIONS, i, a) for i, a in enumerate(cfg.labels.annotation_sources)]
    return entries


def entry_of(cfg: Config, f: InputFile) -> Union[InputConfig, AnnotationsConfig]:
    """The config entry (format, source, csv options) a matched file came from."""
    return cfg.inputs[f.index] if f.kind == DATA else cfg.labels.annotation_sources[f.index]


def match_inputs(cfg: Config) -> List[InputFile]:
    """Every file the config's globs match, in a stable order (kind, index, uri).

    Raises:
      ConfigError: an input matches no file, or cannot be listed.
    """
    out = []
    annotations_at: dict = {}
    for kind, index, entry in input_entries(cfg):
        field = cfg.labels.annotations_field(index) if kind == ANNOTATIONS else ""
        where = InputFile(kind, index, "", 0, field=field).where
        pattern = cfg.resolve(entry.path)
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # Beam raises BeamIOError and friends per filesystem
            raise ConfigError(f"{where}.path: cannot list {pattern}: {e}") from None
        files = sorted((m.path, m.size_in_bytes) for m in matched)
        if not files:
            raise ConfigError(f"{where}.path: no file matches {pattern}")
        folders = [path for path, _ in files if "://" not in path and os.path.isdir(path)]
        if folders:   # a folder read as a file was an IsADirectoryError traceback
            raise ConfigError(f"{where}.path: {redact(folders[0])} is a folder, not a file; name the files in it "
                              f"(e.g. {redact(os.path.join(folders[0], '*.' + entry.format))})")
        if kind == ANNOTATIONS:   # a file's labels are of one round: which one would be a guess
            for path, _ in files:
                if annotations_at.setdefault(path, where) != where:
                    raise ConfigError(f"{where}.path: {path} is matched by {annotations_at[path]} too; a file "
                                      "belongs to one round")
        out += [InputFile(kind, index, path, size, field=field) for path, size in files]
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
    from transforms.read.compressed import CorruptInput, open_input
    from transforms.read.encoding import as_utf8

    for f in files:
        entry = entry_of(cfg, f)
        if entry.format == "label_studio":
            check_label_studio_export(f, entry)
            continue
        wanted = list(cfg.input_columns) if f.kind == DATA else [entry.id, entry.annotator, entry.label]
        if entry.format == "csv" and entry.csv.header:
            # as the job reads it: decompressed (`.csv.gz`), and in its encoding
            with open_input(f.uri, f.shown) as fh:
                try:
                    head, _ = split_header(iter_line_blocks(as_utf8(fh, entry.csv.encoding)[0], 1 << 16))
                except CorruptInput:
                    continue   # a broken stream fails the run (exit 1, recorded), small file or big, not here
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
            raise ConfigError(f"{f.where}.path: {f.uri} has no column(s) {missing}{_suggestions(missing, present)}; "
                              f"it has {present}")


def _suggestions(missing: Sequence[str], present: Sequence[str]) -> str:
    """` (did you mean 'species'?)`, or ` (did you mean 'a' for 'x', 'b' for 'y'?)` for several."""
    close = {c: did_you_mean(c, present) for c in missing}
    close = {c: hint[len(" (did you mean "):-len("?)")] for c, hint in close.items() if hint}
    if not close:
        return ""
    if len(missing) == 1:
        return f" (did you mean {next(iter(close.values()))}?)"
    return " (did you mean " + ", ".join(f"{v} for {k!r}" for k, v in close.items()) + "?)"


def read_export(f: InputFile) -> list:
    """The tasks of a Label Studio export (`labels.annotations` with `format: label_studio`).

    Raises:
      ConfigError: naming the field and the file, when it is not Label Studio's JSON export.
    """
    from transforms.labels.label_studio import ExportError, load_export

    with FileSystems.open(f.uri, compression_type="uncompressed") as fh:
        data = fh.read()
    try:
        return load_export(data, f.shown)
    except ExportError as e:
        raise ConfigError(f"{f.where}.path: {e}") from None


def check_label_studio_export(f: InputFile, entry: AnnotationsConfig) -> None:
    """An export is read before anything runs: it must be Label Studio's JSON export, and its
    labels must be those of one Choices control: `from_name`, or the only one it has.

    Raises:
      ConfigError: naming `labels.annotations...path` or `...from_name`.
    """
    from transforms.labels.label_studio import choice_controls

    controls = choice_controls(read_export(f))
    if entry.from_name is None and len(controls) > 1:
        raise ConfigError(f"{f.where}.from_name: {f.shown} has the choices of several controls {controls}: "
                          "name the one that holds the label")
    if entry.from_name is not None and controls and entry.from_name not in controls:
        raise ConfigError(f"{f.where}.from_name: {f.shown} has no choices of control {entry.from_name!r}; "
                          f"it has {controls}")


def fingerprint(uri: str) -> str:
    """The sha256 of a file's bytes."""
    h = hashlib.sha256()
    with FileSystems.open(uri, compression_type="uncompressed") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprinted(files: Sequence[InputFile]) -> List[InputFile]:
    """The files with their sha256, and their size and modification time as they were just
    before it was computed (what `check_unchanged` compares with after the job)."""
    out = []
    for f in files:
        size, mtime = file_stat(f.uri)
        out.append(replace(f, size=size, mtime=mtime, sha256=fingerprint(f.uri)))
    return out


def file_stat(uri: str) -> Tuple[int, float]:
    """(size in bytes, modification time in seconds) of a file; (-1, 0.0) when it is gone."""
    if "://" not in uri:
        try:
            st = os.stat(uri)
        except FileNotFoundError:
            return -1, 0.0
        return st.st_size, st.st_mtime_ns / 1e9
    try:
        [m] = FileSystems.match([uri])[0].metadata_list
    except Exception:  # gone, or not one file any more: Beam raises per filesystem
        return -1, 0.0
    return m.size_in_bytes, m.last_updated_in_seconds


class InputChanged(RuntimeError):
    """An input file is not what was fingerprinted when the run started: it changed while the
    job read it, so the rows read and the sha256 recorded may disagree. The run fails."""


def check_unchanged(files: Sequence[InputFile]) -> None:
    """Each input file is still as it was fingerprinted: same size and modification time, or
    (a newer time alone: touched, copied over with the same bytes) the same sha256. Called
    after the job succeeded and before anything is published. A stat per file; a file is
    read again only when its time changed and its size did not.

    Raises:
      InputChanged: naming the first file that changed (or is gone).
    """
    for f in files:
        size, mtime = file_stat(f.uri)
        if size == f.size and mtime == f.mtime:
            continue
        if size < 0:
            what = "removed"
        elif size != f.size:
            what = f"{f.size:,} → {size:,} bytes"
        elif fingerprint(f.uri) == f.sha256:
            continue
        else:
            what = "same size, other bytes"
        raise InputChanged(f"{f.where}.path: {f.shown} changed while the run read it ({what}); nothing was "
                           "published: run again once the file is complete")


def empty_inputs(files: Sequence[InputFile], rows_per_file: Dict[str, int]) -> List[str]:
    """Warnings for the data files the job read no row from (a header only, or empty),
    given the rows per file of the report (`report.json` → `inputs`, by shown name)."""
    empty = [f for f in files if f.kind == DATA and not rows_per_file.get(f.shown)]
    if not empty:
        return []
    total = sum(rows_per_file.values())
    first = f"{empty[0].where}.path: {empty[0].shown} has no rows (only a header, or nothing)"
    more = f" and {len(empty) - 1} more input file(s) have none" if len(empty) > 1 else ""
    tail = "; the run has no input rows at all" if not total else ""
    return [first + more + tail]


def source_names(files: Sequence[InputFile]) -> dict:
    """uri → the name the job gives its rows' source, where the two differ (credentials)."""
    return {f.uri: f.shown for f in files if f.shown != f.uri}


def inputs_fingerprint(files: Sequence[InputFile]) -> str:
    """One hash of every input's uri and content: equal fingerprints, equal inputs."""
    listing = json.dumps(sorted((f.uri, f.sha256) for f in files))
    return hashlib.sha256(listing.encode()).hexdigest()
