"""kohya_wrap.status on the recorded run A_cli (tests/data/status/A_cli), whole and cut short."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from kohya_wrap.codec import to_builtins
from kohya_wrap.errors import RunDirError
from kohya_wrap.status import EventTail, follow, format_duration, read_status

RECORDED = Path(__file__).parents[1] / "data" / "status" / "A_cli"
LINES = (RECORDED / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _run_with(tmp_path: Path, lines: list[str], *, plan: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    if plan:
        shutil.copy(RECORDED / "plan.json", run / "plan.json")
    (run / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    return run


def _saved_state(run: Path, step: int, epoch: int = 1) -> None:
    """A complete state folder as train_network.py saves it at `step` (what `train --resume` continues)."""
    state = run / "output" / f"tinylora-step{step:08d}-state"
    state.mkdir(parents=True)
    (state / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": step}))
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        (state / name).write_bytes(b"")


def _line_index(predicate) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, line in enumerate(LINES) if predicate(json.loads(line)))


def _event(**fields: object) -> str:
    return json.dumps({"t": fields.pop("t"), **fields}) + "\n"


def test_finished_run_reports_last_values(tmp_path: Path) -> None:
    run = _run_with(tmp_path, LINES)
    s = read_status(run, now=_ts("2026-11-26T00:00:00Z"))
    assert s.state == "finished"
    assert s.outcome == "finished" and s.exit_code == 0 and s.returncode == 0
    assert s.phase == "finished"
    assert (s.step, s.total_steps) == (4, 4)
    assert s.percent == 100.0
    assert (s.rate, s.rate_unit) == (3.41, "s/it")
    assert s.seconds_per_step == pytest.approx(3.41)
    assert s.avr_loss == 1.12
    assert (s.epoch, s.epochs) == (1, 1)
    assert s.last_checkpoint is not None
    # recorded at /data/runs/A_cli: the trainer's path, read where the run directory is now
    assert s.last_checkpoint.path == str(run.resolve() / "output" / "tinylora.safetensors")
    assert s.last_checkpoint.step is None
    assert s.last_state is not None and s.last_state.step == 4
    assert s.samples == 2 and s.last_sample is not None and s.last_sample.step == 4
    assert s.warnings == 1 and s.last_warning is not None and s.last_warning.startswith("no regularization images")
    assert s.preset == "smoke"
    # the run directory's own output, wherever the recorded plan.json was written (docs/run-directory.md)
    assert s.lora_file == str(run.resolve() / "output" / "tinylora.safetensors") and s.lora_exists is False
    assert s.started_at == "2026-11-25T09:14:39.512Z" and s.last_event_at == "2026-11-25T09:15:53.910Z"
    assert s.segments == 1
    assert s.resumable is False and s.resume_command is None
    assert s.unreadable_lines == 0
    assert s.done


def test_running_mid_training(tmp_path: Path) -> None:
    cut = _line_index(lambda e: e["type"] == "progress" and e["step"] == 3 and e["avr_loss"] == 1.23) + 1
    run = _run_with(tmp_path, LINES[:cut])
    s = read_status(run, now=_ts("2026-11-25T09:15:40.452Z"))
    assert s.state == "running"
    assert s.phase == "training"
    assert (s.step, s.total_steps) == (3, 4)
    assert s.percent == 75.0
    assert (s.rate, s.rate_unit, s.eta_s) == (3.70, "s/it", 3.0)
    assert s.avr_loss == 1.23
    assert s.seconds_since_last_event == pytest.approx(5.0, abs=0.01)
    assert s.last_checkpoint is not None and s.last_checkpoint.step == 2
    assert s.outcome is None and not s.done
    assert s.resumable is False  # a live run is not resumed under its feet


def test_loss_and_rate_keep_their_last_known_value(tmp_path: Path) -> None:
    # the step-1 line without avr_loss, after none had been seen, and the rate-less step 0
    cut = _line_index(lambda e: e["type"] == "progress" and e["step"] == 1) + 1
    run = _run_with(tmp_path, LINES[:cut])
    s = read_status(run, now=_ts("2026-11-25T09:15:14Z"))
    assert (s.step, s.avr_loss, s.rate) == (1, None, 4.54)


def test_zero_loss_is_kept(tmp_path: Path) -> None:
    lines = LINES[:10] + [
        _event(
            t="2026-11-25T09:15:14.000Z",
            type="progress",
            step=2,
            total=4,
            rate=0.5,
            rate_unit="it/s",
            elapsed_s=4.0,
            eta_s=None,
            avr_loss=0.0,
            lr=0.0,
        )
    ]
    s = read_status(_run_with(tmp_path, lines), now=_ts("2026-11-25T09:15:15Z"))
    assert s.avr_loss == 0.0 and s.lr == 0.0
    assert s.seconds_per_step == 2.0
    assert s.eta_s == 4.0  # not given by the trainer: (4 - 2) steps x 2 s


def test_stalled_when_no_event_and_no_output_for_long(tmp_path: Path) -> None:
    cut = _line_index(lambda e: e["type"] == "state_saved") + 1
    run = _run_with(tmp_path, LINES[:cut])
    _saved_state(run, 2)
    now = _ts("2026-11-25T09:45:00Z")
    s = read_status(run, now=now)
    assert s.state == "stalled"
    assert s.seconds_since_last_event == pytest.approx(now - _ts("2026-11-25T09:15:32.490Z"))
    assert s.resumable is True
    assert s.resume_command == f"kohya-wrap train --resume {run}"
    # a fresh train.log (the trainer prints, but emits no event) means alive
    (run / "train.log").write_text("caching latents...\n")
    os.utime(run / "train.log", (now - 30, now - 30))
    s = read_status(run, now=now)
    assert s.state == "running" and s.seconds_since_output == pytest.approx(30, abs=1)
    assert read_status(run, now=now, stale_after_s=10).state == "stalled"


def test_interrupted_run_is_resumable_and_a_resumed_run_runs_again(tmp_path: Path) -> None:
    cut = _line_index(lambda e: e["type"] == "state_saved") + 1
    stopped = LINES[:cut] + [
        _event(t="2026-11-25T09:15:34.000Z", type="error", message="interrupted by the user", kind="interrupted"),
        _event(t="2026-11-25T09:15:35.000Z", type="finished", outcome="interrupted", exit_code=130, returncode=130),
    ]
    run = _run_with(tmp_path, stopped)
    _saved_state(run, 2)
    s = read_status(run, now=_ts("2026-11-25T09:16:00Z"))
    assert s.state == "interrupted" and s.outcome == "interrupted" and s.exit_code == 130
    assert s.last_error is None  # an interruption is how the run ended, not an error of it
    assert s.resumable and s.last_state is not None and s.last_state.step == 2

    resumed = stopped + [
        _event(t="2026-11-25T10:00:00.000Z", type="phase", phase="loading_model"),
        _event(
            t="2026-11-25T10:00:20.000Z",
            type="progress",
            step=3,
            total=4,
            rate=2.5,
            rate_unit="s/it",
            elapsed_s=2.5,
            eta_s=2.5,
            avr_loss=1.2,
            lr=None,
        ),
    ]
    (run / "events.jsonl").write_text("".join(resumed), encoding="utf-8")
    s = read_status(run, now=_ts("2026-11-25T10:00:21Z"))
    assert s.state == "running" and s.segments == 2
    assert s.outcome is None and s.last_error is None
    assert s.step == 3 and s.rate == 2.5
    assert s.last_state is not None and s.last_state.step == 2  # still the one to resume from


def test_a_stopped_run_that_train_resume_refuses_is_not_resumable(tmp_path: Path) -> None:
    # the one rule train --resume applies (RunView.not_resumable): a state must be on disk, inside the first epoch
    cut = _line_index(lambda e: e["type"] == "state_saved") + 1
    stopped = LINES[:cut] + [
        _event(t="2026-11-25T09:15:35.000Z", type="finished", outcome="interrupted", exit_code=130, returncode=130),
    ]
    run = _run_with(tmp_path, stopped)
    s = read_status(run, now=_ts("2026-11-25T09:16:00Z"))  # the events recorded a state, output/ holds none
    assert s.state == "interrupted" and not s.resumable and s.resume_command is None
    assert s.not_resumable == f"it stopped before its first save: {run}/output holds no saved state"
    _saved_state(run, 50, epoch=2)  # 40 steps an epoch: past the first one, which sd-scripts cannot resume
    s = read_status(run, now=_ts("2026-11-25T09:16:00Z"))
    assert not s.resumable and s.resume_command is None and s.not_resumable is not None


def test_failed_without_state_is_not_resumable(tmp_path: Path) -> None:
    lines = LINES[:6] + [
        _event(t="2026-11-25T09:15:09.000Z", type="error", message="CUDA out of memory", kind="oom"),
        _event(t="2026-11-25T09:15:09.100Z", type="finished", outcome="oom", exit_code=11, returncode=1),
    ]
    s = read_status(_run_with(tmp_path, lines), now=_ts("2026-11-25T09:16:00Z"))
    assert s.state == "failed" and s.outcome == "oom" and s.exit_code == 11
    assert s.last_error == "CUDA out of memory"
    assert s.resumable is False


def test_nan_loss_round_trips_as_json(tmp_path: Path) -> None:
    lines = LINES[:10] + [
        _event(
            t="2026-11-25T09:15:14.000Z",
            type="progress",
            step=2,
            total=4,
            rate=2.5,
            rate_unit="s/it",
            elapsed_s=5.0,
            eta_s=5.0,
            avr_loss="nan",
            lr=None,
        )
    ]
    s = read_status(_run_with(tmp_path, lines), now=_ts("2026-11-25T09:15:15Z"))
    out = json.loads(json.dumps(to_builtins(s), allow_nan=False))
    assert out["avr_loss"] == "nan"


def test_planned_run_without_events_takes_total_from_plan(tmp_path: Path) -> None:
    run = _run_with(tmp_path, [])
    (run / "events.jsonl").unlink()
    s = read_status(run)
    assert s.state == "planned" and s.total_steps == 4 and s.step is None and s.segments == 0


def test_torn_and_garbage_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = LINES[:5] + ["not json\n", '{"no": "type"}\n'] + LINES[5:12] + ['{"t": "2026-11-25T09:15:2']
    s = read_status(_run_with(tmp_path, lines), now=_ts("2026-11-25T09:15:23Z"))
    assert s.unreadable_lines == 2  # the torn last line is not counted: it may still be being written
    assert s.step == 2


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="neither plan.json nor events.jsonl"):
        read_status(tmp_path)
    with pytest.raises(RunDirError, match="no such run directory"):
        read_status(tmp_path / "missing")


def test_event_tail_reads_only_whole_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []
    path.write_text(LINES[0] + LINES[1][:20], encoding="utf-8")
    assert [e.type for e in tail.read_new()] == ["phase"]
    with open(path, "a", encoding="utf-8") as f:
        f.write(LINES[1][20:] + LINES[2])
    assert [e.type for e in tail.read_new()] == ["warning", "summary"]
    assert tail.read_new() == []


def test_follow_ends_on_finished_written_by_another_thread(tmp_path: Path) -> None:
    run = _run_with(tmp_path, LINES[:3])
    updates: list[tuple[str, int | None, list[str]]] = []

    def write_rest() -> None:
        with open(run / "events.jsonl", "a", encoding="utf-8") as f:
            for line in LINES[3:]:
                f.write(line)
                f.flush()
                time.sleep(0.005)

    writer = threading.Thread(target=write_rest)
    writer.start()
    final = follow(run, lambda s, new: updates.append((s.state, s.step, [e.type for e in new])), poll_s=0.02)
    writer.join()
    assert final.state == "finished" and final.step == 4 and final.avr_loss == 1.12
    seen = [t for _, _, types in updates for t in types]
    assert seen == [json.loads(line)["type"] for line in LINES]
    assert updates[-1][0] == "finished"


def test_follow_stops_when_asked(tmp_path: Path) -> None:
    run = _run_with(tmp_path, LINES[:5])
    polls: list[float] = []
    final = follow(run, lambda s, new: None, poll_s=0.5, should_stop=lambda: len(polls) >= 3, sleep=polls.append)
    assert polls == [0.5, 0.5, 0.5]
    assert final.outcome is None


def test_format_duration() -> None:
    assert [format_duration(x) for x in (None, 0, 12.4, 245, 3725)] == ["?", "0s", "12s", "4m05s", "1h02m"]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("torch") is None,
    reason="tensorboard (or torch) is not installed: torch's SummaryWriter (accelerate's) needs it",
)
def test_status_shows_the_latest_validation_loss(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = _run_with(tmp_path, LINES)
    writer = SummaryWriter(str(run / "logs" / "network_train"))  # where sd-scripts' tracker writes
    for step, value in ((2, 0.31), (4, 0.27)):
        writer.add_scalar("loss/validation/step_average", value, step)
    writer.close()
    status = read_status(run)
    assert status.validation_step == 4 and status.validation_loss == pytest.approx(0.27)
    assert to_builtins(status)["validation_loss"] == pytest.approx(0.27)
