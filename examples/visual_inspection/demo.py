"""`make demo`: run the example on DirectRunner, then show the funnel, the label agreement
(HLP and Fleiss' kappa overall, per class, per slice), the review queue, the outputs, the
lineage of the train split and where report.html is, using only the `dataprep` command line.

Then a second labelling round, without any server: three reviewers label, in Label Studio, the
queued tasks (`review/label_studio_tasks.json`, what `dataprep review push` imports) of the
weakest class; their labels come back as Label Studio's JSON export (`generate.relabel_export`,
the file `dataprep review pull` writes), the second source of `labels.annotations`; the
pipeline runs again, and `dataprep diff` shows what changed: HLP and kappa per class before →
after, the consensus labels that changed, the review queue shrinking and the split churn
(none: the config's splits are sticky). `tests/integration/test_label_studio.py` does the same
against a real Label Studio."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402  (the synthetic inspectors and reviewers, beside this file)


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
    second_round(config, summary, report)
    print(f"({time.time() - start:.1f} s in all)")


def second_round(config: str, first: dict, report: dict) -> None:
    """Relabel the queue's weakest class, run again, and show what changed."""
    classes = [c for c in report["labels"]["classes_by_agreement"] if c.get("hlp") is not None]   # n/a: not weak
    weakest = min(classes, key=lambda c: c["hlp"])["class"]
    with open(os.path.join(first["output"], "review", "review.csv"), encoding="utf-8") as f:
        queued = [r for r in csv.DictReader(f)]
    picked = [r["image_id"] for r in queued
              if r["defect"] == weakest or weakest in json.loads(r["annotations"] or "{}").values()]
    with open(os.path.join(first["output"], "review", "label_studio_tasks.json"), encoding="utf-8") as f:
        tasks = json.load(f)    # what `dataprep review push` imports into Label Studio
    path = generate.relabel_export(os.path.join(HERE, "data"), tasks, picked)
    print(f"\n--- second labelling round: {len(generate.REVIEWERS)} reviewers label in Label Studio the "
          f"{len(picked)} queued images that involve {weakest!r}, the weakest class; its export (what "
          f"`dataprep review pull` writes) -> {os.path.relpath(path)}")
    round2 = round_two_config(config, path)
    print(f"$ dataprep run {os.path.relpath(round2)}     # labels.annotations: the months' files, then that export")
    second = json.loads(dataprep("run", round2).strip().splitlines()[-1])
    print(json.dumps(second))
    print(f"\n$ dataprep diff {first['run_id']} {second['run_id']}")
    print(dataprep("diff", first["run_id"], second["run_id"], "--store", second["store"]).rstrip())


def round_two_config(config: str, export: str) -> str:
    """The example's config with the export as a second round of `labels.annotations` (a list of
    sources, oldest first): its text with that one block changed, written beside it (so its
    relative paths hold and `dataprep diff` shows just that change). The same pipeline: the run
    compares itself with round one and keeps its splits (`split.sticky`)."""
    with open(config, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  annotations:")))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    "))
    block = [("    - " if i == 0 else "      ") + line.strip()
             for i, line in enumerate(line for line in lines[start + 1:end] if line.strip())]
    relative = os.path.relpath(export, os.path.dirname(config))
    second = f'    - {{path: {relative}, format: label_studio, source: "Label Studio export of the review queue"}}'
    text = "\n".join(lines[:start] + ["  annotations:              # round 1: the months' labels; round 2: the "
                                       "reviewers' export"] + block + [second] + lines[end:]) + "\n"
    path = os.path.join(os.path.dirname(config), "config-round-2.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
    classes = sorted(labels["classes_by_agreement"], key=lambda c: (c.get("hlp") is None, c.get("hlp") or 0))
    print("  per class (HLP: share of agreeing inspector pairs on the images of that consensus, n/a where it is "
          "1 by construction; kappa: Fleiss' of the class against the rest), lowest first: "
          + ", ".join(f"{c['class']} {_fmt(c['hlp'])} ({c['pairable_items']} images, kappa {_fmt(c.get('kappa'))})"
                      for c in classes))
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
