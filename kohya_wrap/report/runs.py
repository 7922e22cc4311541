"""`runs`: the past runs in a folder, one row each (when, preset, steps, outcome, final loss, output)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kohya_wrap.errors import KohyaWrapError, RunDirError
from kohya_wrap.events import Outcome
from kohya_wrap.report.summary import is_run_dir, load_run


@dataclass(frozen=True)
class RunRow:
    run_dir: Path
    when: str | None  # when it was planned (plan.json created_at)
    preset: str | None
    steps_done: int | None
    steps_total: int | None
    outcome: Outcome | Literal["planned", "unfinished", "unreadable"]
    final_loss: float | None
    output: Path | None  # the final LoRA, when it exists
    problem: str | None = None  # why the row is incomplete (an unreadable plan.json)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "when": self.when,
            "preset": self.preset,
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "outcome": self.outcome,
            "final_loss": self.final_loss,
            "output": str(self.output) if self.output else None,
            "problem": self.problem,
        }


def list_runs(runs_dir: Path) -> list[RunRow]:
    """Every run directly inside runs_dir (or runs_dir itself, when it is one), oldest first."""
    runs_dir = Path(runs_dir).expanduser()
    if not runs_dir.is_dir():
        raise RunDirError(f"{runs_dir} is not a folder.", "Give the folder that holds your run folders.")
    candidates = (
        [runs_dir] if is_run_dir(runs_dir) else sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_run_dir(p))
    )
    rows = []
    for run_dir in candidates:
        try:
            s = load_run(run_dir)
        except KohyaWrapError as e:
            rows.append(RunRow(run_dir, None, None, None, None, "unreadable", None, None, problem=e.message))
            continue
        rows.append(
            RunRow(run_dir, s.created_at, s.preset, s.last_step, s.total_steps, s.outcome, s.final_loss, s.lora_file)
        )
    rows.sort(key=lambda r: (r.when is None, r.when or "", r.run_dir.name))
    return rows
