"""The split at scale: N synthetic rows (default 5M) through read → clean → split → write on
DirectRunner, peak memory measured with /usr/bin/time -v, per-stratum counts checked exactly.

    python bench/split_scale.py [--rows 5000000]

Data: a Parquet file with an id, a skewed 3-class label, a 20-value site column (so the
strata are label × site, 60 of them) and a float. No TFT: this measures the split.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import data_file  # noqa: E402

ROOT = os.path.dirname(HERE)


def make_data(rows: int, path: str) -> None:
    rng = np.random.default_rng(5)
    writer = None
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        table = pa.table({
            "id": pa.array([f"r{i}" for i in range(start, start + n)]),
            "label": pa.array(rng.choice(["a", "b", "c"], n, p=[0.7, 0.25, 0.05])),
            "site": pa.array(rng.choice([f"s{i:02d}" for i in range(20)], n)),
            "x": pa.array(rng.normal(size=n)),
        })
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    args = ap.parse_args()
    data = data_file(args.data, f"split-{args.rows}.parquet", args.rows, make_data)
    work = tempfile.mkdtemp(prefix="dataprep-split-")
    cfg = {"name": "split-scale", "inputs": [{"path": data, "format": "parquet"}],
           "schema": {"id": "id", "label": "label", "columns": {"id": "string", "label": "string", "x": "float"},
                      "metadata": ["site"]},
           "split": {"fractions": {"train": 0.7, "dev": 0.15, "test": 0.15}, "stratify_by": ["label", "site"]},
           "output": {"path": os.path.join(work, "out"), "shards": 8}}
    cfg_path = os.path.join(work, "config.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    start = time.time()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "pipeline.cli", "run", cfg_path],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        sys.exit(done.stderr[-4000:])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.load(open(os.path.join(summary["output"], "report.json")))
    balance = report["split"]
    # Independent check: count the written rows per split and stratum.
    frames = {s: ds.dataset(os.path.join(summary["output"], "raw", s)).to_table(columns=["label", "site"])
              for s in ("train", "dev", "test")}
    worst = 0.0
    totals = {}
    for s, t in frames.items():
        for (label, site), n in t.group_by(["label", "site"]).aggregate([("label", "count")]).to_pandas() \
                .set_index(["label", "site"])["label_count"].items():
            totals.setdefault((label, site), {})[s] = n
    for key, by_split in totals.items():
        n = sum(by_split.values())
        for s, f in (("train", 0.7), ("dev", 0.15), ("test", 0.15)):
            worst = max(worst, abs(by_split.get(s, 0) - n * f))
    print(f"{args.rows:,} rows: {wall:.1f} s wall, peak RSS {peak_kb / 1024 / 1024:.2f} GiB "
          f"(/usr/bin/time -v), {len(totals)} strata")
    print(f"largest per-stratum deviation from quota, counted from the Parquet files: {worst:.3f} "
          f"(report: {balance['largest_deviation']}); rows {summary['rows']}")
    assert worst < 1, "a stratum is off by 1 or more"


if __name__ == "__main__":
    main()
