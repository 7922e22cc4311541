"""plan: a preset and a prepared dataset become a run directory: sd-scripts' configs, validated, plus plan.json.

make_plan() decides what to train (values and where each came from, repeats and epochs, the files)
and returns a frozen Plan; kohya_wrap.rundir writes and reads it (docs/run-directory.md). plan
decides nothing about the machine and never touches the network: a hub model or kohya-wrap's own
tokenizer cache is fetched by train's pre-flight, on the machine that trains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kohya_wrap import __version__
from kohya_wrap.codec import utc_now_text
from kohya_wrap.dataset import Dataset, scan_dataset
from kohya_wrap.errors import DatasetError, KohyaWrapError, PresetError, TrainerNotFound
from kohya_wrap.models import BaseModel, check_base_model, check_tokenizer_dir
from kohya_wrap.preset import MAX_STEPS, Preset, Setting, load_preset
from kohya_wrap.rundir import (
    CONFIG_TOML,
    DATASET_TOML,
    SAMPLE_PROMPTS,
    BaseModelRef,
    LaunchRequest,
    Machines,
    Plan,
    PlannedAgainst,
    PlanSteps,
    PlanSubset,
    check_new_run_dir,
    paths,
)
from kohya_wrap.sdscripts import (
    DEFAULT_REPEATS,
    PINNED_TAG,
    DatasetSubset,
    SamplePrompt,
    Shape,
    StepPlan,
    StepSubset,
    StepTarget,
    bucket_key,
    build_env,
    check_image_sizes,
    convert,
    cross_checks,
    filled_in,
    locate,
    plan_steps,
    read_shape,
    render_config_toml,
    render_dataset_toml,
    render_sample_prompts,
    resume_limit_warning,
    run_values,
    saves_state,
)

_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


def _output_name(dataset: Dataset) -> str:
    word = dataset.token or dataset.train_subsets[0].class_tokens.split(" ")[0]
    name = _NAME_RE.sub("_", word).strip("_") or "lora"
    return name


def _subject_words(dataset: Dataset) -> dict[str, str]:
    subject = dataset.train_subsets[0].class_tokens
    first, _, rest = subject.partition(" ")
    return {"subject": subject, "token": dataset.token or first, "class": dataset.class_word or rest or first}


def _sample_prompts(preset: Preset, dataset: Dataset, shape: Shape) -> list[SamplePrompt]:
    ours = {k: s.value for k, s in preset.ours.items()}
    width, height = (ours["sample_size"], ours["sample_size"]) if ours["sample_size"] else (shape.width, shape.height)
    words = _subject_words(dataset)
    out = []
    for i, template in enumerate(ours["prompts"]):
        try:
            text = template.format(**words)
        except (KeyError, IndexError, ValueError) as e:
            raise PresetError(
                f"[kohya_wrap] prompts: {template!r} has an unknown placeholder {e}",
                "use {subject}, {token} or {class}",
            ) from None
        out.append(
            SamplePrompt(
                text,
                ours["negative_prompt"],
                width,
                height,
                ours["sample_seed"] + i,
                ours["sample_steps"],
                ours["sample_scale"],
            )
        )
    return out


def make_plan(
    dataset_dir: str | Path,
    *,
    preset: str | Path,
    base_model: str,
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    gpus: int | None = None,
    tokenizer_cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
    sd_scripts: str | Path | None = None,
    machines: Machines = Machines(),
) -> Plan:
    """What to train, decided and validated; nothing is written and nothing is fetched.

    gpus: processes (GPUs) on each machine; the step arithmetic counts the processes of all machines.
    Whether this machine has them is train's question, asked where the run trains.
    """
    run = Path(run_dir).expanduser().resolve()
    check_new_run_dir(run)
    chosen = load_preset(preset, overrides)
    dataset = scan_dataset(dataset_dir)
    model: BaseModel = check_base_model(base_model, allow_pickle=allow_pickle)
    tokenizer = check_tokenizer_dir(tokenizer_cache_dir) if tokenizer_cache_dir is not None else None
    warnings: list[str] = list(model.warnings)
    launch = LaunchRequest(gpus if gpus is not None else 1, machines)
    if launch.gpus < 1:
        raise KohyaWrapError(f"--gpus {launch.gpus}: must be at least 1")
    machines.check()

    settings: dict[str, Setting] = dict(chosen.values)
    ours = {k: s.value for k, s in chosen.ours.items()}

    def decide(key: str, value: Any, source: str = "plan") -> None:
        settings[key] = Setting(convert(key, value), source)

    for key, (value, source) in filled_in(
        settings, size=ours["size"], auto_precision=bool(ours["auto_mixed_precision"])
    ).items():
        decide(key, value, source)
    shape = read_shape({k: s.value for k, s in settings.items()})

    sp = _plan_steps(dataset, shape, ours, launch.num_processes)
    warnings.extend(_replaced_repeats(dataset, sp.repeats))
    warnings.extend(sp.warnings)
    if saves_state({k: s.value for k, s in settings.items()}):
        limit = resume_limit_warning(sp.epochs, sp.count.steps_per_epoch)
        if limit:
            warnings.append(limit)

    prompts = _sample_prompts(chosen, dataset, shape)
    if not prompts and shape.wants_samples:
        warnings.append("the preset asks for samples but has no [kohya_wrap] prompts; no samples will be made")
    files_at = paths(run)
    output_name = shape.output_name or _output_name(dataset)
    managed = run_values(
        model=model.path if model.path is not None else model.source,
        tokenizer_cache_dir=tokenizer,
        output_dir=files_at.output_dir,
        output_name=None if shape.output_name else output_name,
        dataset_config=files_at.dataset_toml,
        sample_prompts=files_at.sample_prompts if prompts else None,
        max_train_steps=None if shape.pinned_steps is not None else sp.max_train_steps,
        logging_dir=files_at.tensorboard_dir,
        chosen=set(chosen.values),
    )
    for key, value in managed.items():
        decide(key, value)

    values = {k: s.value for k, s in settings.items()}
    warnings.extend(_cross_check(values, settings))
    warnings.extend(_resolution_warnings(dataset, shape))

    subsets = tuple(
        PlanSubset(str(s.dir), s.images, r, s.class_tokens, s.is_reg)
        for s, r in zip(dataset.subsets, sp.repeats, strict=False)
    )
    files = _render_files(chosen.name, values, subsets, shape, prompts)
    return Plan(
        run_dir=run,
        created_at=utc_now_text(),
        preset_name=chosen.name,
        preset_sha256=chosen.sha256,
        preset_files=tuple(str(f) for f in chosen.files),
        dataset_dir=str(dataset.dir),
        manifest_sha256=dataset.manifest_sha256,
        subsets=subsets,
        base_model=BaseModelRef(
            source=model.source, path=None if model.path is None else str(model.path), kind=model.kind
        ),
        tokenizer_cache_dir=None if tokenizer is None else str(tokenizer),
        values=MappingProxyType(values),
        sources=MappingProxyType({k: s.source for k, s in settings.items()}),
        ours=MappingProxyType(ours),
        steps=_step_record(sp),
        launch=launch,
        env=MappingProxyType(build_env(offline=True)),
        output_dir=files_at.output_dir,
        output_name=output_name,
        lora_file=files_at.output_dir / f"{output_name}{shape.model_suffix}",
        sd_scripts=_planned_against(sd_scripts),
        warnings=tuple(warnings),
        files=MappingProxyType(files),
    )


def _plan_steps(dataset: Dataset, shape: Shape, ours: dict[str, Any], num_processes: int) -> StepPlan:
    """Repeats and epochs landing in the preset's range (or what the user pinned with --set)."""
    keep = dataset.repeats_explicit or ours["keep_repeats"]
    for s in dataset.subsets if keep else ():
        # sd-scripts adds each image to its bucket once per repeat before training starts (library/train_util.py,
        # BaseDataset.make_buckets): an absurd count hangs the trainer and fills the memory; more repeats than
        # the most steps a preset may ask for cannot be of use
        if s.repeats > MAX_STEPS:
            raise DatasetError(
                f"{s.dir}: {s.repeats} repeats is out of range: at most {MAX_STEPS:,} are kept",
                "prepare the photos again with a smaller --repeats (or without it: plan then chooses them)",
            )
    step_subsets = [
        StepSubset(s.images, s.repeats, s.is_reg, bucket_key(s.size, shape.enable_bucket)) for s in dataset.subsets
    ]
    target = StepTarget(
        ours["target_steps"],
        ours["min_steps"],
        ours["max_steps"],
        ours["preferred_epochs"],
        ours["max_repeats"],
        ours["single_epoch"],
    )
    return plan_steps(
        step_subsets,
        target,
        batch_size=shape.batch_size,
        grad_accum=shape.grad_accum,
        num_processes=num_processes,
        choose_repeats=not keep,
        fixed_steps=shape.pinned_steps,
        fixed_epochs=shape.pinned_epochs,
    )


def _replaced_repeats(dataset: Dataset, repeats: Sequence[int]) -> list[str]:
    """A folder named with repeats of its own (a Kohya GUI folder, 10_ohwx woman) whose number plan replaced:
    prepare names a folder 1_ when the repeats were not chosen, so another number was chosen by hand."""
    out = []
    for subset, chosen in zip(dataset.subsets, repeats, strict=False):
        if subset.is_reg or subset.repeats in (chosen, DEFAULT_REPEATS):
            continue
        out.append(
            f"{subset.dir.name}: the folder name's {subset.repeats} repeats become {chosen}: "
            f"{'its prepare.json does not record them as chosen' if dataset.manifest_sha256 else 'the dataset has no prepare.json recording them as chosen'}"
            f", so plan chooses the repeats that bring one epoch to the preset's target steps; "
            f"to keep {subset.repeats}, add --set keep_repeats=true (plan then chooses only the epochs)"
        )
    return out


def _step_record(sp: StepPlan) -> PlanSteps:
    count = sp.count
    return PlanSteps(
        train_images_x_repeats=count.train_images_x_repeats,
        reg_images_x_repeats=count.reg_images_x_repeats,
        batch_size=count.batch_size,
        grad_accum=count.grad_accum,
        num_processes=count.num_processes,
        steps_per_epoch=count.steps_per_epoch,
        epochs=sp.epochs,
        max_train_steps=sp.max_train_steps,
        arithmetic=sp.arithmetic,
    )


def _cross_check(values: dict[str, Any], settings: dict[str, Setting]) -> list[str]:
    """The warnings of sd-scripts' cross-argument rules; the first error, naming where its key came from."""
    problems = cross_checks(values)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        source = settings[first.keys[0]].source if first.keys[0] in settings else "default"
        raise PresetError(f"{first.keys[0]} ({source}): {first.message}", first.hint)
    return [p.message for p in problems if p.severity == "warning"]


def _render_files(
    preset_name: str, values: dict[str, Any], subsets: tuple[PlanSubset, ...], shape: Shape, prompts: list[SamplePrompt]
) -> dict[str, str]:
    header = (
        f"Written by kohya-wrap {__version__} `plan` from preset {preset_name} for sd-scripts {PINNED_TAG}.\n"
        "Regenerate it with `kohya-wrap plan`; edits here are not checked."
    )
    files = {
        CONFIG_TOML: render_config_toml(values, header=header + "\nsd-scripts reads it with --config_file."),
        DATASET_TOML: render_dataset_toml(
            [DatasetSubset(s.dir, s.repeats, s.class_tokens, s.is_reg) for s in subsets],
            resolution=shape.resolution,
            batch_size=shape.batch_size,
            enable_bucket=shape.enable_bucket,
            header=header + "\nsd-scripts reads it with --dataset_config.",
        ),
    }
    if prompts:
        try:
            files[SAMPLE_PROMPTS] = render_sample_prompts(prompts, header=header)
        except ValueError as e:
            raise PresetError(f"[kohya_wrap] prompts: {e}") from None
    return files


def _resolution_warnings(dataset: Dataset, shape: Shape) -> list[str]:
    try:
        return check_image_sizes([(str(s.dir), s.size) for s in dataset.subsets], shape)
    except ValueError as e:
        raise DatasetError(str(e), f"prepare the dataset at {shape.width} px, or --set enable_bucket=true") from None


def _planned_against(sd_scripts: str | Path | None) -> PlannedAgainst:
    """The checkout this machine has, for the record: the run trains with whichever one train finds."""
    try:
        checkout = locate(sd_scripts)
    except TrainerNotFound:
        if sd_scripts:
            raise
        return PlannedAgainst()
    return PlannedAgainst(commit=checkout.commit, matches_pin=checkout.matches_pin)
