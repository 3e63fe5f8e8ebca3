"""`dataprep validate`'s look at the data: the first records of each input, put through the
run's own reader and validation, and what they say about the full run.

Nothing is re-implemented: the sample is read by `transforms.read.read_file` (the read task
of `ReadInputs`), typed and checked by `transforms.clean.validate_batch` (`coerce` for the
per-column type failures) and, with `clean.dedup`, deduplicated by `dedup_table`, with the
specs `pipeline/build.py` gives the job. So a projected quarantine reason is one the run
would give those rows. What it reports, each as a warning:

- per declared column, the sampled values that fail its type (with examples);
- values that look like missing-value markers (`NA`, `?`, ...) not in the input's `na_values`;
- rules whose `in:` values never occur, with the values that do, closest first;
- a `schema.id` that repeats (its rows could land in two splits);
- the projected quarantine share per reason;
- the default quality gates the full run would likely fail: more than half of the input
  quarantined, a label class of the input that reaches no split, a feature that is the label.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Config
from pipeline.gates import static_gates
from pipeline.inputs import DATA, InputFile, source_names
from pipeline.sample import SAMPLE_ROWS, Sample, read_sample
from transforms.batches import RECORD, ROW, SOURCE

# The default gates of the run (issue 30), unless `expect:` sets them.
# Whole values that usually mean "missing" (pandas' default NA strings, and "?" as in UCI files).
NA_MARKERS = ("NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "none", "?", "#N/A", "-", "--")


@dataclass(frozen=True)
class Finding:
    """One warning: the config field it is about, and one line saying what and what to do."""

    field: str
    message: str
    gate: Optional[str] = None      # the default quality gate it says the run would likely fail

    def line(self) -> str:
        if self.gate:
            return f"warning: gate {self.gate} ({self.field}): {self.message}"
        return f"warning: {self.field}: {self.message}"


@dataclass
class Preflight:
    """What the sample says: how much was read, the quarantine it projects, the warnings."""

    records: int = 0                                       # records sampled, every input together
    inputs: List[Tuple[str, int, bool]] = field(default_factory=list)   # (input, records, read whole)
    projected: Dict[str, int] = field(default_factory=dict)   # reason → sampled records it quarantines
    duplicates: int = 0
    findings: List[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def whole(self) -> bool:
        return all(w for _, _, w in self.inputs)

    @property
    def quarantined(self) -> int:
        return sum(self.projected.values())

    def lines(self) -> List[str]:
        """The report `dataprep validate` prints, a line each."""
        what = "all" if self.whole else "the first"
        out = [f"sample: {what} {self.records:,} record(s) of " + ", ".join(
            f"{name} ({n:,}{'' if whole else '+'})" for name, n, whole in self.inputs) + f", read in {self.seconds:.2f} s"]
        if self.records:
            verb = "quarantined" if self.whole else "projected quarantine"
            if self.projected:
                reasons = ", ".join(f"{r} {_share(n, self.records)}" for r, n in
                                    sorted(self.projected.items(), key=lambda kv: (-kv[1], kv[0])))
                out.append(f"{verb}: {_share(self.quarantined, self.records)} of the sampled records ({reasons})")
            else:
                out.append(f"{verb}: none of the sampled records")
            if self.duplicates:
                out.append(f"duplicates within the sample: {self.duplicates:,}")
        out += [f.line() for f in self.findings]
        return out


def _share(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


def preflight(cfg: Config, files: Sequence[InputFile], sample_rows: int = SAMPLE_ROWS) -> Preflight:
    """Reads the first `sample_rows` records of each input (`files`: the config's matched
    files) and checks them as the run would (see the module docstring).

    Raises:
      ValueError: a file cannot be read as configured (the reader's own message).
    """
    from pipeline.build import dedup_spec, reader_spec, validate_spec
    from transforms.user_code import load_function

    started = time.perf_counter()
    spec = validate_spec(cfg)
    filters = [load_function(f, spec.code_dirs) for f in spec.filters]
    wanted = list(cfg.input_columns)
    names = source_names(files)
    result = Preflight()
    samples: List[Tuple[int, Sample]] = []
    for i, entry in enumerate(cfg.inputs):
        paths = [f.uri for f in files if f.kind == DATA and f.index == i]
        sample = read_sample(paths, reader_spec(entry), wanted, sample_rows, names)
        samples.append((i, sample))
        result.inputs.append((f"inputs[{i}]", sample.records, sample.whole))
    result.seconds = time.perf_counter() - started
    result.records = sum(s.records for _, s in samples)
    if not result.records:
        return result
    for _, s in samples:
        for reason, n in _counts(s.faults.column("reason")).items():
            result.projected[reason] = result.projected.get(reason, 0) + n
    raw = _together([s.rows for _, s in samples if s.rows.num_rows], wanted)
    clean = quarantine = None
    if raw is not None:
        from transforms.clean import validate_batch

        parts = [validate_batch(b, spec, filters) for b in raw.combine_chunks().to_batches()]
        clean = pa.Table.from_batches([c for c, _ in parts])
        quarantine = pa.Table.from_batches([q for _, q in parts])
        for reason, n in _counts(quarantine.column("reason")).items():
            result.projected[reason] = result.projected.get(reason, 0) + n
        if cfg.clean.dedup and clean.num_rows:
            from transforms.clean import dedup_table

            clean, duplicates, conflicts = dedup_table(clean, dedup_spec(cfg))
            result.duplicates = duplicates.num_rows
            if conflicts.num_rows:
                result.projected["label_conflict"] = result.projected.get("label_conflict", 0) + conflicts.num_rows
        result.findings += _type_findings(cfg, raw, samples)
        result.findings += _rule_findings(cfg, raw, spec)
        result.findings += _id_findings(cfg, raw)
    result.findings += _gate_findings(cfg, result, raw, clean, quarantine, spec)
    return result


def _together(tables: List[pa.Table], columns: Sequence[str]) -> Optional[pa.Table]:
    """The inputs' sampled rows as one table; where their types differ (a Parquet input's typed
    columns beside a CSV's text), the data columns as text, which validation parses alike."""
    if not tables:
        return None
    if any(t.schema != tables[0].schema for t in tables):
        tables = [t.select(list(columns)).cast(pa.schema([pa.field(c, pa.string()) for c in columns]))
                  .append_column(SOURCE, t.column(SOURCE)).append_column(ROW, t.column(ROW))
                  .append_column(RECORD, t.column(RECORD).cast(pa.binary())) for t in tables]
    return pa.concat_tables(tables)


def _counts(array) -> Dict[str, int]:
    if len(array) == 0:
        return {}
    vc = pc.value_counts(array)
    return {str(v): int(n) for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _examples(values: pa.Array, k: int = 3) -> str:
    """The `k` most frequent values, quoted, with their counts."""
    top = sorted(_counts(values).items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return ", ".join(f"{v!r} ({n:,})" for v, n in top)


def _type_findings(cfg: Config, raw: pa.Table, samples) -> List[Finding]:
    """Per declared column: the sampled values that fail its type, and values that look like a
    missing-value marker the reader does not treat as one."""
    from transforms.clean import coerce

    out = []
    n = raw.num_rows
    na_by_input = {i: set(cfg.inputs[i].csv.na_values) for i, _ in samples}
    na_everywhere = set.intersection(*na_by_input.values()) if na_by_input else set()
    na_field = "inputs[0].csv.na_values" if len(cfg.inputs) == 1 else "inputs[*].csv.na_values"
    column_types = cfg.input_columns
    for column, kind in column_types.items():
        array = raw.column(column).combine_chunks()
        typed, bad = coerce(array, kind)
        text = array if pa.types.is_string(array.type) else None
        markers = {}
        if text is not None and any(i.format != "parquet" for i in cfg.inputs):   # Parquet has real nulls
            found = _counts(pc.filter(text, pc.is_in(text, value_set=pa.array(NA_MARKERS, pa.string()))))
            markers = {v: c for v, c in found.items() if v not in na_everywhere}
        if bad.any():
            failing = pc.filter(array, pa.array(bad))
            msg = (f"{int(bad.sum()):,} of {n:,} sampled values ({bad.mean():.1%}) are not {kind}, "
                   f"e.g. {_examples(failing)}: quarantined as type:{column}")
            if markers:
                msg += f"; {', '.join(map(repr, markers))} look(s) like missing values: add to {na_field}"
            elif kind != "string":
                msg += " (is it a string column?)" if bad.mean() > 0.5 else ""
            out.append(Finding(f"schema.columns.{column}", msg))
        elif markers and (column == cfg.schema.label or kind == "string"):
            role = "the label: it becomes a class" if column == cfg.schema.label else "read as text"
            listed = ", ".join(f"{v!r} ({c:,} rows)" for v, c in markers.items())
            out.append(Finding(f"schema.columns.{column}",
                               f"{listed} look(s) like missing values but is {role}; if it means missing, "
                               f"add it to {na_field}"))
        if kind == "float" and not cfg.clean.allow_non_finite:
            nonfinite = int(np.count_nonzero(~np.asarray(pc.fill_null(pc.is_finite(typed), True))))
            if nonfinite:
                out.append(Finding(f"schema.columns.{column}",
                                   f"{nonfinite:,} sampled values are NaN or infinite: quarantined as "
                                   f"non_finite:{column} (clean.allow_non_finite: true keeps them)"))
    return out


def _typed_column(raw: pa.Table, column: str, kind: str, spec) -> pa.Array:
    """A column as validation types it, label normalisation included (what a rule compares)."""
    from transforms.clean import coerce, normalize_labels

    typed, _ = coerce(raw.column(column).combine_chunks(), kind)
    normalised = (spec.label_map or spec.label_trim or spec.label_case_fold or spec.label_replace) and \
        column in ([spec.label] if spec.label else []) + list(spec.annotators)
    if normalised:
        typed = normalize_labels(typed, dict(spec.label_map), spec.label_trim, spec.label_case_fold, spec.label_replace)
    return typed


def _rule_findings(cfg: Config, raw: pa.Table, spec) -> List[Finding]:
    """Rules whose `in:` values never occur in the sample, with the values that do and that the
    rule would quarantine, closest first."""
    from transforms.clean.validate import value_set

    out = []
    types = cfg.input_columns
    for i, rule in enumerate(cfg.clean.rules):
        if rule.in_ is None or rule.column not in types:
            continue
        typed = _typed_column(raw, rule.column, types[rule.column], spec)
        try:
            listed = value_set(rule.in_, typed.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
            out.append(Finding(f"clean.rules[{i}].in", f"values {rule.in_} are not {types[rule.column]}"))
            continue
        present = pc.unique(pc.drop_null(typed))
        occurs = np.asarray(pc.fill_null(pc.is_in(listed, value_set=present), False))
        never = [v for v, o in zip(rule.in_, occurs) if not o and v is not None]
        if not never:
            continue
        failing = pc.filter(typed, pc.invert(pc.fill_null(pc.is_in(typed, value_set=listed), True)))
        others = _counts(pc.cast(failing, pa.string()))
        for value in never:
            ranked = sorted(others.items(), key=lambda kv: (-_closeness(str(value), kv[0]), -kv[1], kv[0]))
            msg = f"{rule.column} in: {value!r} occurs in none of the {raw.num_rows:,} sampled rows"
            if ranked:
                msg += ("; values that occur but are not listed (the rule quarantines them), closest first: "
                        + ", ".join(f"{v!r} ({n:,})" for v, n in ranked[:5]) + (" …" if len(ranked) > 5 else ""))
                best = ranked[0][0]
                if _closeness(str(value), best) >= 0.6:
                    msg += f" — did you mean {best!r}?"
            out.append(Finding(f"clean.rules[{i}].in", msg))
    return out


def _closeness(a: str, b: str) -> float:
    """How alike two values are (difflib's ratio, case aside; 1 for equal but for case)."""
    if a.casefold() == b.casefold():
        return 1.0
    return difflib.SequenceMatcher(None, a.casefold(), b.casefold()).ratio()


def _id_findings(cfg: Config, raw: pa.Table) -> List[Finding]:
    """A `schema.id` whose values repeat in the sample: its rows could land in two splits
    (unless they are duplicates by that id, or grouped by it)."""
    id_col = cfg.schema.id
    if not id_col or id_col not in raw.column_names or cfg.split.group_by == id_col:
        return []
    dedup = cfg.clean.dedup
    if dedup and dedup.keys != "all" and list(dedup.keys) == [id_col]:
        return []
    counts = _counts(pc.drop_null(raw.column(id_col).combine_chunks().cast(pa.string())))
    repeated = {v: n for v, n in counts.items() if n > 1}
    if not repeated:
        return []
    rows = sum(repeated.values())
    worst = sorted(repeated.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return [Finding("schema.id", f"{len(repeated):,} id(s) repeat in the sample ({rows:,} rows, e.g. "
                    + ", ".join(f"{v!r} × {n}" for v, n in worst) + "): rows of one id can land in different "
                    f"splits; set split.group_by: {id_col} (longitudinal data), clean.dedup.keys: [{id_col}], "
                    "or pick a unique id")]


def _gate_findings(cfg: Config, result: Preflight, raw: Optional[pa.Table], clean: Optional[pa.Table],
                   quarantine: Optional[pa.Table], spec) -> List[Finding]:
    """The default quality gates the full run would likely fail, judged on the sample."""
    out = []
    threshold = cfg.expect.max_quarantine_share
    share = result.quarantined / result.records if result.records else 0.0
    if share > threshold:
        top = max(result.projected.items(), key=lambda kv: kv[1])
        out.append(Finding("expect.max_quarantine_share",
                           f"the run would likely fail: {share:.1%} of the sampled records are quarantined "
                           f"(more than {threshold:.0%}; most for {top[0]}: {top[1]:,})", gate="max_quarantine_share"))
    label = cfg.schema.label
    if raw is not None and spec.label and label in raw.column_names:
        from transforms.clean import normalize_labels

        text = raw.column(label).combine_chunks().cast(pa.string())
        typed = pc.cast(_typed_column(raw, label, cfg.input_columns[label], spec), pa.string())
        if spec.label_map or spec.label_trim or spec.label_case_fold or spec.label_replace:
            text = normalize_labels(text, dict(spec.label_map), spec.label_trim, spec.label_case_fold,
                                    spec.label_replace)
        classes = pc.coalesce(typed, text)     # a value that fails its type is still a class of the input
        present = _counts(pc.drop_null(classes))
        kept = _counts(pc.drop_null(pc.cast(clean.column(label), pa.string()))) if clean is not None and \
            clean.num_rows else {}
        expected = cfg.expect.classes     # with expected classes, the others may vanish
        for cls, n in sorted(present.items(), key=lambda kv: (-kv[1], kv[0])):
            if cls not in kept and (expected is None or cls in expected):
                out.append(Finding("expect.classes",
                                   f"label class {cls!r} ({n:,} sampled rows) reaches no split: "
                                   + _why_gone(raw, classes, cls, quarantine), gate="classes"))
    for gate in static_gates(cfg):
        if not gate["passed"]:
            leaking = gate["observed"]
            out.append(Finding(f"features.{leaking[0]}", f"{gate['message']} (the run fails); remove it from "
                               "features", gate=gate["gate"]))
    return out


def _why_gone(raw: pa.Table, classes: pa.Array, cls: str, quarantine: pa.Table) -> str:
    """Why the sampled rows of one class all left: the reasons validation gave them."""
    rows = raw.filter(pc.fill_null(pc.equal(classes, cls), False)).select([SOURCE, ROW])
    found = rows.join(quarantine.select([SOURCE, ROW, "reason"]), keys=[SOURCE, ROW], join_type="inner")
    reasons = _counts(found.column("reason").combine_chunks()) if found.num_rows else {}
    gone = ", ".join(f"{r} ({n:,})" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    rest = rows.num_rows - found.num_rows
    if rest:
        gone += (", and " if gone else "") + f"{rest:,} duplicate(s) or label conflict(s)"
    return ("quarantined as " if reasons else "") + gone
