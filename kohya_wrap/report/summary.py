"""A run directory read back for the report and the runs table: the plan, run.json and the events
folded by kohya_wrap.rundir.RunFold, into one typed summary. A run that never started, or stopped
anywhere, still summarises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from kohya_wrap import codec, rundir
from kohya_wrap.errors import RunDirError
from kohya_wrap.events import Outcome, read_events
from kohya_wrap.rundir import LossPoint, Plan, RunFold, RunManifest
from kohya_wrap.safetensors_header import incomplete


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    plan: Plan
    run: dict[str, Any] | None  # run.json as written, for the report's table; None before train wrote it
    manifest: RunManifest | None
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
    outcome: Outcome | Literal["planned", "unfinished"]  # "planned" / "unfinished" when no attempt ended
    exit_code: int | None
    lora_file: Path | None  # the final LoRA, when it exists
    output_dir: Path | None
    output_name: str | None
    loss: tuple[LossPoint, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]


def is_run_dir(path: Path) -> bool:
    return rundir.is_planned(path)


def load_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder.", "Give the run folder that `kohya-wrap plan` created.")
    plan = rundir.read_plan(run_dir)
    files = rundir.paths(run_dir)
    manifest = rundir.read_manifest(files.run_json)
    run = codec.to_builtins(manifest) if manifest is not None else None
    fold = RunFold()
    if files.events.is_file():
        fold.feed_all(read_events(files.events))

    train_subsets = [s for s in plan.subsets if not s.is_reg]
    reg_subsets = [s for s in plan.subsets if s.is_reg]
    exit_code: int | None
    outcome: Outcome | Literal["planned", "unfinished"]
    if fold.finished is not None:
        outcome, exit_code = fold.finished.outcome, fold.finished.exit_code
    elif manifest is not None and manifest.outcome:
        outcome, exit_code = manifest.outcome, manifest.exit_code
    else:
        outcome, exit_code = ("unfinished" if files.events.is_file() else "planned"), None

    wall_s = None
    if manifest is not None:
        started, ended = parse_time(manifest.started_at), parse_time(manifest.ended_at)
        if started is not None and ended is not None:
            wall_s = (ended - started).total_seconds()
    images_x_repeats = plan.steps.train_images_x_repeats
    last = fold.last_progress
    return RunSummary(
        run_dir=run_dir,
        plan=plan,
        run=run,
        manifest=manifest,
        created_at=plan.created_at,
        preset=plan.preset_name,
        train_images=sum(s.images for s in train_subsets) if train_subsets else None,
        train_images_x_repeats=images_x_repeats
        if isinstance(images_x_repeats, int)
        else (fold.summary.train_images if fold.summary is not None else None),
        reg_images=sum(s.images for s in reg_subsets),
        planned_steps=plan.max_train_steps,
        last_step=last.step if last is not None else None,
        total_steps=last.total if last is not None else plan.max_train_steps,
        elapsed_s=last.elapsed_s if last is not None else None,
        wall_s=wall_s,
        mean_it_per_s=fold.mean_it_per_s,
        final_loss=fold.final_loss,
        outcome=outcome,
        exit_code=exit_code,
        # listed only when complete: a file cut short by a kill mid-save is no output
        lora_file=plan.lora_file if plan.lora_file.is_file() and incomplete(plan.lora_file) is None else None,
        output_dir=plan.output_dir,
        output_name=plan.output_name,
        loss=tuple(fold.loss),
        warnings=tuple(fold.warnings),
        errors=tuple(fold.all_errors),
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


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return codec.parse_time(text)
    except ValueError:
        return None
