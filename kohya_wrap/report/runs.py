"""`runs`: the past runs in a folder, one row each (when, preset, steps, outcome, final loss, output)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kohya_wrap.codec import Record
from kohya_wrap.errors import KohyaWrapError, RunDirError
from kohya_wrap.events import Outcome
from kohya_wrap.report.summary import RunSummary, is_run_dir, load_run


class RunRow(Record, frozen=True):
    """One run of the table (and of `runs --json`): a projection of the run's view."""

    run_dir: Path
    when: str | None  # when it was planned (plan.json created_at)
    preset: str | None
    steps_done: int | None
    steps_total: int | None
    outcome: Outcome | Literal["planned", "unfinished", "unreadable"]
    final_loss: float | None
    output: Path | None  # the final LoRA, when it exists; for a run stopped early, the checkpoint `export` takes
    problem: str | None = None  # why the row is incomplete (an unreadable plan.json)


def list_runs(runs_dir: Path) -> list[RunRow]:
    """Every run directly inside runs_dir (or runs_dir itself, when it is one), oldest first."""
    runs_dir = Path(runs_dir).expanduser()
    if not runs_dir.is_dir():
        raise RunDirError(
            f"{runs_dir} {'is not a folder' if runs_dir.exists() else 'does not exist'}.",
            "Give the folder that holds your run folders (`train` and `run` without -o make them in ./runs).",
        )
    candidates = (
        [runs_dir] if is_run_dir(runs_dir) else sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_run_dir(p))
    )
    rows = [_row(run_dir) for run_dir in candidates]
    rows.sort(key=lambda r: (r.when is None, r.when or "", r.run_dir.name))
    return rows


def _row(run_dir: Path) -> RunRow:
    try:
        s = load_run(run_dir)
    except KohyaWrapError as e:
        return RunRow(
            run_dir=run_dir,
            when=None,
            preset=None,
            steps_done=None,
            steps_total=None,
            outcome="unreadable",
            final_loss=None,
            output=None,
            problem=e.message,
        )
    return RunRow(
        run_dir=run_dir,
        when=s.created_at,
        preset=s.preset,
        steps_done=s.last_step,
        steps_total=s.total_steps,
        outcome=s.outcome,
        final_loss=s.final_loss,
        output=_output(s),
    )


def _output(s: RunSummary) -> Path | None:
    """The LoRA the run made: a run stopped early has no final file, its output is the checkpoint to export."""
    from kohya_wrap.score.export import checkpoint_to_export

    if s.lora_file is not None or s.outcome != "stopped_early":
        return s.lora_file
    return checkpoint_to_export(s.plan, s.score)
