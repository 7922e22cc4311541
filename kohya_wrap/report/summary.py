"""A run directory read back: plan.json, run.json and events.jsonl folded into one typed summary.

report (the HTML page) and runs (the table) both start here. Only the files of the run
directory contract are read; a run that never started, or stopped anywhere, still summarises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kohya_wrap.errors import RunDirError
from kohya_wrap.events import Error, Finished, Progress, Summary, Warning_, read_events

PLAN_FILE = "plan.json"
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float
    lr: float | None


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    plan: dict[str, Any]
    run: dict[str, Any] | None  # run.json; None before train wrote it
    created_at: str | None
    preset: str | None
    train_images: int | None  # distinct training images over all subsets
    train_images_x_repeats: int | None
    reg_images: int | None
    planned_steps: int | None
    last_step: int | None
    total_steps: int | None
    elapsed_s: float | None  # training time on the trainer's progress bar
    wall_s: float | None  # the whole run, model loading and saving included (run.json)
    mean_it_per_s: float | None
    final_loss: float | None
    outcome: str  # a Finished outcome, or "planned" / "unfinished" when there is none
    exit_code: int | None
    lora_file: Path | None  # the final LoRA, when it exists
    output_dir: Path | None
    output_name: str | None
    loss: tuple[LossPoint, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} cannot be read as JSON: {e}", "Restore it, or plan the run again.") from e
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds a JSON {type(data).__name__}, not an object.", "Restore it, or plan the run again.")
    return data


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / PLAN_FILE).is_file()


def load_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder.", "Give the run folder that `kohya-wrap plan` created.")
    plan = _read_json(run_dir / PLAN_FILE)
    if plan is None:
        raise RunDirError(
            f"{run_dir} is not a kohya-wrap run: it has no {PLAN_FILE}.",
            "Give the run folder that `kohya-wrap plan` created (it holds plan.json).",
        )
    run = _read_json(run_dir / RUN_FILE)

    loss: list[LossPoint] = []
    warnings: list[str] = []
    errors: list[str] = []
    first_progress: Progress | None = None
    last_progress: Progress | None = None
    summary: Summary | None = None
    finished: Finished | None = None
    events_path = run_dir / EVENTS_FILE
    if events_path.is_file():
        for event in read_events(events_path):
            if isinstance(event, Progress):
                first_progress = first_progress or event
                last_progress = event
                if event.avr_loss is not None:
                    loss.append(LossPoint(event.step, event.avr_loss, event.lr))
            elif isinstance(event, Warning_):
                warnings.append(event.message)
            elif isinstance(event, Error):
                errors.append(event.message)
            elif isinstance(event, Summary):
                summary = event
            elif isinstance(event, Finished):
                finished = event

    subsets = (plan.get("dataset") or {}).get("subsets") or []
    train_subsets = [s for s in subsets if not s.get("is_reg")]
    reg_subsets = [s for s in subsets if s.get("is_reg")]
    steps = plan.get("steps") or {}
    output = plan.get("output") or {}
    lora_file = _path(output.get("lora_file"))

    if finished is not None:
        outcome, exit_code = finished.outcome, finished.exit_code
    elif run is not None and isinstance(run.get("outcome"), str):
        outcome, exit_code = run["outcome"], _int(run.get("exit_code"))
    else:
        outcome, exit_code = ("unfinished" if events_path.is_file() else "planned"), None

    elapsed = last_progress.elapsed_s if last_progress is not None else None
    mean_rate = None
    if first_progress is not None and last_progress is not None and last_progress.elapsed_s > 0:
        # steps of this attempt over its bar's clock (a resumed bar starts past 0)
        steps_done = last_progress.step - first_progress.step
        mean_rate = steps_done / last_progress.elapsed_s if steps_done > 0 else None
    wall_s = None
    if run is not None:
        started, ended = parse_time(run.get("started_at")), parse_time(run.get("ended_at"))
        if started is not None and ended is not None:
            wall_s = (ended - started).total_seconds()
    final_loss = next((p.loss for p in reversed(loss) if math.isfinite(p.loss)), loss[-1].loss if loss else None)

    return RunSummary(
        run_dir=run_dir,
        plan=plan,
        run=run,
        created_at=plan.get("created_at"),
        preset=(plan.get("preset") or {}).get("name"),
        train_images=sum(_int(s.get("images")) or 0 for s in train_subsets) if train_subsets else None,
        train_images_x_repeats=_int(steps.get("train_images_x_repeats"))
        if _int(steps.get("train_images_x_repeats")) is not None
        else (summary.train_images if summary is not None else None),
        reg_images=sum(_int(s.get("images")) or 0 for s in reg_subsets),
        planned_steps=_int(steps.get("max_train_steps")),
        last_step=last_progress.step if last_progress is not None else None,
        total_steps=last_progress.total if last_progress is not None else _int(steps.get("max_train_steps")),
        elapsed_s=elapsed,
        wall_s=wall_s,
        mean_it_per_s=mean_rate,
        final_loss=final_loss,
        outcome=outcome,
        exit_code=exit_code,
        lora_file=lora_file if lora_file is not None and lora_file.is_file() else None,
        output_dir=_path(output.get("dir")),
        output_name=output.get("name") if isinstance(output.get("name"), str) else None,
        loss=tuple(loss),
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values; non-finite values are left out of the means."""
    out: list[float] = []
    acc: list[float] = []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        finite = [a for a in acc if math.isfinite(a)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
