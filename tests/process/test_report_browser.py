"""report.html in a real headless browser (Debian's chromium): it renders, every image loads, and the
loss curve has one point per progress event with a loss.

The page's own script writes what rendered onto <body> (data-images-loaded, data-curve-points, ...)
at the load event; --dump-dom prints the DOM after it. Skipped, saying why, without chromium
(`apt-get install chromium`; set KOHYA_WRAP_TEST_CHROMIUM to use another binary).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from report_run_fixture import PROMPTS, loss_event_count, make_run

from kohya_wrap.report.html import write_report

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium() -> str:
    for name in (os.environ.get("KOHYA_WRAP_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    pytest.skip("browser test skipped: no chromium on PATH (Debian: apt-get install chromium)")


def run_chromium(page: Path, tmp_path: Path, *extra: str) -> str:
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *extra,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def body_state(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, dom[:500]
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', m.group(1)))


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, transcript="F5x_sigint_ignored_bg", sample_steps=(2, 4, 6))
    page = write_report(run_dir)
    state = body_state(run_chromium(page, tmp_path, "--dump-dom"))
    assert state["rendered"] == "yes"
    assert state["images-total"] == state["images-loaded"] == str(3 * len(PROMPTS))
    assert state["images-broken"] == "0"
    assert state["curve-points"] == str(loss_event_count(run_dir))

    shot = tmp_path / "shot.png"
    run_chromium(page, tmp_path, "--window-size=1200,1600", f"--screenshot={shot}")
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100, "the screenshot is blank"


def test_a_broken_image_is_noticed(tmp_path: Path) -> None:
    """The control: the same check fails when an image cannot be decoded."""
    run_dir = make_run(tmp_path, sample_steps=(2,))
    (run_dir / "output" / "sample" / "tinylora_000004_00_20261125091531_42.png").write_bytes(b"not a png")
    state = body_state(run_chromium(write_report(run_dir), tmp_path, "--dump-dom"))
    assert state["images-broken"] == "1"
    assert state["images-loaded"] == str(len(PROMPTS))
