"""The growth guard: "don't grow the data more than 10× at a time".

Before the job runs, the input of this run is compared with that of the pipeline's last
COMPLETE run in the store. Rows are only known once the job has read them, so the check
before the job is on input bytes (the files' sizes, fingerprinted anyway), scaled to rows
by the last run's bytes per row; after the job the real row ratio goes into both reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from pipeline.metadata import RUN_CONTEXT


@dataclass(frozen=True)
class Baseline:
    """The last COMPLETE run of a pipeline: its id, input rows and input bytes."""

    run_id: str
    rows: int
    bytes: int


def last_complete_run(store, pipeline: str, exclude: Sequence[str] = ()) -> Optional[Baseline]:
    """The latest COMPLETE run of `pipeline` in the store with a known input size, else None."""
    from pipeline.lineage import list_runs

    types = {t.id: t.name for t in store.get_artifact_types()}
    for r in reversed(list_runs(store)):
        if r["status"] != "COMPLETE" or r.get("pipeline") != pipeline or r["run_id"] in exclude:
            continue
        ctx = store.get_context_by_type_and_name(RUN_CONTEXT, r["run_id"])
        size = sum(a.properties["size_bytes"].int_value for a in store.get_artifacts_by_context(ctx.id)
                   if types.get(a.type_id) in ("DataFile", "DataManifest") and "size_bytes" in a.properties)
        rows = int((r.get("rows") or {}).get("input", 0))
        if size > 0 and rows > 0:
            return Baseline(r["run_id"], rows, size)
    return None


def check_growth(baseline: Optional[Baseline], input_bytes: int, max_growth: float) -> Dict:
    """The guard's verdict before the job: {"baseline_run", "growth" (bytes ratio),
    "estimated_rows", "max_growth", "exceeded", "message"}; without a baseline, not exceeded."""
    if baseline is None:
        return {"baseline_run": None, "max_growth": max_growth, "exceeded": False,
                "message": "no earlier COMPLETE run of this pipeline: nothing to compare with"}
    growth = input_bytes / baseline.bytes
    estimated = round(baseline.rows * growth)
    exceeded = growth > max_growth
    message = (f"the input is {growth:.1f}x that of run {baseline.run_id} ({input_bytes} bytes, about "
               f"{estimated} rows, vs {baseline.bytes} bytes, {baseline.rows} rows); guard.max_growth is "
               f"{max_growth:g}" + (": grow the data step by step (or raise guard.max_growth)" if exceeded else ""))
    return {"baseline_run": baseline.run_id, "baseline_rows": baseline.rows, "growth": round(growth, 3),
            "estimated_rows": estimated, "max_growth": max_growth, "exceeded": exceeded, "message": message}


def after_job(verdict: Dict, input_rows: int) -> Dict:
    """The verdict with the real row ratio, once the job has counted the rows."""
    out = dict(verdict)
    if verdict.get("baseline_rows"):
        out["row_growth"] = round(input_rows / verdict["baseline_rows"], 3)
        if out["row_growth"] > verdict["max_growth"] and not verdict["exceeded"]:
            out["exceeded"] = True
            out["message"] = (f"the input has {input_rows} rows, {out['row_growth']:.1f}x the {verdict['baseline_rows']}"
                              f" of run {verdict['baseline_run']}; guard.max_growth is {verdict['max_growth']:g}: "
                              f"grow the data step by step (or raise guard.max_growth)")
    return out


def as_property(verdict: Dict) -> str:
    return json.dumps(verdict, sort_keys=True)
