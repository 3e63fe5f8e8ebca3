"""Where one dataprep run's wall time goes: the CLI run in this process, with timers around
its phases and around every fused stage the DirectRunner executes.

    python bench/phases.py [--top N] [--json FILE] -- run CONFIG.yaml --force --output DIR ...

Prints, in seconds of wall and of this process's CPU (user + sys, every thread):
- start: the interpreter and the CLI's imports up to `pipeline.run.run`;
- imports inside the run (TensorFlow Transform, Beam's runner modules) until the graph is built;
- build: `build_pipeline` (TFT's analyser expansion happens here);
- translate: `Pipeline.run` up to the first stage (to_runner_api, pickling, fusion);
- stages: the sum over the FnApiRunner's fused stages, and the `--top` largest by wall;
- after: the report, MLMD and the exit.

And where the peak resident memory (VmHWM) was raised: by how many MiB in each phase and in
the stages that raised it most (a stage that stays under an earlier peak raises it by 0).

It wraps Beam internals (FnApiRunner.run_stages, _execute_bundle), so it measures the
DirectRunner only; a profile, not a benchmark (`bench/run.py` is the benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

T0 = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def rss_peak() -> float:
    """This process's peak resident set so far (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    """Named intervals (wall, cpu), and per-stage totals."""

    def __init__(self):
        self.marks = {}
        self.stages = {}
        self.order = []
        self.profiles = []

    def wrap(self, owner, name: str, label: str):
        inner = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            w, c, peak = time.time(), cpu(), rss_peak()
            try:
                return inner(*args, **kwargs)
            finally:
                clock.marks.setdefault(label, [0.0, 0.0, w, 0, 0.0, peak])
                m = clock.marks[label]
                m[0] += time.time() - w
                m[1] += cpu() - c
                m[3] += 1
                m[4] += rss_peak() - peak

        setattr(owner, name, timed)

    def wrap_stage(self, runner_cls, profile: str | None = None):
        inner = runner_cls._execute_bundle
        clock = self

        def timed(runner, context, bundle_manager, bundle_input):
            name = bundle_manager.stage.name
            profiler = None
            if profile and profile in name:
                import cProfile
                profiler = cProfile.Profile()
                self.profiles.append((name, profiler))
            w, c, peak = time.time(), cpu(), rss_peak()
            try:
                if profiler is None:
                    return inner(runner, context, bundle_manager, bundle_input)
                return profiler.runcall(inner, runner, context, bundle_manager, bundle_input)
            finally:
                s = clock.stages.setdefault(name, [0.0, 0.0, 0, 0.0])
                if s[2] == 0:
                    clock.order.append(name)
                s[0] += time.time() - w
                s[1] += cpu() - c
                s[2] += 1
                s[3] += rss_peak() - peak

        runner_cls._execute_bundle = timed


def short(name: str, width: int = 110) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--profile-stage", metavar="TEXT",
                    help="cProfile the stages whose fused name contains TEXT; print their top functions")
    ap.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the dataprep arguments")
    args = ap.parse_args()
    cli_args = args.cli[1:] if args.cli[:1] == ["--"] else args.cli

    from pipeline import cli, run as run_module
    clock = Clock()
    start_wall, start_cpu, start_peak = time.time() - T0, cpu(), rss_peak()
    entered = {}
    inner_run = run_module.run

    def timed_run(*a, **k):
        entered["wall"], entered["cpu"], entered["peak"] = time.time(), cpu(), rss_peak()
        import apache_beam  # noqa: F401  (already imported by pipeline.run)
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from pipeline import build as build_module

        clock.wrap(build_module, "build_pipeline", "build")
        run_module.build_pipeline = build_module.build_pipeline
        clock.wrap(fn_runner.FnApiRunner, "run_stages", "stages (all, with the runner's own work)")
        clock.wrap(fn_runner.FnApiRunner, "create_stages", "fusion (create_stages)")
        clock.wrap(apache_beam.Pipeline, "run", "Pipeline.run")
        clock.wrap_stage(fn_runner.FnApiRunner, args.profile_stage)
        return inner_run(*a, **k)

    run_module.run = timed_run      # the CLI imports it from pipeline.run when it runs
    try:
        code = cli.main(cli_args)
    except SystemExit as e:
        code = e.code or 0
    end_wall, end_cpu, end_peak = time.time(), cpu(), rss_peak()

    m = clock.marks
    total = end_wall - T0
    run_w = m.get("Pipeline.run", [0, 0])[0]
    stages_w = sum(s[0] for s in clock.stages.values())
    stages_c = sum(s[1] for s in clock.stages.values())
    rows = [
        ("start (interpreter + CLI imports)", start_wall, start_cpu),
        ("CLI until run() (config, Beam and pipeline imports)", entered["wall"] - T0 - start_wall, None),
        ("run() before build (store, TFT import)",
         m["build"][2] - entered["wall"] if "build" in m else 0, None),
        ("build_pipeline (graph, TFT expansion)", *m.get("build", [0, 0])[:2]),
        ("Pipeline.run outside stages (translation, pickling, fusion, runner)", run_w - stages_w, None),
        ("  of which fusion (create_stages)", *m.get("fusion (create_stages)", [0, 0])[:2]),
        (f"stages ({len(clock.stages)} fused, {sum(s[2] for s in clock.stages.values())} bundles)",
         stages_w, stages_c),
        ("after the job (report, MLMD, exit)",
         end_wall - (m["Pipeline.run"][2] + run_w) if "Pipeline.run" in m else 0, None),
    ]
    print(f"\nexit {code}; wall {total:.2f} s, CPU {end_cpu:.2f} s", file=sys.stderr)
    for name, w, c in rows:
        print(f"{w:8.2f} s wall {'' if c is None else f'{c:8.2f} s CPU'}  {name}", file=sys.stderr)
    print(f"\nlargest stages (wall s, CPU s, bundles):", file=sys.stderr)
    for name, (w, c, n, _) in sorted(clock.stages.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{w:8.2f} {c:8.2f} {n:4d}  {short(name)}", file=sys.stderr)
    build, job = m.get("build", [0] * 6), m.get("Pipeline.run", [0] * 6)
    stage_rise = sum(s[3] for s in clock.stages.values())
    peak_rows = [("start", start_peak),
                 ("run() before build (TFT import)", build[5] - start_peak),
                 ("build", build[4]),
                 ("until the job", job[5] - build[5] - build[4]),
                 ("the job", job[4]),
                 ("  of which in stages", stage_rise),
                 ("after the job", end_peak - job[5] - job[4])]
    print(f"\npeak RSS {end_peak:.0f} MiB, raised by (MiB):", file=sys.stderr)
    for name, rise in peak_rows:
        print(f"{rise:8.0f}  {name}", file=sys.stderr)
    for name, s in sorted(clock.stages.items(), key=lambda kv: -kv[1][3])[:5]:
        if s[3] > 0:
            print(f"{s[3]:8.0f}  {short(name)}", file=sys.stderr)
    for name, profiler in clock.profiles:
        import pstats
        print(f"\ncProfile of {short(name)}:", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"total": total, "cpu": end_cpu, "peak_mib": end_peak, "peak_raised_by": peak_rows,
                       "phases": rows, "stages": {n: clock.stages[n] for n in clock.order}}, f, indent=1)
    sys.exit(code)


if __name__ == "__main__":
    main()
