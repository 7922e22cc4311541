"""Which images are scored: the samples of each checkpoint, and the reference photos of the person.

Samples come from a run (sd-scripts' `output/sample/` folder, named by
kohya_wrap.sdscripts.samples) or from any folder: files named the sd-scripts way, or one
subfolder per checkpoint whose name carries the step (`step-000500`, `500`, `ohwx-step00000500`).
References are the run's training images (plan.json's non-regularization subsets) or any folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.score.records import LeftOut
from kohya_wrap.sdscripts.layout import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from kohya_wrap.rundir import Plan


class ScoreError(KohyaWrapError):
    """`score` or `export` cannot work with what it was given."""


@dataclass(frozen=True)
class SampleSet:
    """The samples to score, by checkpoint, where they come from, and the files left out."""

    groups: list[SampleGroup]
    where: str
    left_out: list[LeftOut]


@dataclass(frozen=True)
class SampleGroup:
    """The samples of one checkpoint."""

    step: int
    images: tuple[Path, ...]
    checkpoint: Path | None = None  # the LoRA file saved at this step, when scoring a run


_STEP_IN_FOLDER = re.compile(r"(\d+)(?!.*\d)")  # the last number in the name


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def images_in(folder: Path, *, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found if is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def folder_step(name: str) -> int | None:
    """The step a checkpoint folder's name carries: its last number (`step-000500`, `500`, `e-step00000500`)."""
    m = _STEP_IN_FOLDER.search(name)
    return int(m.group(1)) if m else None


def group_samples_dir(folder: Path) -> list[SampleGroup]:
    """Samples of any folder, by sd-scripts file name, or by one subfolder per checkpoint."""
    return collect_samples_dir(folder).groups


_NO_STEP = (
    "its name does not say a step (<name>_<step, 6 digits>_<prompt, 2 digits>_<date>.png) and it is in no step folder"
)


def _step_folders(folder: Path, by_step: dict[int, list[Path]]) -> list[str]:
    """Add the images of each subfolder named by a step to by_step; the names of those named by none."""
    unnamed: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = images_in(sub, recursive=True)
        if not images:
            continue
        step = folder_step(sub.name)
        if step is None:
            unnamed.append(sub.name)
            continue
        by_step.setdefault(step, []).extend(images)
    return unnamed


def collect_samples_dir(folder: Path) -> SampleSet:
    """Samples of any folder, by sd-scripts file name, or by one subfolder per checkpoint; the files left out.

    Samples of more than one run (sd-scripts names with different output names) are refused: their
    steps would be merged into one curve.
    """
    from kohya_wrap.sdscripts.samples import parse_sample_name

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ScoreError(f"--samples {folder}: no such folder", "give the folder that holds the sample images")
    by_step: dict[int, list[Path]] = {}
    loose: list[Path] = []
    runs: dict[str | None, int] = {}
    for path in images_in(folder, recursive=False):
        parsed = parse_sample_name(path.name)
        if parsed is not None and parsed.step is not None:
            by_step.setdefault(parsed.step, []).append(path)
            runs[parsed.output_name] = runs.get(parsed.output_name, 0) + 1
        else:
            loose.append(path)
    if len(runs) > 1:
        names = ", ".join(f"{name or '(no name)'} ({count} files)" for name, count in sorted(runs.items(), key=str))
        raise ScoreError(
            f"--samples {folder}: samples of {len(runs)} runs in one folder (output names {names}); "
            "their steps would be merged",
            "give one run's samples per folder (score each with its own --samples)",
        )
    unnamed = _step_folders(folder, by_step)
    if not by_step:
        what = f"{len(loose)} images whose names do not say a step" if loose else "no images"
        extra = f"; subfolders without a step number in their name: {', '.join(unnamed[:5])}" if unnamed else ""
        raise ScoreError(
            f"--samples {folder}: {what}{extra}",
            "name the files the sd-scripts way (<name>_<step, 6 digits>_<prompt, 2 digits>_<date>.png) "
            "or put each checkpoint's samples in a subfolder named by its step (step-000500/)",
        )
    left_out = [LeftOut(file=str(p), kind="sample", why=_NO_STEP) for p in loose]
    left_out += [
        LeftOut(file=str(folder / name), kind="sample", why="a subfolder whose name has no step number")
        for name in unnamed
    ]
    groups = [SampleGroup(step, tuple(sorted(paths))) for step, paths in sorted(by_step.items())]
    return SampleSet(groups, str(folder), left_out)


def load_run_plan(run_dir: Path) -> Plan:
    """The run's plan.json (the one place score reads it; RunDirError when it is not a planned run)."""
    from kohya_wrap.rundir import read_plan

    return read_plan(run_dir)


def group_run_samples(run_dir: Path) -> tuple[list[SampleGroup], str]:
    """The training samples of a run, by step, each with the LoRA file saved at that step (if any)."""
    found = collect_run_samples(run_dir)
    return found.groups, found.where


def collect_run_samples(run_dir: Path) -> SampleSet:
    """The training samples of a run by step (with the LoRA file saved there), and the images of the sample
    folder left out: another run's (output name), or not named by sd-scripts."""
    from kohya_wrap.safetensors_header import incomplete
    from kohya_wrap.sdscripts.samples import checkpoint_steps, find_samples, parse_sample_name, sample_dir, sample_step

    plan = load_run_plan(run_dir)
    spe = plan.steps.steps_per_epoch
    found = find_samples(plan.output_dir, plan.output_name)
    folder = sample_dir(plan.output_dir)
    if not found:
        raise ScoreError(
            f"{folder}: no samples to score",
            "train the run first (its preset draws samples at each checkpoint: sample_every_n_steps), "
            "or draw some with `kohya-wrap sample RUN_DIR` and score them with --samples",
        )
    by_step: dict[int, list[Path]] = {}
    left_out: list[LeftOut] = []
    for path, name in found:
        step = sample_step(name, spe if isinstance(spe, int) else None, plan.max_train_steps)
        if step is not None:
            by_step.setdefault(step, []).append(path)
        else:
            left_out.append(LeftOut(file=str(path), kind="sample", why="its epoch does not map to a step of this run"))
    used = {path for path, _ in found}
    for path in images_in(folder, recursive=False):
        if path in used:
            continue
        parsed = parse_sample_name(path.name)
        why = (
            f"another run's sample (output name {parsed.output_name}, this run's is {plan.output_name})"
            if parsed is not None
            else "not named by sd-scripts: its name does not say a step"
        )
        left_out.append(LeftOut(file=str(path), kind="sample", why=why))
    # a LoRA file cut short (a trainer killed mid-save) is never recommended: its step counts as having no file
    files = {
        step: path
        for step, path in checkpoint_steps(plan.output_dir, plan.output_name, plan.max_train_steps).items()
        if incomplete(path) is None
    }
    groups = [SampleGroup(step, tuple(sorted(paths)), files.get(step)) for step, paths in sorted(by_step.items())]
    return SampleSet(groups, str(folder), left_out)


def run_references(run_dir: Path) -> tuple[list[Path], str]:
    """The training images of a run (regularization images are other people: left out)."""
    plan = load_run_plan(run_dir)
    dirs = [Path(s.dir) for s in plan.subsets if not s.is_reg]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise ScoreError(
            f"the run's training images are gone: {missing[0]} does not exist",
            "give the photos of the person with --reference DIR",
        )
    photos = [p for d in dirs for p in images_in(d, recursive=False)]
    return photos, ", ".join(str(d) for d in dirs)


def folder_references(folder: Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ScoreError(f"--reference {folder}: no such folder", "give the folder of photos of the person")
    return images_in(folder, recursive=True)
