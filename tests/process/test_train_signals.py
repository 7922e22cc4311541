"""Ctrl-C, a second Ctrl-C and exceptions: no process of the trainer's group outlives kohya-wrap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.events import Progress, read_events  # noqa: E402
from kohya_wrap.process import group_members  # noqa: E402
from kohya_wrap.train.runner import run_training  # noqa: E402

ROOT = Path(__file__).parents[2]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def trainer_processes(pid_file: Path) -> tuple[list[int], int]:
    rows = [line.split() for line in pid_file.read_text().splitlines()]
    return [int(r[0]) for r in rows], int(rows[0][1])


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def state_saved(run_dir: Path) -> bool:
    events = run_dir / "events.jsonl"
    return events.is_file() and '"state_saved"' in events.read_text()


def progressed(run_dir: Path) -> bool:
    events = run_dir / "events.jsonl"
    return events.is_file() and any(isinstance(e, Progress) and e.step >= 1 for e in read_events(events))


def start_cli(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # its own session, so the test's signal reaches kohya-wrap only, as a terminal's Ctrl-C would
    return subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "train", str(run_dir), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_ctrl_c_stops_the_whole_group_and_says_how_to_resume(tmp_path):
    pid_file = tmp_path / "pids"
    run_dir = make_run_dir(
        tmp_path,
        max_train_steps=200,
        save_every_n_steps=1,
        fake_args=("--step-delay", "0.1", "--pid-file", str(pid_file)),
    )
    cli = start_cli(run_dir)
    # a complete state (the trainer said so), not a folder still being written when the signal lands
    assert wait_for(lambda: progressed(run_dir) and state_saved(run_dir))
    pids, pgid = trainer_processes(pid_file)
    assert len(pids) == 2 and pgid == pids[0] != cli.pid  # launcher + trainer, in their own group
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, err.decode()
    assert group_members(pgid) == [] and not any(alive(p) for p in pids)
    text = err.decode() + out.decode()
    assert "interrupted" in text
    assert f"kohya-wrap train --resume {run_dir}" in " ".join(text.split())
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "interrupted" and manifest["exit_code"] == 130
    assert manifest["attempts"][0]["stop_reason"] == "interrupt"


def test_second_ctrl_c_kills_a_trainer_that_ignores_the_first(tmp_path):
    pid_file = tmp_path / "pids"
    run_dir = make_run_dir(
        tmp_path,
        max_train_steps=400,
        save_every_n_steps=100,
        fake_args=("--step-delay", "0.1", "--ignore-sigint", "--pid-file", str(pid_file)),
    )
    cli = start_cli(run_dir)
    assert wait_for(lambda: progressed(run_dir))
    pids, pgid = trainer_processes(pid_file)
    cli.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert alive(pids[1])  # the trainer ignored it (its launcher did not)
    started = time.monotonic()
    cli.send_signal(signal.SIGINT)
    cli.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert cli.returncode == 130
    assert group_members(pgid) == [] and not any(alive(p) for p in pids)


def test_an_exception_in_kohya_wrap_leaves_no_orphan(tmp_path):
    pid_file = tmp_path / "pids"
    run_dir = make_run_dir(
        tmp_path, max_train_steps=400, fake_args=("--step-delay", "0.1", "--pid-file", str(pid_file))
    )

    def explode(event):
        if isinstance(event, Progress) and event.step >= 1:
            raise RuntimeError("renderer bug")

    with pytest.raises(RuntimeError, match="renderer bug"):
        run_training(run_dir, on_event=explode)
    pids, pgid = trainer_processes(pid_file)
    assert group_members(pgid) == [] and not any(alive(p) for p in pids)
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "crashed"


def test_signalling_only_the_launcher_orphans_the_trainer(tmp_path):
    """Why the group matters (transcript F5_sigint_launcher_only): the fake launcher, like accelerate,
    does not forward signals."""
    pid_file = tmp_path / "pids"
    run_dir = make_run_dir(
        tmp_path, max_train_steps=400, fake_args=("--step-delay", "0.05", "--pid-file", str(pid_file))
    )
    cli = start_cli(run_dir)
    try:
        assert wait_for(lambda: progressed(run_dir))
        pids, _ = trainer_processes(pid_file)
        os.kill(pids[0], signal.SIGINT)
        assert wait_for(lambda: not alive(pids[0]), 10)
        assert alive(pids[1])
    finally:
        cli.send_signal(signal.SIGINT)
        cli.communicate(timeout=60)
    assert not alive(pids[1])
