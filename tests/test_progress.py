"""The progress line: on a run whose input is slow to go through (a user filter that sleeps),
plain lines on stderr (not a TTY), at most one a second, with the phase, the bytes read of
the input's total and the time elapsed."""

from __future__ import annotations

import io
import json
import os
import re
import time

from pipeline.progress import Progress
from tests.conftest import example_config, run_cli


def test_progress_sums_what_the_read_stage_reports(tmp_path):
    from transforms.read import report_progress

    stream = io.StringIO()
    with Progress(4_000_000, str(tmp_path), stream=stream, interval=0.05) as p:
        p.phase("running the job")
        report_progress(str(tmp_path), "/a.csv", 1_000_000)
        report_progress(str(tmp_path), "/b.csv", 1_000_000)
        time.sleep(0.3)
        report_progress(str(tmp_path), "/b.csv", 3_000_000)
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert "[ingest]: read 2.0 MB of 4.0 MB (50%)" in lines[-2] or any("(50%)" in x for x in lines), lines
    assert "[clean → write]: read 4.0 MB of 4.0 MB (100%)" in lines[-1], lines
    assert all("\r" not in x for x in lines)           # not a TTY: plain lines


def test_progress_lines_on_a_slow_run(tmp_path, capsys):
    cfg = example_config(tmp_path / "data", 200)
    raw = cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    raw["features"] = {}
    raw["clean"]["filters"] = ["tests.faults:slow"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    started = time.monotonic()
    code, out, err = run_cli(["run", str(path), "--output", str(tmp_path / "out")], capsys)
    seconds = time.monotonic() - started
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("dataprep: ")]
    size = sum(os.path.getsize(tmp_path / "data" / f) for f in os.listdir(tmp_path / "data")
               if f.startswith("inspection-"))
    running = [x for x in lines if x.startswith("dataprep: running the job")]
    assert running, lines
    assert any(f"of {size / 1e3:.0f} kB" in x for x in running), running   # 200 images: some kB
    assert re.search(r", \d+ s$", running[-1])
    phases = [x.split(" [")[0].rsplit(",", 1)[0] for x in lines]
    assert phases[0] == "dataprep: recording the inputs in the store" and "dataprep: writing the report" in phases
    assert "dataprep: building the job" in phases
    assert "(100%)" in running[-1]
    assert len(lines) <= seconds + 6                    # at most about one a second
