"""Benchmark: dataprep (DirectRunner, the full pipeline with TFT and MLMD) against the
pandas + scikit-learn reference on the same Adult-shaped file, and optionally TFX 1.16.

    python bench/run.py --rows 1000000 [--repeats 3] [--tool pandas,dataprep,tfx]
                        [--tfx-venv PATH] [--dataprep-args ...]

Runs the chosen tools (`--tool`, repeatable or comma separated; default pandas,dataprep;
`--only X` is the same as `--tool X`) alternately, each as a child process, and prints the
median wall seconds and the median peak RSS of each (the child's own, from os.wait4), and
the ratios `dataprep / pandas` and `tfx / dataprep` for the tools that ran.

`dataprep+tfrecord`, `dataprep+statistics` and `dataprep+tfrecord+statistics` are dataprep with
`output.formats: [parquet, tfrecord]` and/or `output.statistics: true`: run beside `dataprep`,
they give the extra cost of TFX's TFRecords and statistics (`… / dataprep`).

tfx is the peer in ../shared/peers/tfx (override with DATAPREP_TFX_PEER): CsvExampleGen →
ImportSchemaGen → Transform on LocalDagRunner + DirectRunner, a fresh work directory per run.
It needs its own venv (`bash ../shared/peers/tfx/setup.sh BASE` builds BASE/venv), given as
`--tfx-venv BASE/venv` or DATAPREP_TFX_VENV. It does less than dataprep: no quarantine, no
dedup, and its own 2:1 hash split.

TFX reads a different CSV shape from the one bench/generate.py writes: CsvExampleGen takes the
column names from the first line split on "," (quotes are not removed, so a quoted header gives
names like '"age"' that match no schema feature), and an empty field is the missing value.
generate.py's file has a quoted header, quoted strings and "?" for missing. So for tfx the same
rows are rewritten once as `adult-N.tfx.csv` beside the data file (kept like it): header
unquoted, no quoting (Adult values hold no commas or quotes), "?" → empty — the format of the
peer's make_csv.py. Rows whose label is "?" stay in, with an empty label, as TFX has nowhere
else to put them.
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

TOOLS = ["pandas", "dataprep", "tfx", "dataprep+tfrecord", "dataprep+statistics", "dataprep+tfrecord+statistics"]
# what each dataprep variant sets in the config's `output:`
VARIANTS = {"dataprep": {}, "dataprep+tfrecord": {"formats": ["parquet", "tfrecord"]},
            "dataprep+statistics": {"statistics": True},
            "dataprep+tfrecord+statistics": {"formats": ["parquet", "tfrecord"], "statistics": True}}
TFX_PEER = os.environ.get("DATAPREP_TFX_PEER",
                          os.path.normpath(os.path.join(ROOT, "..", "shared", "peers", "tfx")))


def measure(cmd, env=None):
    """(wall seconds, peak RSS MiB, CPU seconds: user + sys) of one child process; raises if it fails.
    On a shared machine the CPU seconds move less than the wall time with the others' load.

    stderr goes to a file, not a pipe: a child that logs more than a pipe buffer (TensorFlow
    and Beam do) would block on a pipe nobody reads until it exits."""
    with tempfile.TemporaryFile() as err:
        start = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here; stop Popen waiting again
        wall = time.time() - start
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}:\n{tail}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def tfx_csv(source: str, path: str, chunk: int = 1_000_000) -> str:
    """`source` (generate.py's CSV) rewritten at `path` in the shape TFX's CsvExampleGen reads:
    unquoted header and values, empty field for missing ("?")."""
    import csv

    import pandas as pd

    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as out:
        reader = pd.read_csv(source, dtype=str, na_values=["?"], keep_default_na=False, chunksize=chunk)
        for k, frame in enumerate(reader):
            frame.to_csv(out, header=k == 0, index=False, na_rep="", quoting=csv.QUOTE_NONE)
    os.replace(tmp, path)
    return path


def parse_tools(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The tools to run, in the order given, from --tool (repeated or comma separated) or --only."""
    if args.only:
        return [args.only]
    names = []
    for item in args.tool or ["pandas,dataprep"]:
        for name in filter(None, (s.strip() for s in item.split(","))):
            if name not in TOOLS:
                ap.error(f"--tool: invalid choice {name!r} (choose from {', '.join(TOOLS)})")
            if name not in names:
                names.append(name)
    if not names:
        ap.error("--tool: no tool given")
    return names


def tfx_python(ap: argparse.ArgumentParser, venv: str | None) -> str:
    """The TFX venv's python, or an argparse error naming --tfx-venv."""
    if not venv:
        ap.error("--tool tfx needs --tfx-venv PATH (or DATAPREP_TFX_VENV): the venv built by "
                 f"{os.path.join(TFX_PEER, 'setup.sh')}")
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        ap.error(f"--tfx-venv {venv}: no python at {python}")
    if not os.path.isfile(os.path.join(TFX_PEER, "run_tfx.py")):
        ap.error(f"--tool tfx: no run_tfx.py in {TFX_PEER} (set DATAPREP_TFX_PEER)")
    return python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--tool", action="append", metavar="NAME[,NAME]",
                       help=f"tools to run, repeatable or comma separated, from {', '.join(TOOLS)} "
                            "(default: pandas,dataprep)")
    which.add_argument("--only", choices=["pandas", "dataprep"], help="the same as --tool NAME")
    ap.add_argument("--tfx-venv", default=os.environ.get("DATAPREP_TFX_VENV"),
                    help="venv of the TFX peer (from its setup.sh); needed for --tool tfx "
                         "(default: $DATAPREP_TFX_VENV)")
    ap.add_argument("--dataprep-args", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    names = parse_tools(ap, args)
    python_tfx = tfx_python(ap, args.tfx_venv) if "tfx" in names else None

    data = data_file(args.data, f"adult-{args.rows}.csv", args.rows, generate)
    data_tfx = (data_file(args.data, f"adult-{args.rows}.tfx.csv", args.rows, lambda _, p: tfx_csv(data, p))
                if python_tfx else None)
    work = tempfile.mkdtemp(prefix="dataprep-bench-")

    def dataprep(variant: str):
        folder = os.path.join(work, variant)
        os.makedirs(folder)
        cfg_path = bench_config(os.path.join(HERE, "config.yaml"), data, folder, output=VARIANTS[variant])
        return lambda k: [sys.executable, "-m", "pipeline.cli", "run", cfg_path, "--force", "--output",
                          os.path.join(folder, f"out-{k}"), "--store", os.path.join(work, "m.sqlite"),
                          *args.dataprep_args]

    tools = {
        "pandas": lambda k: [sys.executable, os.path.join(HERE, "pandas_reference.py"), "--input", data,
                             "--output", os.path.join(work, f"pandas-{k}")],
        "tfx": lambda k: [python_tfx, os.path.join(TFX_PEER, "run_tfx.py"), data_tfx,
                          "--workdir", os.path.join(work, f"tfx-{k}")],
        **{variant: dataprep(variant) for variant in VARIANTS if variant in names},
    }
    results = {n: [] for n in names}
    try:
        for k in range(args.repeats):
            for name in (names if k % 2 == 0 else names[::-1]):       # alternate the order
                wall, rss, cpu = measure(tools[name](k))
                results[name].append((wall, rss, cpu))
                print(f"  run {k + 1} {name:9s} {wall:8.1f} s  {rss:8.0f} MiB  {cpu:8.1f} CPU s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rows:,} rows, {os.cpu_count()} cores, {dt.date.today()}, median of {args.repeats}")
    print("| tool | wall s | peak RSS MiB | CPU s |\n|---|---|---|---|")
    med = {n: tuple(statistics.median(x[i] for x in r) for i in range(3)) for n, r in results.items()}
    for n, (w, m, c) in med.items():
        print(f"| {n} | {w:.1f} | {m:.0f} | {c:.1f} |")
    for top, bottom in (("dataprep", "pandas"), ("tfx", "dataprep"),
                        *((variant, "dataprep") for variant in VARIANTS if variant != "dataprep")):
        if top in med and bottom in med:
            (tw, tm, tc), (bw, bm, bc) = med[top], med[bottom]
            print(f"| {top} / {bottom} | {tw / bw:.2f}× | {tm / bm:.2f}× | {tc / bc:.2f}× |")


if __name__ == "__main__":
    main()
