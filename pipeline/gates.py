"""Quality gates: what must hold for a run's outputs to be published (`expect:` in the config).

The publisher checks them on the finished job's report, before anything is published, as
TFX's ExampleValidator blocks a pipeline on anomalies, Great Expectations fails a checkpoint
and Deequ a verification. A failed gate fails the run (exit 1, one line naming the gates and
their numbers); its report.json and report.html are kept in `OUT/<run_id>/`, with a banner,
and no split is published. `expect.warn_only: true` turns failures into warnings.

Defaults that protect without configuration:
- `min_input_rows: 1`: an input without a single row publishes nothing;
- `max_quarantine_share: 0.5`: more than half of the input quarantined is a config or data fault
  (a column typed `int` that holds text quarantines every row as `type:<column>`);
- `classes` (default): every label class present in the input reaches a split (a misspelled
  `in:` value quarantines a whole class; its absence from the splits must not pass unnoticed);
- `label_not_a_feature`: no feature is computed from the label or an annotator's column (the
  model would see its answer). Known from the config alone: checked before the job runs.

Opt in: `max_quarantine_share_per_reason`, `min_rows` (per split), `classes` (the expected
values, and no other) with `min_per_class` (per split), `max_duplicate_share`,
`max_label_tie_share`, `max_near_duplicate_leakage` (with near_dedup), `leakage` (no example
id, exact duplicate row or group value in two splits: counted by the job, `transforms/clean/leakage.py`).

Each gate's result is in report.json (`gates`) and in the store (the run's `gates` property).
"""

from __future__ import annotations

import fnmatch
from typing import Dict, List, Optional

from pipeline.config import Config
from pipeline.failures import PipelineFailure


class GateFailed(PipelineFailure):
    """A quality gate failed: the run is recorded FAILED, its report kept, nothing published."""

    def __init__(self, gates: Dict, report: Dict):
        super().__init__("quality gate " + "; ".join(gates_line(gates, failed_only=True)))
        self.gates = gates
        self.report = report


def _result(gate: str, passed: bool, message: str, observed=None, limit=None, default: bool = False) -> Dict:
    return {"gate": gate, "passed": bool(passed), "message": message, "observed": observed, "limit": limit,
            "default": default}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def static_gates(cfg: Config) -> List[Dict]:
    """The gates known from the config alone (checked before the job runs)."""
    out = []
    if cfg.expect.label_not_a_feature and cfg.features:
        answer = [cfg.schema.label] + (list(cfg.labels.annotators) if cfg.labels else [])
        leaking = [c for c in cfg.features if c in answer]
        out.append(_result("label_not_a_feature", not leaking,
                           f"features computed from the label: {', '.join(leaking)} (schema.label is "
                           f"{cfg.schema.label!r}); the model would see its answer" if leaking else
                           "no feature is computed from the label", observed=leaking, default=True))
    return out


def check_before_job(cfg: Config) -> None:
    """The gates known from the config, before the job is built: a failure (unless
    `expect.warn_only`, whose warning the publisher gives with the others) ends the run at once.

    Raises:
      GateFailed: with a report of the gates alone (no row was read).
    """
    results = static_gates(cfg)
    if not all(r["passed"] for r in results) and not cfg.expect.warn_only:
        raise GateFailed(summary(cfg, results), {"rows": {}})


def check_gates(cfg: Config, report: Dict) -> Dict:
    """Every gate on a finished job's `report`: {"passed", "warn_only", "results": [...]}."""
    results = static_gates(cfg) + data_gates(cfg, report)
    return summary(cfg, results)


def summary(cfg: Config, results: List[Dict]) -> Dict:
    return {"passed": all(r["passed"] for r in results), "warn_only": cfg.expect.warn_only, "results": results}


def data_gates(cfg: Config, report: Dict) -> List[Dict]:
    """The gates on the job's counts (`report` as `pipeline/report.py` assembles it)."""
    e = cfg.expect
    rows = report["rows"]
    splits = list(cfg.split.fractions)
    n_in = rows["input"]
    out = [_result("min_input_rows", n_in >= e.min_input_rows,
                   f"the input has {n_in:,} rows" + (f", fewer than {e.min_input_rows:,}" if n_in < e.min_input_rows
                                                      else ""), n_in, e.min_input_rows, default=True)]
    share = rows["quarantined"] / n_in if n_in else 0.0
    reasons = {f"{reason}": n for stage in report.get("quarantine_reasons", {}).values() for reason, n in stage.items()}
    top = ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
    out.append(_result("max_quarantine_share", share <= e.max_quarantine_share,
                       f"{rows['quarantined']:,} of {n_in:,} input rows quarantined ({_pct(share)}), limit "
                       f"{_pct(e.max_quarantine_share)}" + (f" ({top})" if top else ""),
                       round(share, 6), e.max_quarantine_share, default=True))
    if e.max_quarantine_share_per_reason is not None:
        out += _per_reason(e.max_quarantine_share_per_reason, reasons, n_in)
    if e.min_rows is not None:
        wanted = e.min_rows if isinstance(e.min_rows, dict) else {s: e.min_rows for s in splits}
        short = {s: rows.get(s, 0) for s, n in wanted.items() if rows.get(s, 0) < n}
        out.append(_result("min_rows", not short, "; ".join(f"{s} has {n:,} rows, fewer than {wanted[s]:,}"
                                                               for s, n in short.items()) or
                           f"every split has its rows ({', '.join(f'{s} {rows.get(s, 0):,}' for s in wanted)})",
                           {s: rows.get(s, 0) for s in wanted}, wanted))
    out += _class_gates(cfg, report, splits)
    if e.max_duplicate_share is not None:
        d = rows["duplicates"] / n_in if n_in else 0.0
        out.append(_result("max_duplicate_share", d <= e.max_duplicate_share,
                           f"{rows['duplicates']:,} of {n_in:,} input rows are duplicates ({_pct(d)}), limit "
                           f"{_pct(e.max_duplicate_share)}", round(d, 6), e.max_duplicate_share))
    if e.max_label_tie_share is not None:
        ties = report.get("quarantine_reasons", {}).get("labels", {}).get("label_tie", 0)
        items = (report.get("labels", {}).get("overall", {}) or {}).get("labelled_items") or 0
        t = ties / items if items else 0.0
        out.append(_result("max_label_tie_share", t <= e.max_label_tie_share,
                           f"{ties:,} of {items:,} labelled examples have tied labels ({_pct(t)}), limit "
                           f"{_pct(e.max_label_tie_share)}", round(t, 6), e.max_label_tie_share))
    if e.max_near_duplicate_leakage is not None:
        leak = (report.get("near_dedup") or {}).get("leakage", {})
        pairs = sum(v.get("pairs", 0) if isinstance(v, dict) else v for v in leak.values())
        clean = rows["clean"]
        x = pairs / clean if clean else 0.0
        out.append(_result("max_near_duplicate_leakage", x <= e.max_near_duplicate_leakage,
                           f"{pairs:,} near-duplicate pairs across splits for {clean:,} clean rows ({_pct(x)}), "
                           f"limit {_pct(e.max_near_duplicate_leakage)}", round(x, 6), e.max_near_duplicate_leakage))
    if e.leakage:
        found = report.get("leakage_checks", {})
        bad = {k: v for k, v in found.items() if v}
        out.append(_result("leakage", not bad, "; ".join(f"{n:,} {_LEAK_WORDS[k]} in two splits or more"
                                                         for k, n in bad.items()) or
                           f"no {', '.join(_LEAK_WORDS[k] for k in found)} in two splits", found, 0))
    return out


_LEAK_WORDS = {"example_id": "example ids", "rows": "exact duplicate rows", "groups": "group values"}


def _per_reason(limits, reasons: Dict[str, int], n_in: int) -> List[Dict]:
    over = []
    for reason, n in sorted(reasons.items()):
        if isinstance(limits, dict):
            limit = next((v for pattern, v in limits.items() if fnmatch.fnmatchcase(reason, pattern)), None)
        else:
            limit = limits
        share = n / n_in if n_in else 0.0
        if limit is not None and share > limit:
            over.append(f"{reason}: {n:,} rows ({_pct(share)}), limit {_pct(limit)}")
    return [_result("max_quarantine_share_per_reason", not over, "; ".join(over) or "every reason within its limit",
                    {r: n for r, n in reasons.items()}, limits)]


def _class_gates(cfg: Config, report: Dict, splits: List[str]) -> List[Dict]:
    classes = report.get("label_classes") or {}
    present = {v for v, n in (classes.get("input") or {}).items() if n}
    per_split = {s: classes.get(s) or {} for s in splits}
    reached = {v for counts in per_split.values() for v, n in counts.items() if n}
    e = cfg.expect
    out = []
    if e.classes is None:
        lost = sorted(present - reached)
        out.append(_result("classes", not lost,
                           "label class(es) of the input that reach no split: " + ", ".join(
                               f"{v} ({classes['input'][v]:,} input rows)" for v in lost)
                           + " (if meant, name the classes to keep in expect.classes)" if lost else
                           f"every label class of the input reaches a split ({len(present)})",
                           sorted(reached), sorted(present), default=True))
    else:
        expected = set(e.classes)
        problems = []
        missing = sorted(expected - present)
        if missing:
            problems.append(f"expected class(es) not in the input: {', '.join(missing)}")
        unexpected = sorted(reached - expected)
        if unexpected:
            problems.append(f"class(es) not expected in the splits: {', '.join(unexpected)}")
        lost = sorted((expected & present) - reached)
        if lost:
            problems.append(f"class(es) that reach no split: {', '.join(lost)}")
        out.append(_result("classes", not problems, "; ".join(problems) or
                           f"the splits hold the expected classes ({', '.join(sorted(expected))})",
                           sorted(reached), sorted(expected)))
    if e.min_per_class is not None:
        wanted = sorted(set(e.classes) if e.classes is not None else present)
        short = [f"{s}: {v} {per_split[s].get(v, 0):,}" for s in splits for v in wanted
                 if per_split[s].get(v, 0) < e.min_per_class]
        out.append(_result("min_per_class", not short,
                           (f"fewer than {e.min_per_class:,} rows per split: " + ", ".join(short)) if short else
                           f"every class has {e.min_per_class:,}+ rows in every split",
                           {s: per_split[s] for s in splits}, e.min_per_class))
    return out


def gates_line(gates: Dict, failed_only: bool = False) -> List[str]:
    """`name: message` for each gate (the failed ones only, with `failed_only`)."""
    return [f"{r['gate']} failed: {r['message']}" if not r["passed"] else f"{r['gate']}: {r['message']}"
            for r in gates.get("results", []) if not (failed_only and r["passed"])]


def failed_gates(gates: Optional[Dict]) -> List[Dict]:
    return [r for r in (gates or {}).get("results", []) if not r["passed"]]
