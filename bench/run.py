"""Benchmark: dataprep (DirectRunner, the full pipeline with TFT and MLMD) against the
pandas + scikit-learn reference on the same Adult-shaped file.

    python bench/run.py --rows 1000000 [--repeats 3] [--dataprep-args ...]

Runs the two alternately, each as a child process, and prints the median wall seconds and
the median peak RSS of each (the child's own, from os.wait4), and their ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from generate import bench_config, data_file, generate  # noqa: E402


def measure(cmd, env=None):
    """(wall seconds, peak RSS MiB, exit status) of one child process."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{cmd[:4]} exited {code}:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--only", choices=["pandas", "dataprep"])
    ap.add_argument("--dataprep-args", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    data = data_file(args.data, f"adult-{args.rows}.csv", args.rows, generate)
    work = tempfile.mkdtemp(prefix="dataprep-bench-")
    cfg_path = bench_config(os.path.join(HERE, "config.yaml"), data, work)
    tools = {
        "pandas": lambda k: [sys.executable, os.path.join(HERE, "pandas_reference.py"), "--input", data,
                             "--output", os.path.join(work, f"pandas-{k}")],
        "dataprep": lambda k: [sys.executable, "-m", "pipeline.cli", "run", cfg_path, "--force", "--output",
                               os.path.join(work, f"dataprep-{k}"), "--store", os.path.join(work, "m.sqlite"),
                               *args.dataprep_args],
    }
    names = [args.only] if args.only else ["pandas", "dataprep"]
    results = {n: [] for n in names}
    for k in range(args.repeats):
        for name in (names if k % 2 == 0 else names[::-1]):       # alternate the order
            wall, rss = measure(tools[name](k))
            results[name].append((wall, rss))
            print(f"  run {k + 1} {name:9s} {wall:8.1f} s  {rss:8.0f} MiB", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rows:,} rows, {os.cpu_count()} cores, {dt.date.today()}, median of {args.repeats}")
    print("| tool | wall s | peak RSS MiB |\n|---|---|---|")
    med = {n: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for n, r in results.items()}
    for n, (w, m) in med.items():
        print(f"| {n} | {w:.1f} | {m:.0f} |")
    if len(med) == 2:
        (pw, pm), (dw, dm) = med["pandas"], med["dataprep"]
        print(f"| dataprep / pandas | {dw / pw:.2f}× | {dm / pm:.2f}× |")


if __name__ == "__main__":
    main()
