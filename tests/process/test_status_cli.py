"""`kohya-wrap status` as a process, on the recorded run A_cli, while another writer appends to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from recorded_run import copy_recorded_run


def kw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def kw_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_status_json_of_a_finished_run(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", with_files=True)
    r = kw("status", str(run), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "finished" and out["outcome"] == "finished" and out["exit_code"] == 0
    assert (out["step"], out["total_steps"], out["percent"]) == (4, 4, 100.0)
    assert (out["rate"], out["rate_unit"], out["avr_loss"]) == (3.41, "s/it", 1.12)
    assert out["last_checkpoint"] == {"path": str(run / "output" / "tinylora.safetensors"), "step": None}
    assert out["lora_file"] == str(run / "output" / "tinylora.safetensors") and out["lora_exists"] is True
    assert out["preset"] == "smoke" and out["resumable"] is False and out["done"] is True


def test_status_human_of_a_stalled_run(tmp_path: Path) -> None:
    # the recorded events are from 2026-11-25; "now" is long after, so the cut run has gone quiet
    run = copy_recorded_run(tmp_path / "my run", events=17, age_s=3600, with_files=True)  # the state it resumes
    r = kw("status", str(run))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "stalled (stalled or stopped: no event for" in text
    assert "2/4 (50%) 4.17 s/it" in text
    assert "loss 1.24" in text
    assert f"saved state {run}/output/tinylora-step00000002-state (step 2)" in text
    assert f"resume with kohya-wrap train --resume '{run}'" in text
    assert "last warning no regularization images" in text


def test_status_of_a_live_run_is_running(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", events=11, age_s=3600)
    (run / "train.log").write_text("steps:  50%|█████     | 2/4\r")
    out = json.loads(kw("status", str(run), "--json").stdout)
    assert out["state"] == "running" and out["seconds_since_output"] < 60
    assert kw("status", str(run), "--json", "--stale-after", "0").stdout.count('"stalled"') == 1


def test_status_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    r = kw("status", str(tmp_path))
    assert r.returncode == 1
    assert "is not a run directory: it holds neither plan.json nor events.jsonl" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    gone = kw("status", str(tmp_path / "runs" / "ohwx-l"))  # a mistyped run directory
    assert gone.returncode == 1 and "ohwx-l does not exist" in gone.stderr and "Traceback" not in gone.stderr


def _append_slowly(path: Path, lines: list[str], delay: float) -> threading.Thread:
    def write() -> None:
        for line in lines:
            time.sleep(delay)
            with open(path, "a", encoding="utf-8") as f:
                f.write(line)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_follow_json_until_finished(tmp_path: Path) -> None:
    full = copy_recorded_run(tmp_path / "run", age_s=0).joinpath("events.jsonl").read_text(encoding="utf-8")
    lines = full.splitlines(keepends=True)
    (tmp_path / "run" / "events.jsonl").write_text("".join(lines[:4]), encoding="utf-8")
    proc = kw_popen("status", str(tmp_path / "run"), "--follow", "--json", "--interval", "0.05")
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    writer = _append_slowly(tmp_path / "run" / "events.jsonl", lines[4:], 0.01)
    out, err = proc.communicate(timeout=60)
    writer.join()
    assert proc.returncode == 0, err
    assert (first["state"], first["phase"], first["step"], first["total_steps"]) == (
        "running",
        "loading_model",
        None,
        4,
    )
    snapshots = [json.loads(line) for line in out.splitlines()]
    assert snapshots[-1]["state"] == "finished" and snapshots[-1]["step"] == 4 and snapshots[-1]["avr_loss"] == 1.12
    steps = [s["step"] for s in snapshots if s["step"] is not None]
    assert steps == sorted(steps) and steps[-1] == 4


def test_follow_exits_with_the_runs_exit_code(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", events=10)
    with open(run / "events.jsonl", "a", encoding="utf-8") as f:
        f.write('{"t": "2026-11-25T09:15:14.000Z", "type": "error", "message": "CUDA out of memory", "kind": "oom"}\n')
        f.write(
            '{"t": "2026-11-25T09:15:14.100Z", "type": "finished", "outcome": "oom", "exit_code": 11, '
            '"returncode": 1}\n'
        )
    r = kw("status", str(run), "--follow")
    assert r.returncode == 11
    assert "error: CUDA out of memory" in r.stdout
    assert "finished: oom (exit code 11)" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("failed")


def test_follow_plain_lines_without_a_terminal(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run")
    r = kw("status", str(run), "--follow")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "phase: caching_latents" in lines
    assert f"checkpoint saved: {run}/output/tinylora-step00000002.safetensors" in lines
    assert "finished: finished (exit code 0)" in lines
    assert lines[-1].startswith("finished  4/4 (100%)  3.41 s/it") and "loss 1.12" in lines[-1]


def test_follow_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", events=12)
    proc = kw_popen("status", str(run), "--follow", "--interval", "0.05")
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    first = proc.stdout.readline()  # it is following
    assert first and time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "stopped following; the run itself is not affected" in err
    assert "Traceback" not in err
    assert (run / "events.jsonl").read_text(encoding="utf-8") == "".join(
        copy_recorded_run(tmp_path / "again", events=12)
        .joinpath("events.jsonl")
        .read_text(encoding="utf-8")
        .replace(str(tmp_path / "again"), str(run))
    )


GUIDE = Path(__file__).parents[2] / "docs" / "rented-gpu.md"


def _guide_commands() -> list[list[str]]:
    """The `kohya-wrap ...` commands in the guide's shell blocks, without nohup, redirections and `&`."""
    import re
    import shlex

    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for line in "\n".join(blocks).splitlines():
        words = shlex.split(line.split("&&")[0].split(">")[0].replace(" &", ""))
        if words[:1] == ["nohup"]:
            words = words[1:]
        if words[:1] == ["kohya-wrap"]:
            commands.append(words[1:])
    return commands


def test_guide_commands_parse_and_status_runs_on_a_recorded_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import click

    from kohya_wrap.cli import cli

    commands = _guide_commands()
    assert {c[0] for c in commands} >= {"doctor", "prepare", "train", "status"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "dataset").mkdir()
    copy_recorded_run(tmp_path / "runs" / "RUN_NAME", with_files=True)
    for args in commands:
        command = cli.get_command(click.Context(cli), args[0])
        assert command is not None, args
        command.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value
        if args[0] == "status":
            r = kw(*args)
            assert r.returncode == 0, (args, r.stderr)
            assert "finished" in r.stdout


def test_status_of_a_stopped_run_it_cannot_resume_says_why(tmp_path: Path) -> None:
    # the events recorded a saved state, but output/ holds none: `train --resume` would refuse it
    run = copy_recorded_run(tmp_path / "run", events=17, age_s=3600)
    r = kw("status", str(run))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "resume with" not in text
    assert f"cannot resume it stopped before its first save: {run}/output holds no saved state: plan a new run" in text
    out = json.loads(kw("status", str(run), "--json").stdout)
    assert out["resumable"] is False and out["not_resumable"].startswith("it stopped before its first save")
