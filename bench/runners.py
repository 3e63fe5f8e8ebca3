"""Benchmark: the same dataprep run on DirectRunner, on Flink with LOOPBACK (the Python work in
the launching process) and on Flink with the SDK worker pool (one Python worker per slot).

    scripts/flink.sh start
    python bench/runners.py --rows 1000000 [--runners direct,flink-loopback,flink-workers] [--repeats 1]

Each run is a child process (`dataprep run` on bench/config.yaml, the Adult-shaped file of
bench/generate.py). Wall seconds, and the peak RSS of every process that takes part, sampled
from /proc every 0.2 s: the launcher, the Beam job server, Flink's job manager and task manager,
the worker pool and each SDK worker. The launcher's peak also comes from os.wait4 (exact).
Disk: the peak of the space taken on the outputs' filesystem since the run started (statvfs, at
the same times), which counts the outputs, the spill files and Flink's blocking exchanges when
they share that disk, as they do here (Flink's `io.tmp.dirs` is /tmp); anything else writing to
that disk meanwhile counts too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from generate import bench_config, data_file, generate  # noqa: E402

FLINK = ["--runner", "FlinkRunner", "--flink_master", "localhost:8081", "--parallelism", "2"]
RUNNERS = {
    "direct": [],
    "flink-loopback": FLINK,
    "flink-workers": FLINK + ["--environment_type", "EXTERNAL", "--environment_config", "localhost:50000"],
}
ROLES = [("jobmanager", "StandaloneSessionClusterEntrypoint"), ("taskmanager", "TaskManagerRunner"),
         ("job server", "job-server"), ("worker pool", "worker_pool_main"), ("sdk worker", "SdkHarness")]


def _rss_mib(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class PeakSampler(threading.Thread):
    """Peak RSS per process of each role, while the run lasts."""

    def __init__(self, launcher: int, roles=ROLES, every: float = 0.2, disk: str = "/"):
        super().__init__(daemon=True)
        self.launcher, self.roles, self.every, self.disk = launcher, roles, every, disk
        self.peaks: Dict[str, Dict[int, float]] = {}
        self.free_at_start = _free_bytes(disk)
        self.disk_peak = 0
        self.done = threading.Event()

    def _role(self, pid: int) -> Optional[str]:
        if pid == self.launcher:
            return "launcher"
        cmd = _cmdline(pid)
        for role, needle in self.roles:
            if needle in cmd:
                return role
        return None

    def run(self) -> None:
        while not self.done.is_set():
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                pid = int(name)
                role = self._role(pid)
                rss = _rss_mib(pid) if role else None
                if rss is not None:
                    mine = self.peaks.setdefault(role, {})
                    mine[pid] = max(mine.get(pid, 0.0), rss)
            self.disk_peak = max(self.disk_peak, self.free_at_start - _free_bytes(self.disk))
            self.done.wait(self.every)


def measure(cmd: List[str], on_flink: bool, disk: str):
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    sampler = PeakSampler(proc.pid, ROLES if on_flink else (), disk=disk)   # an idle cluster is not the run's
    sampler.start()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    sampler.done.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:       # a failed run's peaks say where it got to: printed, then the error
        print(f"  FAILED after {wall:.1f} s (exit {code}); disk {sampler.disk_peak / 2**30:.1f} GiB; " +
              ", ".join(f"{r} {max(p.values()):.0f} MiB" for r, p in sorted(sampler.peaks.items())), flush=True)
        raise RuntimeError(f"{cmd[:6]} exited {code}:\n{err[-3000:]}")
    peaks = {role: max(p.values()) for role, p in sampler.peaks.items()}
    peaks["launcher"] = usage.ru_maxrss / 1024.0
    counts = {role: len(p) for role, p in sampler.peaks.items()}
    return wall, peaks, counts, sampler.disk_peak / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--shards", type=int, help="files per output folder (the config's 4 by default); a "
                    "shard is sorted in one worker's memory, so 60M rows want more")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (in a temp folder, printed)")
    args = ap.parse_args()
    data = data_file(args.data, f"adult-{args.rows}.csv", args.rows, generate)
    work = tempfile.mkdtemp(prefix="dataprep-bench-runners-")
    cfg_path = bench_config(os.path.join(HERE, "config.yaml"), data, work, args.shards)
    names = args.runners.split(",")
    rows = []
    for k in range(args.repeats):
        for name in names:
            cmd = [sys.executable, "-m", "pipeline.cli", "run", cfg_path, "--force", "--output",
                   os.path.join(work, f"{name}-{k}"), "--store", os.path.join(work, f"{name}.sqlite"), *RUNNERS[name]]
            wall, peaks, counts, disk = measure(cmd, name.startswith("flink"), work)
            rows.append((name, wall, peaks, counts, disk))
            print(f"  run {k + 1} {name:15s} {wall:8.1f} s  disk {disk:.1f} GiB  " +
                  ", ".join(f"{r} {v:.0f} MiB" + (f" (x{counts[r]})" if counts.get(r, 1) > 1 else "")
                            for r, v in sorted(peaks.items())), flush=True)
            if not args.keep:
                shutil.rmtree(os.path.join(work, f"{name}-{k}"), ignore_errors=True)
    print(f"\n{args.rows:,} rows, {os.cpu_count()} cores, {dt.date.today()}; peak RSS MiB per process, "
          "peak disk GiB")
    roles = ["launcher", "job server", "jobmanager", "taskmanager", "worker pool", "sdk worker"]
    print("| runner | wall s | " + " | ".join(roles) + " | disk GiB |\n|---|---:|" + "---:|" * (len(roles) + 1))
    for name, wall, peaks, counts, disk in rows:
        cells = [(f"{peaks[r]:,.0f}" + (f" (×{counts[r]})" if counts.get(r, 1) > 1 else "")) if r in peaks
                 else "—" for r in roles]
        print(f"| {name} | {wall:.1f} | " + " | ".join(cells) + f" | {disk:.1f} |")
    if args.keep:
        print(f"outputs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
