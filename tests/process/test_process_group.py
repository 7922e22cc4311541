"""process.ProcessGroup: a child in a group of its own, stopped as its policy says, and nothing of it left."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kohya_wrap.process import TRAINER, WORKER, ProcessGroup, StopPolicy, group_members

# A parent that counts the SIGINTs it gets (and ignores them), with a grandchild in its group.
COUNTER = """
import signal, subprocess, sys, time
seen = []
signal.signal(signal.SIGINT, lambda *_: (seen.append(1), print(f"sigint {len(seen)}", flush=True)))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def wait_for(out: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in out.read_text()


def start(tmp_path: Path, policy: StopPolicy) -> tuple[ProcessGroup, Path]:
    out = tmp_path / "out.txt"
    with out.open("wb") as stdout:
        group = ProcessGroup([sys.executable, "-c", COUNTER], stdout=stdout, stderr=subprocess.STDOUT, policy=policy)
    wait_for(out, "ready")
    return group, out


def test_a_worker_gets_every_stop_as_sigint_and_close_leaves_nothing(tmp_path):
    group, out = start(tmp_path, WORKER)
    with group:
        group.stop("interrupt")
        wait_for(out, "sigint 1")  # two signals sent at once may reach it as one
        group.stop("interrupt")
        wait_for(out, "sigint 2")
        assert group.poll() is None and not group.killed
    assert group.killed and group_members(group.pid) == []


def test_a_trainer_is_killed_at_the_second_stop(tmp_path):
    group, _ = start(tmp_path, TRAINER)
    with group:
        group.stop("interrupt")
        group.stop("interrupt")
        assert group.wait(10) is not None and group.killed and group.stop_reason == "interrupt"
    assert group_members(group.pid) == []


def test_a_group_that_ignores_sigint_gets_sigterm_then_sigkill(tmp_path):
    group, _ = start(tmp_path, StopPolicy(0.3, 0.3, second_stop_kills=True))
    with group:
        group.stop("nan")
        began = time.monotonic()
        while group.wait(0.1) is None and time.monotonic() - began < 10:
            pass
        # SIGTERM ends the parent (it handles SIGINT only); its grandchild goes with the group's SIGKILL
        assert group.proc.returncode is not None and time.monotonic() - began < 5
    assert group_members(group.pid) == []
