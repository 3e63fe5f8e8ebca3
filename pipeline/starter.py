"""`dataprep init DATA`: a starter config inferred from the first records of a data file.

The file is read by the run's own reader (`pipeline/sample.py`) and each column is typed by
the run's own coercion (`transforms.clean.coerce`): a column is `int`, `float` or `bool` only
when every sampled value the reader gives parses as that, so the run quarantines no sampled
row as `type:<column>`. What it decides, each said in a comment of the config:

- the format (from the file name, else its first bytes) and, for CSV, the dialect: the
  delimiter (the one that cuts every line into the same number of fields), whether the first
  line is a header (not when one of its fields is a number or occurs again in its column; yes
  when a column of numbers has a word there; else csv.Sniffer's guess), quoting (off when it
  turns records into faults),
  trim (when values are padded with spaces) and the missing-value markers (`NA`, `?`, `NULL`
  wherever they occur, `None`, `-` in a column of numbers);
- the label (`--label`, else a column named like one, else the last column with few values),
  the id (`--id`, else a column named like an id whose sampled values are unique),
  metadata (up to three low-cardinality text columns), a feature per other column (`zscore`
  for numbers, `vocabulary` for categories, `tfidf` for free text, `passthrough` for booleans),
  and a split stratified by the label.

A header-less file gets its names from `--names`, else `column_1`, `column_2`, ...; a header
that names a column twice is refused with the names and their positions (the run would refuse
it too).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipeline.config import did_you_mean, parse_config
from pipeline.preflight import NA_MARKERS
from pipeline.sample import SAMPLE_ROWS, Sample, read_sample
from transforms.read import ReaderSpec

FORMATS = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".txt": "csv", ".data": "csv", ".test": "csv",
           ".dat": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
COMPRESSED = (".gz", ".bz2", ".zst", ".deflate")
DELIMITERS = (",", "\t", ";", "|")
LABEL_NAMES = ("label", "labels", "target", "class", "y", "outcome", "category")
ID_NAME = re.compile(r"(?i)^(id|key|uuid|guid)$|[_\-. ](id|key|uuid)$|[a-z]Id$")
MAX_METADATA = 3
LOW_CARDINALITY = 20       # at most this many distinct values: a category (metadata, label guess)
HEAD_BYTES = 1 << 16       # what the dialect is sniffed from
# missing-value markers taken wherever they occur (pandas reads them as NaN by default); the
# rest of `NA_MARKERS` (None, -, ...) only in a column of numbers, where they cannot be a value
CLEAR_NA_MARKERS = ("NA", "N/A", "n/a", "#N/A", "NULL", "null", "NaN", "nan", "?")


class StarterError(ValueError):
    """DATA cannot be read as data: one line, exit 2."""


@dataclass
class ColumnFacts:
    """What the sample says about one column."""

    name: str
    kind: str               # string | int | float | bool
    present: int            # non-null values
    distinct: int
    unique: bool            # every sampled row has a value and no two are equal
    text: bool              # free text: long values with spaces
    non_finite: int = 0
    values: Tuple = ()      # the distinct (typed) values of a low-cardinality column, most frequent first
    index: bool = False     # whole numbers increasing row by row: a row number, not a measurement


def starter_config(data: str, label: Optional[str] = None, id_column: Optional[str] = None,
                   fmt: Optional[str] = None, names: Optional[Sequence[str]] = None,
                   sample_rows: int = SAMPLE_ROWS) -> str:
    """The YAML text of a starter config for the file `data` (its first file, for a glob).

    Raises:
      StarterError: no such file, an empty one, a header naming a column twice, an unknown
        `label` / `id_column`.
    """
    path = _first_file(data)
    fmt = fmt or _format_of(path)
    notes: List[str] = []
    if fmt == "csv":
        spec, columns, notes = _csv_dialect(path, names)
    elif fmt == "jsonl":
        spec, columns = ReaderSpec(format="jsonl", na_values=("",)), _jsonl_keys(path, sample_rows)
    else:
        spec, columns, notes = ReaderSpec(format="parquet"), *_parquet_columns(path)
    if not columns:
        raise StarterError(f"{data}: no columns found (an empty file?)")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        where = "; ".join(f"{c!r} at columns {[i + 1 for i, n in enumerate(columns) if n == c]}" for c in repeated)
        raise StarterError(f"{path}: the header names a column more than once ({where}); dataprep refuses such "
                           "a file, as which copy is meant would be a guess: rename one in the file")
    wanted = [c for c in columns if c != ""]
    if len(wanted) < len(columns):
        notes.append(f"column {columns.index('') + 1} has no name in the header: it is not read")
    sample = read_sample([path], spec, wanted, sample_rows)
    if fmt == "csv":
        spec, sample, more = _settle_csv(path, spec, wanted, sample, sample_rows)
        notes += more
    if not sample.rows.num_rows:
        raise StarterError(f"{path}: no readable record in the first {sample_rows:,}")
    facts = {c: _facts(c, sample.rows.column(c).combine_chunks(), sample.rows.num_rows) for c in wanted}
    label = _pick_label(label, facts, notes)
    if facts[label].kind == "bool":    # a label's classes keep their spelling (yes/no, not true/false)
        facts[label] = _facts(label, sample.rows.column(label).combine_chunks(), sample.rows.num_rows, kinds=())
    id_column = _pick_id(id_column, facts, label, notes)
    text = _render(data, path, fmt, spec, facts, label, id_column, sample, notes)
    # what is printed must be a config the run accepts: parsed here as `dataprep validate` would
    parse_config(yaml.safe_load(text), base_dir=os.getcwd(), raw_text=text)
    return text


# ---- the file and its format ---------------------------------------------------------------

def _first_file(data: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    if "://" in data:
        matched = sorted(m.path for m in FileSystems.match([data])[0].metadata_list)
    else:
        matched = sorted(glob.glob(data)) if glob.has_magic(data) else ([data] if os.path.isfile(data) else [])
    if not matched:
        raise StarterError(f"{data}: no such file")
    return matched[0] if "://" in matched[0] else os.path.abspath(matched[0])


def _format_of(path: str) -> str:
    name = path.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[:-len(ext)]
    ext = os.path.splitext(name)[1]
    if ext in FORMATS:
        return FORMATS[ext]
    head = _head_bytes(path, 4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


def _head_bytes(path: str, n: int = HEAD_BYTES) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:     # compression from the name, as the reader does
        return f.read(n)


def _head_lines(path: str) -> List[str]:
    """The whole lines of the file's first `HEAD_BYTES` (a UTF-8 BOM dropped), blank ones left out."""
    head = _head_bytes(path)
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    lines = head.decode("utf-8", "replace").split("\n")
    if len(head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]     # cut mid-line
    return [line.rstrip("\r") for line in lines if line.strip("\r")]


# ---- CSV: the dialect --------------------------------------------------------------------

def _fields(line: str, delimiter: str, quote: Optional[str]) -> List[str]:
    kw = {"delimiter": delimiter, "quotechar": quote} if quote else {"delimiter": delimiter, "quoting": csv.QUOTE_NONE}
    try:
        return next(csv.reader([line], **kw))
    except (csv.Error, StopIteration):
        return [line]


def _delimiter(lines: Sequence[str], path: str) -> str:
    """The delimiter that cuts the most lines into the same number (> 1) of fields."""
    best, score = ",", (-1.0, 0)
    for d in DELIMITERS:
        counts = [len(_fields(line, d, '"')) for line in lines[:200]]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        s = (counts.count(mode) / len(counts), mode)
        if s > score:
            best, score = d, s
    if score[0] < 0 and path.lower().endswith((".tsv", ".tab")):
        return "\t"
    return best


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _has_header(lines: Sequence[str], delimiter: str) -> Tuple[bool, str]:
    """Whether the first line names the columns, and why it is thought so."""
    rows = [_fields(line, delimiter, '"') for line in lines[:200]]
    first, rest = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    if not rest:
        return False, "it has one line"
    if any(_NUMBER.match(v) for v in first):
        return False, "its first line holds a number"
    for j, name in enumerate(first):
        if name.strip() and any(len(r) > j and r[j] == name for r in rest):
            return False, f"{name!r} of its first line occurs again in column {j + 1}: a value, not a name"
    if len(set(first)) < len(first) and "" not in first:
        return True, "its first line repeats a name"      # refused later, naming it
    for j in range(len(first)):
        column = [r[j] for r in rest if r[j].strip()]
        if column and all(_NUMBER.match(v) for v in column):
            return True, f"column {j + 1} holds numbers but its first line says {first[j]!r}"
    try:
        sniffed = csv.Sniffer().has_header("\n".join(lines[:50]))
    except csv.Error:
        sniffed = False
    return sniffed, "csv.Sniffer's guess (no column of numbers to tell by)"


def _csv_dialect(path: str, names: Optional[Sequence[str]]) -> Tuple[ReaderSpec, List[str], List[str]]:
    """A first reader spec for a CSV file (quote, trim and NA values are settled on the sample),
    its column names, and the notes for the config."""
    from transforms.read import parse_header

    lines = _head_lines(path)
    if not lines:
        raise StarterError(f"{path}: an empty file")
    delimiter = _delimiter(lines, path)
    notes = [f"delimiter {delimiter!r}: it cuts the lines into the same number of fields"]
    if names:
        header, why = False, "--names gives the columns"
        columns = [n.strip() for n in names]
        if _has_header(lines, delimiter)[0]:
            notes.append("the first line looks like a header: with --names it is read as a record (drop "
                         "--names to take the header's names)")
    else:
        header, why = _has_header(lines, delimiter)
    spec = ReaderSpec(format="csv", header=header, delimiter=delimiter)
    if header:
        columns = parse_header(lines[0].encode("utf-8"), spec)
        notes.append(f"header: yes ({why})")
    else:
        if not names:
            n = len(_fields(lines[0], delimiter, '"'))
            columns = [f"column_{j + 1}" for j in range(n)]
            notes.append(f"header: no ({why}): the columns are named column_1 .. column_{n}; give their "
                         "names with dataprep init --names a,b,...")
        else:
            notes.append(f"header: no ({why})")
        spec = ReaderSpec(format="csv", header=False, delimiter=delimiter, names=tuple(columns))
    return spec, columns, notes


def _with(spec: ReaderSpec, **changes) -> ReaderSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _settle_csv(path: str, spec: ReaderSpec, wanted: Sequence[str], sample: Sample, rows: int
                ) -> Tuple[ReaderSpec, Sample, List[str]]:
    """Quoting, trim and NA values decided on the sample; the sample read again with them."""
    notes = []
    if sample.faults.num_rows:
        unquoted = read_sample([path], _with(spec, quote_char=None), wanted, rows)
        if unquoted.faults.num_rows < sample.faults.num_rows:
            spec, sample = _with(spec, quote_char=None), unquoted
            notes.append("quote_char: null (the quotes in the data are text: read as quotes, they broke records)")
    table = sample.rows
    padded = []
    for c in wanted:
        values = pc.drop_null(table.column(c).combine_chunks())
        if len(values):
            trimmed = pc.utf8_trim_whitespace(values)
            if pc.sum(pc.not_equal(values, trimmed)).as_py() > len(values) / 2:
                padded.append(c)
    if padded:
        spec = _with(spec, trim=True)
        notes.append(f"trim: true (the values of {', '.join(padded[:3])}{' …' if len(padded) > 3 else ''} "
                     "are padded with spaces)")
    markers = _na_markers(table, wanted, spec.trim)
    if markers:
        spec = _with(spec, na_values=("",) + tuple(markers))
        notes.append(f"na_values: {list(spec.na_values)} ({', '.join(map(repr, markers))} mark(s) missing "
                     "values in the sample)")
    if padded or markers:
        sample = read_sample([path], spec, wanted, rows)
    if sample.faults.num_rows:
        reasons = sorted(set(sample.faults.column("reason").to_pylist()))
        notes.append(f"{sample.faults.num_rows:,} of the sampled records are faults the reader quarantines "
                     f"({', '.join(reasons)})")
    return spec, sample, notes


def _na_markers(table: pa.Table, wanted: Sequence[str], trim: bool) -> List[str]:
    """Values that mark a missing value: those that hardly mean anything else (`CLEAR_NA_MARKERS`:
    `NA`, `?`, `NULL`, ...) anywhere, and the other NA-like values (`None`, `-`, ...) in a column
    whose other values are all numbers."""
    from transforms.clean import coerce

    found: List[str] = []
    markers = pa.array(NA_MARKERS, pa.string())
    for c in wanted:
        values = pc.drop_null(table.column(c).combine_chunks())
        if trim:
            values = pc.utf8_trim_whitespace(values)
        is_marker = pc.is_in(values, value_set=markers)
        hits = set(pc.unique(pc.filter(values, is_marker)).to_pylist())
        if not hits:
            continue
        others = pc.filter(values, pc.invert(is_marker))
        numeric = len(others) > 0 and not coerce(others, "float")[1].any()
        for v in NA_MARKERS:
            if v in hits and (numeric or v in CLEAR_NA_MARKERS) and v not in found:
                found.append(v)
    return found


# ---- JSON lines and Parquet: the columns ---------------------------------------------------

def _jsonl_keys(path: str, rows: int) -> List[str]:
    """Every key of the first `rows` objects, in the order first seen."""
    from apache_beam.io.filesystems import FileSystems

    keys: Dict[str, None] = {}
    with FileSystems.open(path) as f:
        for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace")):
            if n >= rows:
                break
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
    return list(keys)


def _parquet_columns(path: str) -> Tuple[List[str], List[str]]:
    """The flat columns of a Parquet file (nested ones are not read: noted)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type="uncompressed") as f:
        schema = pq.ParquetFile(f).schema_arrow
    flat, notes = [], []
    for fld in schema:
        if pa.types.is_nested(fld.type):
            notes.append(f"column {fld.name!r} ({fld.type}) is nested: not read (dataprep reads flat columns)")
        else:
            flat.append(fld.name)
    return flat, notes


# ---- the columns ---------------------------------------------------------------------------

def _facts(name: str, array: pa.Array, rows: int, kinds: Sequence[str] = ("int", "float", "bool")) -> ColumnFacts:
    """A column's type (the first of int, float, bool that every sampled value parses as, else
    string: `coerce`, as the run types it) and its shape."""
    from transforms.clean import coerce

    present = len(array) - array.null_count
    kind = "string"
    typed = array
    if present:
        for k in kinds:
            typed_k, bad = coerce(array, k)
            if not bad.any():
                kind, typed = k, typed_k
                break
    values = pc.drop_null(typed)
    distinct = len(pc.unique(values)) if present else 0
    text = False
    if kind == "string" and present:
        strings = pc.cast(values, pa.string())
        lengths = pc.utf8_length(strings)
        spaced = pc.sum(pc.match_substring(strings, " ")).as_py() or 0
        # free text: long, spaced, and mostly different on each row (a category repeats)
        text = (pc.mean(lengths).as_py() or 0) >= 25 and spaced > present / 2 and distinct > present / 2
    non_finite = 0
    if kind == "float":
        non_finite = len(values) - (pc.sum(pc.is_finite(values)).as_py() or 0)
    top: Tuple = ()
    if present and distinct <= LOW_CARDINALITY:
        vc = pc.value_counts(values)
        pairs = sorted(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()), key=lambda p: (-p[1], p[0]))
        top = tuple(v for v, _ in pairs)
    index = False
    if kind == "int" and present == rows and rows > 1:
        steps = pc.subtract(typed.slice(1), typed.slice(0, rows - 1))
        index = pc.min(steps).as_py() > 0      # strictly increasing: a row number
    return ColumnFacts(name=name, kind=kind, present=present, distinct=distinct,
                       unique=present == rows and distinct == rows, text=text, non_finite=non_finite, values=top,
                       index=index)


def _pick_label(label: Optional[str], facts: Dict[str, ColumnFacts], notes: List[str]) -> str:
    if label is not None:
        if label not in facts:
            raise StarterError(f"--label: no column {label!r}{did_you_mean(label, facts)}; the columns are "
                               f"{list(facts)}")
        return label
    by_name = [c for c in facts if c.lower() in LABEL_NAMES]
    if by_name:
        notes.append(f"label: {by_name[0]!r}, guessed from its name: check it (dataprep init --label COL)")
        return by_name[0]
    few = [c for c, f in facts.items() if 2 <= f.distinct <= LOW_CARDINALITY]
    guess = few[-1] if few else list(facts)[-1]
    notes.append(f"label: {guess!r}, guessed ({'the last column with few values' if few else 'the last column'}): "
                 "check it (dataprep init --label COL)")
    return guess


def _pick_id(id_column: Optional[str], facts: Dict[str, ColumnFacts], label: str, notes: List[str]) -> Optional[str]:
    if id_column is not None:
        if id_column not in facts:
            raise StarterError(f"--id: no column {id_column!r}{did_you_mean(id_column, facts)}; the columns are "
                               f"{list(facts)}")
        if not facts[id_column].unique:
            notes.append(f"id: {id_column!r} repeats or is missing in the sample: rows sharing an id may land in "
                         f"different splits (split.group_by: {id_column} keeps them together)")
        return id_column
    named = [c for c, f in facts.items() if c != label and ID_NAME.search(c) and f.kind in ("int", "string")]
    unique = [c for c in named if facts[c].unique and not facts[c].text]
    if unique:
        notes.append(f"id: {unique[0]!r}, named like an id and unique in the sample")
        return unique[0]
    for c in named:
        if facts[c].distinct < facts[c].present:
            notes.append(f"id: none; {c!r} is named like an id but repeats (longitudinal data?): split.group_by "
                         "keeps its rows together")
            return None
    others = [c for c, f in facts.items() if c != label and f.unique and f.kind in ("int", "string") and not f.text]
    notes.append("id: none (example_id is then a hash of the file and line)"
                 + (f"; unique in the sample: {', '.join(others[:3])}" if others else ""))
    return None


# ---- the text ------------------------------------------------------------------------------

def _y(value) -> str:
    """A YAML flow scalar or sequence for `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 9, allow_unicode=True, sort_keys=False).strip()
    return text[:-3].rstrip() if text.endswith("\n...") or text.endswith("...") else text


def _slug(path: str) -> str:
    stem = os.path.basename(path)
    for ext in COMPRESSED:
        if stem.lower().endswith(ext):
            stem = stem[:-len(ext)]
    stem = os.path.splitext(stem)[0]
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "data"


def _feature(f: ColumnFacts) -> Tuple[Optional[str], str]:
    """(the feature entry, why) for a column that is neither the label nor the id."""
    if not f.present:
        return None, "empty in the sample"
    if f.distinct == 1:
        return None, "one value in the sample"
    if ID_NAME.search(f.name):
        return None, "named like an id"
    if f.index:
        return None, "it counts the rows: a row number"
    if f.kind in ("int", "float"):
        return "zscore", ""
    if f.kind == "bool":
        return "passthrough", ""
    if f.text:
        return "tfidf:1000", "free text"
    if f.unique and f.distinct > LOW_CARDINALITY:
        return None, "a different value on every sampled row (an identifier?)"
    return "vocabulary", ""


def _render(data: str, path: str, fmt: str, spec: ReaderSpec, facts: Dict[str, ColumnFacts], label: str,
            id_column: Optional[str], sample: Sample, notes: List[str]) -> str:
    n = sample.rows.num_rows
    whole = "all" if sample.whole else "the first"
    # the input is what the user named (a glob stays a glob), made absolute: the config may be saved anywhere
    source = data if "://" in data else os.path.abspath(data)
    lines = [f"# A starter config made by `dataprep init` from {whole} {sample.records:,} record(s) of",
             f"# {path}.",
             "# Read it through: each choice below is a guess from that sample. Then `dataprep validate` this",
             "# file (it reads the data again and warns about what would be quarantined), and `dataprep run` it.",
             f"name: {_y(_slug(path))}",
             "inputs:",
             f"  - path: {_y(source)}      # absolute; a relative path is relative to this file's folder",
             f"    format: {fmt}"]
    if fmt == "csv":
        csv_opts = {"header": spec.header, "delimiter": spec.delimiter}
        if spec.quote_char != '"':
            csv_opts["quote_char"] = spec.quote_char
        if spec.trim:
            csv_opts["trim"] = True
        if tuple(spec.na_values) != ("",):
            csv_opts["na_values"] = list(spec.na_values)
        if not spec.header:
            csv_opts["names"] = list(spec.names or ())
        lines.append(f"    csv: {_y(csv_opts)}")
    for note in notes:
        if not note.startswith(("label:", "id:")):
            lines.append(f"    # {note}")
    lines.append("schema:")
    for note in notes:
        if note.startswith(("label:", "id:")):
            lines.append(f"  # {note}")
    if id_column:
        lines.append(f"  id: {_y(id_column)}")
    lines.append(f"  label: {_y(label)}")
    label_facts = facts[label]
    if label_facts.present < n:
        lines.append(f"  # {n - label_facts.present:,} sampled row(s) have no label: quarantined as missing_label")
    lines.append(f"  columns:            # what the run accepts for every sampled value (int, float, bool, string)")
    for c, f in facts.items():
        kind = "string" if c == label and f.kind == "bool" else f.kind
        extra = []
        if not f.present:
            extra.append("empty in the sample")
        if f.non_finite:
            extra.append(f"{f.non_finite:,} NaN/inf: quarantined as non_finite:{c} unless clean.allow_non_finite")
        comment = f"   # {'; '.join(extra)}" if extra else ""
        lines.append(f"    {_y(c)}: {kind}{comment}")
    metadata = [c for c, f in facts.items() if c not in (label, id_column) and f.kind == "string" and not f.text
                and 2 <= f.distinct <= LOW_CARDINALITY and f.distinct < max(n / 2, 3)]
    lines.append("  # carried into every output row, and each value a slice of report.html (low-cardinality text)")
    lines.append(f"  metadata: {_y(metadata[:MAX_METADATA])}"
                 + (f"   # also: {', '.join(metadata[MAX_METADATA:])}" if len(metadata) > MAX_METADATA else ""))
    lines += ["clean:",
              "  # dedup: {keys: all}      # exact duplicate rows: the first kept, the others in duplicates/",
              "  rules: []"]
    if label_facts.values and len(label_facts.values) <= LOW_CARDINALITY:
        lines.append(f"  # - {{column: {_y(label)}, in: {_y(list(label_facts.values))}}}   "
                     "# the label values of the sample")
    lines += ["split:",
              "  fractions: {train: 0.6, dev: 0.2, test: 0.2}",
              f"  stratify_by: {_y([label])}      # each split gets the label's proportions",
              "  seed: 42"]
    if id_column is None:
        repeated = [note for note in notes if note.startswith("id: none; ")]
        if repeated:
            column = re.search(r"'([^']+)'", repeated[0]).group(1)
            lines.append(f"  group_by: {_y(column)}      # the rows of one {column} in one split (no leakage "
                         "between splits); remove if they are independent")
    features = []
    for c, f in facts.items():
        if c in (label, id_column):
            continue
        entry, why = _feature(f)
        if entry is None:
            features.append(f"  # {_y(c)}: not a feature ({why})")
        else:
            features.append(f"  {_y(c)}: {entry}" + (f"      # {why}" if why else ""))
    active = any(not line.startswith("  #") for line in features)
    lines.append(f"features:{'' if active else ' {}'}           # TensorFlow Transform, analysed on train: "
                 "one per column, by type")
    lines += features
    lines += ["output:", "  path: out/         # relative to this file's folder", "  shards: 1", ""]
    return "\n".join(lines)
