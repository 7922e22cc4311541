"""Whatever state a run is left in, status, train and resume agree on one next step, and it works:
kohya-wrap killed between the trainer's final save and run.json; SIGTERM to a trainer that ignores SIGINT."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir, set_fake_args  # noqa: E402
from test_train_signals import alive, progressed, start_cli, state_saved, trainer_processes, wait_for  # noqa: E402

from kohya_wrap.cli import cli  # noqa: E402
from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.process import STOP_KILL_AFTER_S, STOP_TERM_AFTER_S, group_members  # noqa: E402
from kohya_wrap.status import read_status  # noqa: E402
from kohya_wrap.train.runner import run_training  # noqa: E402


def as_if_killed_before_run_json(run_dir: Path) -> None:
    """What `kill -9` of kohya-wrap right after the trainer's final save leaves: no run.json, no end event."""
    (run_dir / "run.json").unlink()
    events = run_dir / "events.jsonl"
    lines = [line for line in events.read_text().splitlines() if '"type": "finished"' not in line]
    events.write_text("\n".join(lines) + "\n")


def test_killed_between_the_final_save_and_run_json_resume_records_it(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2)
    assert run_training(run_dir).outcome == "finished"
    lora_bytes = (run_dir / "output" / "face.safetensors").read_bytes()
    as_if_killed_before_run_json(run_dir)
    log_size = (run_dir / "train.log").stat().st_size

    status = read_status(run_dir)
    assert status.resumable and status.resume_command == f"kohya-wrap train --resume {run_dir}"
    plain = CliRunner().invoke(cli, ["train", str(run_dir)])
    assert plain.exit_code == ExitCode.ERROR and "--resume" in plain.output

    resumed = CliRunner().invoke(cli, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert (run_dir / "train.log").stat().st_size == log_size  # nothing trained again
    assert (run_dir / "output" / "face.safetensors").read_bytes() == lora_bytes
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "finished" and manifest["verification"]["ok"]
    assert manifest["attempts"][-1]["stop_reason"].startswith("recorded")
    after = read_status(run_dir)
    assert after.state == "finished" and not after.resumable
    again = CliRunner().invoke(cli, ["train", "--resume", str(run_dir)])
    assert again.exit_code == ExitCode.ERROR and "finished run" in again.output  # and now it says so everywhere


def test_an_interrupted_record_of_a_finished_trainer_is_recorded_by_resume(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2)
    assert run_training(run_dir).outcome == "finished"
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest["outcome"], manifest["exit_code"] = "interrupted", 130  # a stop that came as the trainer finished
    (run_dir / "run.json").write_text(json.dumps(manifest))
    result = run_training(run_dir, __import__("kohya_wrap.train.runner").train.runner.TrainOptions(resume=True))
    assert result.outcome == "finished" and result.exit_code == 0


def test_sigterm_stops_a_trainer_that_ignores_sigint_quickly_and_resume_works(tmp_path):
    pid_file = tmp_path / "pids"
    run_dir = make_run_dir(
        tmp_path,
        max_train_steps=38,  # one epoch of the fake's 40 batches: a resume continues it exactly
        save_every_n_steps=2,
        fake_args=("--step-delay", "0.5", "--ignore-sigint", "--pid-file", str(pid_file)),
    )
    proc = start_cli(run_dir)
    assert wait_for(lambda: progressed(run_dir) and state_saved(run_dir))
    pids, pgid = trainer_processes(pid_file)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert took < STOP_TERM_AFTER_S + STOP_KILL_AFTER_S + 5, took  # not the ~50 s of waiting for the trainer
    assert proc.returncode == ExitCode.INTERRUPTED, err.decode()
    assert group_members(pgid) == [] and not any(alive(p) for p in pids)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "interrupted"
    status = read_status(run_dir)
    assert status.resumable  # status says resume ...
    set_fake_args(run_dir, ())
    resumed = run_training(run_dir, __import__("kohya_wrap.train.runner").train.runner.TrainOptions(resume=True))
    assert resumed.outcome == "finished"  # ... and resume works


def test_killed_before_run_json_without_states_resume_records_it_too(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2, save_state=False)
    assert run_training(run_dir).outcome == "finished"
    as_if_killed_before_run_json(run_dir)
    status = read_status(run_dir)
    assert status.resumable and status.resume_command == f"kohya-wrap train --resume {run_dir}"
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "finished"
    assert read_status(run_dir).state == "finished"


def test_a_run_stopped_before_its_end_without_states_is_not_recorded_as_finished(tmp_path):
    run_dir = make_run_dir(
        tmp_path, max_train_steps=6, save_every_n_steps=2, save_state=False, fake_args=("--crash-at", "4")
    )
    assert run_training(run_dir).outcome == "crashed"
    assert not read_status(run_dir).resumable
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == ExitCode.ERROR and "no saved state" in resumed.output
