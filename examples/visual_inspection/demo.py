"""`make demo`: run the example on DirectRunner, then show the funnel, the label agreement
(HLP and Fleiss' kappa overall, per class, per slice), the review queue, the outputs, the
lineage of the train split and where report.html is, using only the `dataprep` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def dataprep(*args: str) -> str:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(done.returncode)
    return done.stdout


def main() -> None:
    config = os.path.join(HERE, "config.yaml")
    start = time.time()
    print(f"$ dataprep run {os.path.relpath(config)}")
    summary = json.loads(dataprep("run", config).strip().splitlines()[-1])
    print(json.dumps(summary))
    rows = summary["rows"]
    print(f"\nrun id: {summary['run_id']}  ({time.time() - start:.1f} s)")
    print("row funnel:")
    print(f"  input {rows['input']} = train {rows['train']} + dev {rows['dev']} + test {rows['test']}"
          f" + quarantined {rows['quarantined']} + duplicates {rows['duplicates']}")
    with open(os.path.join(summary["output"], "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    for stage, reasons in report["quarantine_reasons"].items():
        print(f"  quarantined at {stage}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    _print_labels(report)
    review = report.get("review")
    if review:
        print(f"review queue: {review['queued']} example(s) for the next labelling round "
              f"({', '.join(f'{r} {n}' for r, n in review['per_reason'].items())}), weakest first, in "
              f"{os.path.join(summary['output'], 'review')}")
    print("outputs:")
    for name in sorted(os.listdir(summary["output"])):
        print(f"  {os.path.join(summary['output'], name)}")
    train = os.path.join(summary["output"], "raw", "train")
    print(f"\n$ dataprep lineage {os.path.relpath(train)}")
    print(dataprep("lineage", train))
    print(f"report: {os.path.join(summary['output'], 'report.html')}")
    print(f"({time.time() - start:.1f} s in all)")


def _value(block):
    return block.get("value") if isinstance(block, dict) else block


def _print_labels(report) -> None:
    """HLP and Fleiss' kappa overall, then per class and per slice, lowest first."""
    labels = report.get("labels")
    if not labels:
        return
    overall = labels["overall"]
    print(f"label agreement over {overall['items']} images: HLP {_value(overall['hlp']):.3f}, "
          f"Fleiss' kappa {_value(overall['fleiss_kappa']):.3f}")
    classes = sorted((c for c in labels["classes_by_agreement"] if c.get("hlp") is not None), key=lambda c: c["hlp"])
    print("  per class (HLP: share of agreeing inspector pairs on the images of that consensus), lowest first: "
          + ", ".join(f"{c['class']} {c['hlp']:.3f} ({c['pairable_items']} images)" for c in classes))
    for column, rows in labels.get("slices_by_agreement", {}).items():
        print(f"  per {column}, lowest first: " + ", ".join(
            f"{r['value']} HLP {r['hlp']:.3f} kappa {r['fleiss_kappa']:.3f}" for r in rows))
    worst = min((dict(r, column=c) for c, rows in labels.get("slices_by_agreement", {}).items() for r in rows),
                key=lambda r: r["hlp"], default=None)
    if worst:
        print(f"  lowest slice: {worst['column']}={worst['value']} (HLP {worst['hlp']:.3f} over "
              f"{worst['pairable_items']} images)")


if __name__ == "__main__":
    main()
