"""RunView (kohya_wrap.rundir.view): total steps, state, resumable and the resume command, defined once,
and status, the report's summary and the runs table agreeing on them after a resume and an extension."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "process"))

from recorded_run import copy_recorded_run, recorded_lines  # noqa: E402

from kohya_wrap.errors import RunDirError  # noqa: E402
from kohya_wrap.report.runs import list_runs  # noqa: E402
from kohya_wrap.report.summary import load_run  # noqa: E402
from kohya_wrap.rundir import LOCK_FILE  # noqa: E402
from kohya_wrap.rundir.view import RunView  # noqa: E402
from kohya_wrap.status import read_status  # noqa: E402

PLANNED_STEPS = 4  # the recorded run's plan


def _event(t: str, **fields: object) -> str:
    return json.dumps({"t": t, **fields}) + "\n"


def _progress(t: str, step: int, total: int) -> str:
    return _event(
        t,
        type="progress",
        step=step,
        total=total,
        rate=2.5,
        rate_unit="s/it",
        elapsed_s=2.5,
        eta_s=None,
        avr_loss=1.2,
        lr=None,
    )


def _with_events(run: Path, lines: list[str]) -> Path:
    (run / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    return run


def _run_json(run: Path, outcome: str, exit_code: int, extended_to: int | None) -> None:
    doc = {
        "schema": 1,
        "run_dir": str(run),
        "outcome": outcome,
        "exit_code": exit_code,
        "started_at": "2026-11-25T09:14:39+00:00",
        "ended_at": "2026-11-25T11:00:00+00:00",
        "steps": {
            "planned": PLANNED_STEPS,
            "reached": PLANNED_STEPS,
            "trainer_total": None,
            "extended_to": extended_to,
        },
    }
    (run / "run.json").write_text(json.dumps(doc), encoding="utf-8")


def _totals(run: Path) -> tuple[int | None, int | None, int | None, int | None]:
    """Total steps as the view, status, the report's summary and the runs table say it."""
    (row,) = list_runs(run)
    return RunView.load(run).total_steps, read_status(run).total_steps, load_run(run).total_steps, row.steps_total


def _interrupted_at_state(lines: list[str]) -> list[str]:
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "state_saved") + 1
    return lines[:cut] + [
        _event("2026-11-25T09:15:35.000Z", type="finished", outcome="interrupted", exit_code=130, returncode=130)
    ]


def test_a_resumed_run_has_one_total(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", with_files=True)
    stopped = _interrupted_at_state(recorded_lines_here(run))
    _with_events(run, stopped)
    _run_json(run, "interrupted", 130, None)
    view = RunView.load(run)
    assert (view.state, view.resumable, view.resume_command) == (
        "interrupted",
        True,
        f"kohya-wrap train --resume {run}",
    )
    assert _totals(run) == (PLANNED_STEPS,) * 4
    # resumed: the new segment has not printed its count yet, then its bar counts to the same end
    _with_events(run, stopped + [_event("2026-11-25T10:00:00.000Z", type="phase", phase="loading_model")])
    assert _totals(run) == (PLANNED_STEPS,) * 4
    _with_events(run, stopped + [_progress("2026-11-25T10:00:20.000Z", 3, PLANNED_STEPS)])
    assert _totals(run) == (PLANNED_STEPS,) * 4
    assert RunView.load(run).step == 3


def test_an_extended_run_has_one_total(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run", with_files=True)
    finished = recorded_lines_here(run)
    # `train --extend 4` that crashed while loading the model: the trainer never counted its steps, but
    # run.json records where the extension was to end (train's result says 8 too)
    crashed = finished + [
        _event("2026-11-25T11:00:00.000Z", type="phase", phase="loading_model"),
        _event("2026-11-25T11:00:05.000Z", type="finished", outcome="crashed", exit_code=16, returncode=1),
    ]
    _with_events(run, crashed)
    _run_json(run, "crashed", 16, 8)
    assert _totals(run) == (8, 8, 8, 8)
    # the trainer's own count wins once it said it
    _with_events(run, finished + [_progress("2026-11-25T11:00:20.000Z", 6, 8)])
    _run_json(run, "finished", 0, 8)
    assert _totals(run) == (8, 8, 8, 8)


def test_status_of_a_folder_with_events_but_no_plan_says_what_is_missing(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run")
    (run / "plan.json").unlink()
    with pytest.raises(RunDirError, match="is not a run directory: it holds events.jsonl but no plan.json"):
        read_status(run)


@pytest.mark.parametrize("left", ["train.log", "state"])
def test_a_run_whose_events_were_lost_is_stopped_and_resumable_not_planned(tmp_path: Path, left: str) -> None:
    run = copy_recorded_run(tmp_path / "run", events=17, with_files=True)  # saved its state at step 2
    (run / "events.jsonl").unlink()
    if left == "train.log":
        (run / "train.log").write_text("steps:  50%|█████     | 2/4\n", encoding="utf-8")
    (run / LOCK_FILE).write_text("", encoding="utf-8")  # train's lock file, free: nobody trains it
    s = read_status(run)
    assert s.state == "stalled" and s.segments == 0
    assert s.resumable and s.resume_command == f"kohya-wrap train --resume {run}"
    assert s.last_state is not None and s.last_state.step == 2
    assert load_run(run).outcome == "unfinished"


def test_a_planned_run_is_planned_everywhere(tmp_path: Path) -> None:
    run = copy_recorded_run(tmp_path / "run")
    (run / "events.jsonl").unlink()
    view = RunView.load(run)
    assert (view.state, view.resumable, view.resume_command, view.total_steps) == ("planned", False, None, 4)
    assert read_status(run).state == "planned" and load_run(run).outcome == "planned"


def recorded_lines_here(run: Path) -> list[str]:
    return [line.replace("/data/runs/A_cli", str(run)) for line in recorded_lines()]
