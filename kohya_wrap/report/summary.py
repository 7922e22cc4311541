"""A run directory read back for the report and the runs table: its RunView (kohya_wrap.rundir.view:
the plan, run.json, the events, the lock and the score, loaded once) projected into what the page and
the table show. A run that never started, or stopped anywhere, still summarises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TypedDict

from kohya_wrap import codec, rundir
from kohya_wrap.events import Outcome
from kohya_wrap.rundir import LossPoint, Plan, RunManifest
from kohya_wrap.rundir.view import PLANNED, RunView
from kohya_wrap.score.records import ScoreReport, load_score


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    plan: Plan
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
    score: ScoreReport | None = None  # score.json, when the run was scored


def is_run_dir(path: Path) -> bool:
    return rundir.is_planned(path)


def load_run(run_dir: Path) -> RunSummary:
    return summarise(RunView.load(run_dir))


def summarise(view: RunView) -> RunSummary:
    """The report's summary of a run: a projection of its view."""
    plan, fold, manifest = view.plan, view.fold, view.manifest
    last = fold.last_progress
    return RunSummary(
        run_dir=view.run_dir,
        plan=plan,
        manifest=manifest,
        created_at=plan.created_at,
        preset=plan.preset_name,
        **_images(view),
        planned_steps=plan.max_train_steps,
        last_step=view.step,
        total_steps=view.total_steps,
        elapsed_s=last.elapsed_s if last is not None else None,
        wall_s=_wall_s(manifest),
        mean_it_per_s=fold.mean_it_per_s,
        final_loss=fold.final_loss,
        outcome=view.outcome or ("planned" if view.state == PLANNED else "unfinished"),
        exit_code=view.exit_code,
        lora_file=view.lora_file,
        output_dir=plan.output_dir,
        output_name=plan.output_name,
        loss=tuple(fold.loss),
        warnings=tuple(fold.warnings),
        errors=tuple(fold.all_errors),
        score=load_score(view.run_dir),
    )


class _Images(TypedDict):
    train_images: int | None
    train_images_x_repeats: int | None
    reg_images: int | None


def _images(view: RunView) -> _Images:
    """The training images, with repeats as the plan counted them (else as the trainer did), and the reg images."""
    subsets = view.plan.subsets
    train = [s for s in subsets if not s.is_reg]
    with_repeats = view.plan.steps.train_images_x_repeats
    if with_repeats is None:
        summary = view.fold.summary
        with_repeats = summary.train_images if summary is not None else None
    return {
        "train_images": sum(s.images for s in train) if train else None,
        "train_images_x_repeats": with_repeats,
        "reg_images": sum(s.images for s in subsets if s.is_reg),
    }


def _wall_s(manifest: RunManifest | None) -> float | None:
    if manifest is None:
        return None
    started, ended = parse_time(manifest.started_at), parse_time(manifest.ended_at)
    return (ended - started).total_seconds() if started is not None and ended is not None else None


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
