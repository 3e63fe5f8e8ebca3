"""`make demo`: run the example on DirectRunner, then show the funnel, the outputs and the
lineage of the train split, using only the `dataprep` command line."""

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
    print("outputs:")
    for name in sorted(os.listdir(summary["output"])):
        print(f"  {os.path.join(summary['output'], name)}")
    train = os.path.join(summary["output"], "raw", "train")
    print(f"\n$ dataprep lineage {os.path.relpath(train)}")
    print(dataprep("lineage", train))


if __name__ == "__main__":
    main()
