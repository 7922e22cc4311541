"""Resolving a preset and a dataset into a trainer config, and rendering its files: what `plan` asks of sd-scripts.

plan hands over the preset's values (and where each came from), the dataset's subset folders, its step
target and the run's paths, in its own terms; resolve_trainer_config fills in what the preset left out,
chooses repeats and epochs, sets the paths, and checks the result against sd-scripts' cross-argument rules.
render_trainer_files writes config.toml, dataset.toml and sample_prompts.txt from it. Code outside this
package reads the values through TrainerSettings, never by argument name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.codec import TomlValue
from kohya_wrap.errors import DatasetError, PresetError
from kohya_wrap.sdscripts.arguments import convert, cross_checks
from kohya_wrap.sdscripts.command import build_env
from kohya_wrap.sdscripts.configs import (
    DatasetSubset,
    SamplePrompt,
    render_config_toml,
    render_dataset_toml,
    render_sample_prompts,
)
from kohya_wrap.sdscripts.resume import resume_limit_warning
from kohya_wrap.sdscripts.steps import StepPlan, StepSubset, StepTarget, plan_steps
from kohya_wrap.sdscripts.values import (
    TrainerPaths,
    TrainerSettings,
    argument_of,
    bucket_key,
    check_image_sizes,
    filled_in,
    precision_for,
    run_values,
    saves_state,
    set_by,
    trainer_settings,
)

__all__ = [
    "DatasetFolder",
    "PromptText",
    "StepTarget",
    "TrainerConfig",
    "TrainerFiles",
    "TrainerPaths",
    "TrainerRequest",
    "TrainerSettings",
    "argument_of",
    "precision_for",
    "render_trainer_files",
    "resolve_trainer_config",
    "set_by",
    "trainer_settings",
]


@dataclass(frozen=True)
class DatasetFolder:
    """A subset folder of the dataset, as plan found it."""

    dir: Path
    images: int
    repeats: int  # its folder name's
    is_reg: bool
    class_tokens: str
    size: tuple[int, int] | None  # its images' (width, height) where they share one


@dataclass(frozen=True)
class PromptText:
    """A sample prompt, its placeholders filled in; size 0: sampled at the training resolution."""

    text: str
    negative: str
    size: int
    seed: int
    steps: int
    scale: float


@dataclass(frozen=True)
class TrainerRequest:
    """What plan knows, in its own terms: the preset's values with their sources, the dataset, the run's paths."""

    chosen: Mapping[str, tuple[TomlValue, str]]  # argument -> (value, source) as the preset and --set give them
    folders: tuple[DatasetFolder, ...]
    target: StepTarget
    keep_repeats: bool  # the folders' repeats stand; only the epochs are chosen
    num_processes: int  # of all machines together
    size: int  # the image size prepare made: the resolution where the preset sets none
    auto_precision: bool  # leave mixed precision for train to choose on the machine it finds
    model: Path | str
    tokenizer_cache_dir: Path | None
    paths: TrainerPaths
    default_output_name: str  # the LoRA's name where the preset sets none
    prompts: tuple[PromptText, ...] = ()


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer's arguments, resolved and checked, and what plan records of them."""

    values: Mapping[str, TomlValue]
    sources: Mapping[str, str]
    settings: TrainerSettings
    steps: StepPlan
    subsets: tuple[DatasetSubset, ...]  # the folders with their final repeats, in the dataset's order
    prompts: tuple[SamplePrompt, ...]
    output_name: str
    lora_file_name: str
    env: Mapping[str, str]  # the environment the trainer runs in
    step_warnings: tuple[str, ...]  # of the step arithmetic and resuming
    check_warnings: tuple[str, ...]  # of sd-scripts' cross-argument rules and the image sizes


@dataclass(frozen=True)
class TrainerFiles:
    config_toml: str
    dataset_toml: str
    sample_prompts: str | None  # None: no prompts, no file


def resolve_trainer_config(request: TrainerRequest) -> TrainerConfig:
    """The values train_network.py runs with; PresetError or DatasetError naming the key or folder at fault."""
    settings: dict[str, tuple[TomlValue, str]] = dict(request.chosen)
    values = {k: v for k, (v, _) in settings.items()}
    for key, (value, source) in filled_in(values, size=request.size, auto_precision=request.auto_precision).items():
        settings[key] = (convert(key, value), source)
    shape = trainer_settings({k: v for k, (v, _) in settings.items()})
    steps = _plan_steps(request, shape)
    step_warnings = list(steps.warnings)
    if saves_state({k: v for k, (v, _) in settings.items()}):
        limit = resume_limit_warning(steps.epochs, steps.count.steps_per_epoch)
        if limit:
            step_warnings.append(limit)
    output_name = shape.output_name or request.default_output_name
    managed = run_values(
        request.paths,
        model=request.model,
        tokenizer_cache_dir=request.tokenizer_cache_dir,
        output_name=None if shape.output_name else output_name,
        with_prompts=bool(request.prompts),
        max_train_steps=None if shape.pinned_steps is not None else steps.max_train_steps,
        chosen=set(request.chosen),
    )
    for key, value in managed.items():
        settings[key] = (convert(key, value), "plan")
    values = {k: v for k, (v, _) in settings.items()}
    sources = {k: s for k, (_, s) in settings.items()}
    check_warnings = _cross_check(values, sources) + _size_warnings(request.folders, shape)
    return TrainerConfig(
        values=values,
        sources=sources,
        settings=shape,
        steps=steps,
        subsets=tuple(
            DatasetSubset(str(f.dir), r, f.class_tokens, f.is_reg)
            for f, r in zip(request.folders, steps.repeats, strict=False)
        ),
        prompts=tuple(_sample_prompt(p, shape) for p in request.prompts),
        output_name=output_name,
        lora_file_name=f"{output_name}{shape.model_suffix}",
        env=build_env(offline=True),
        step_warnings=tuple(step_warnings),
        check_warnings=tuple(check_warnings),
    )


def render_trainer_files(config: TrainerConfig, header: str) -> TrainerFiles:
    """config.toml, dataset.toml and sample_prompts.txt, each opening with `header` as comments.

    ValueError where a prompt cannot be written as a line of sample_prompts.txt."""
    shape = config.settings
    return TrainerFiles(
        config_toml=render_config_toml(config.values, header=header + "\nsd-scripts reads it with --config_file."),
        dataset_toml=render_dataset_toml(
            list(config.subsets),
            resolution=shape.resolution,
            batch_size=shape.batch_size,
            enable_bucket=shape.enable_bucket,
            header=header + "\nsd-scripts reads it with --dataset_config.",
        ),
        sample_prompts=render_sample_prompts(config.prompts, header=header) if config.prompts else None,
    )


def _plan_steps(request: TrainerRequest, shape: TrainerSettings) -> StepPlan:
    """Repeats and epochs landing in the preset's range (or what the user pinned with --set)."""
    subsets = [
        StepSubset(f.images, f.repeats, f.is_reg, bucket_key(f.size, shape.enable_bucket)) for f in request.folders
    ]
    return plan_steps(
        subsets,
        request.target,
        batch_size=shape.batch_size,
        grad_accum=shape.grad_accum,
        num_processes=request.num_processes,
        choose_repeats=not request.keep_repeats,
        fixed_steps=shape.pinned_steps,
        fixed_epochs=shape.pinned_epochs,
    )


def _sample_prompt(prompt: PromptText, shape: TrainerSettings) -> SamplePrompt:
    width, height = (prompt.size, prompt.size) if prompt.size else (shape.width, shape.height)
    return SamplePrompt(prompt.text, prompt.negative, width, height, prompt.seed, prompt.steps, prompt.scale)


def _cross_check(values: Mapping[str, TomlValue], sources: Mapping[str, str]) -> list[str]:
    """The warnings of sd-scripts' cross-argument rules; the first error, naming where its key came from."""
    problems = cross_checks(values)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        source = sources.get(first.keys[0], "default")
        raise PresetError(f"{first.keys[0]} ({source}): {first.message}", first.hint)
    return [p.message for p in problems if p.severity == "warning"]


def _size_warnings(folders: tuple[DatasetFolder, ...], shape: TrainerSettings) -> list[str]:
    try:
        return check_image_sizes([(str(f.dir), f.size) for f in folders], shape)
    except ValueError as e:
        raise DatasetError(str(e), f"prepare the dataset at {shape.width} px, or --set enable_bucket=true") from None
