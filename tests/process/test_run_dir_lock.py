"""One writer per run directory: the lock train holds for the trainer's whole life, and what status reads from it."""

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

from kohya_wrap import rundir  # noqa: E402
from kohya_wrap.errors import ExitCode, RunDirError  # noqa: E402
from kohya_wrap.rundir import RunBusy, RunLock, lock_holder  # noqa: E402
from kohya_wrap.status import read_status  # noqa: E402
from kohya_wrap.train.runner import TrainOptions, run_training  # noqa: E402


def kohya_wrap(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args], capture_output=True, text=True, timeout=120, **kw
    )


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _start_training(run_dir: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "train", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: (run_dir / "events.jsonl").is_file() and lock_holder(run_dir) is not None)
    return process


def test_a_second_writer_is_refused_while_a_trainer_runs(tmp_path):
    # long enough to outlast three refused commands on a loaded machine; the test interrupts it at the end
    run_dir = make_run_dir(tmp_path, max_train_steps=2000, fake_args=("--step-delay", "0.25"))
    first = _start_training(run_dir)
    try:
        holder = lock_holder(run_dir)
        assert holder is not None and holder.pid == first.pid and holder.what == "train" and holder.since
        began = time.monotonic()
        resume = kohya_wrap("train", "--resume", str(run_dir))
        assert resume.returncode == ExitCode.ERROR
        assert f"is in use by pid {first.pid} (train), since {holder.since}" in " ".join(resume.stderr.split())
        again = kohya_wrap("train", str(run_dir))
        assert again.returncode == ExitCode.ERROR and "is in use by pid" in again.stderr
        sample = kohya_wrap("sample", str(run_dir), "--prompt", "x")
        assert sample.returncode == ExitCode.ERROR and "is in use by pid" in sample.stderr
        score = kohya_wrap("score", str(run_dir))  # score.json is the live scoring's while it trains
        assert score.returncode == ExitCode.ERROR and "is in use by pid" in score.stderr
        assert not (run_dir / "score.json").exists()
        assert time.monotonic() - began < 120  # refused at once, no trainer started (four Python start-ups)
        status = read_status(run_dir)
        assert status.state == "running" and status.held_by and f"pid {first.pid}" in status.held_by
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    finished = [
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "finished"
    ]
    assert len(finished) == 1  # one trainer wrote this run
    assert lock_holder(run_dir) is None


def test_status_says_stalled_at_once_after_kill_9(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=400, fake_args=("--step-delay", "0.2"))
    process = _start_training(run_dir)
    _wait_for(lambda: read_status(run_dir).step is not None)
    assert read_status(run_dir, stale_after_s=3600).state == "running"
    process.kill()  # kill -9 of kohya-wrap: no `finished` event, no clean-up
    process.wait(timeout=30)
    # the orphaned trainer keeps the lock (it inherited it) until its next write fails; then it is free
    _wait_for(lambda: lock_holder(run_dir) is None, timeout_s=60)
    status = read_status(run_dir, stale_after_s=3600)  # long before any age limit
    assert status.state == "stalled" and status.outcome is None and status.held_by is None
    done = kohya_wrap("status", str(run_dir))
    assert "no process holds the run" in " ".join(done.stdout.split())


def test_the_lock_is_an_os_lock_freed_with_its_process(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom kohya_wrap.rundir import RunLock\n"
                f"RunLock({str(run_dir)!r}, 'test').acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"pid {holder.pid} \\(test\\)"):
            RunLock(run_dir, "train").acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert lock_holder(run_dir) is None
    with RunLock(run_dir, "train"):  # free again, without anyone cleaning up
        assert lock_holder(run_dir) is not None
    assert lock_holder(run_dir) is None


def test_a_finished_run_is_never_trained_again(tmp_path):
    run_dir = make_run_dir(tmp_path)
    assert run_training(run_dir).outcome == "finished"
    with pytest.raises(RunDirError, match="finished run"):
        run_training(run_dir, TrainOptions(resume=True))
    assert rundir.read_manifest(rundir.paths(run_dir).run_json).finished
