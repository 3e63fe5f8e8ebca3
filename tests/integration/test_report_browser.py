"""report.html in a real browser: headless Chromium (the Debian package, installed by
`scripts/chromium.sh install`) opens the page of a real run from file://, with name
resolution mapped to nothing so no request can leave, logs no console message, draws it
(a screenshot is taken) and its DOM holds the row funnel and the per-class agreement.

A control page that does log and fetch proves the console check sees what it must.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from pipeline.run import run
from tests.conftest import ROOT, example_config

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         '--host-resolver-rules=MAP * ~NOTFOUND', "--enable-logging=stderr", "--v=0"]


def _chromium() -> str:
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "chromium.sh"), "path"], capture_output=True,
                          text=True)
    assert done.returncode == 0, "chromium is missing: scripts/chromium.sh install (" + done.stderr.strip() + ")"
    return done.stdout.strip()


def _open(page: str, profile, *args: str):
    """(stdout, console messages) of Chromium on `page`, with a new empty profile."""
    profile = str(profile)
    shutil.rmtree(profile, ignore_errors=True)
    os.makedirs(profile)
    done = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={profile}", *args, f"file://{page}"],
                          capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    cfg = example_config(tmp_path_factory.mktemp("vi"), rows=400)
    out = tmp_path_factory.mktemp("out")
    summary = run(cfg, output=str(out), store=str(out / "m.sqlite"))
    import json

    with open(os.path.join(summary["output"], "report.json")) as f:
        report = json.load(f)
    return os.path.join(summary["output"], "report.html"), report


def test_console_check_sees_a_logging_page(tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<p>x</p><script>console.error("control-error"); var x = new XMLHttpRequest();'
                       'try { x.open("GET", "http://example.com/", false); x.send(); console.log("fetched"); }'
                       'catch (e) { console.log("blocked: " + e.name); }</script>')
    _, console = _open(str(control), tmp_path / "profile", "--dump-dom")
    assert any("control-error" in line for line in console), console
    assert any("blocked: NetworkError" in line for line in console), console   # no request leaves


def test_report_opens_offline_without_console_errors(page, tmp_path):
    path, report = page
    dom, console = _open(path, tmp_path / "profile", "--dump-dom")
    assert not console, console
    rows = report["rows"]
    for key in ("input", "quarantined", "duplicates", "train", "dev", "test"):
        assert re.search(rf'data-funnel="{key}">{rows[key]:,}<', dom), key
    classes = re.search(r'<table class="class-agreement">.*?</table>', dom, re.S).group(0)
    for c in report["labels"]["classes_by_agreement"]:
        assert re.search(rf"<td>{c['class']}</td>.*?>{c['mean_item_agreement']:.4g}<", classes, re.S), c
    assert dom.count("<svg") >= 5 and 'id="lineage-graph"' in dom


def test_report_screenshot(page, tmp_path):
    path, _ = page
    shot = tmp_path / "report.png"
    _, console = _open(path, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400",
                       "--hide-scrollbars")
    assert not console, console
    with open(shot, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000      # a drawn page, not a blank one
    keep = os.environ.get("DATAPREP_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "report.png"))
