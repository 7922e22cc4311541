"""plan: a preset and a prepared dataset become a run directory: sd-scripts' configs, validated, plus plan.json.

make_plan() decides what to train (values and where each came from, repeats and epochs, the files)
and returns a frozen Plan; kohya_wrap.rundir writes and reads it (docs/run-directory.md). plan
decides nothing about the machine and never touches the network: a hub model or kohya-wrap's own
tokenizer cache is fetched by train's pre-flight, on the machine that trains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from kohya_wrap import __version__
from kohya_wrap.codec import utc_now_text
from kohya_wrap.dataset import Dataset, scan_dataset
from kohya_wrap.errors import DatasetError, KohyaWrapError, PresetError, TrainerNotFound
from kohya_wrap.models import BaseModel, check_base_model, check_tokenizer_dir
from kohya_wrap.preset import MAX_STEPS, OurSettings, Preset, load_preset
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
    RunPaths,
    check_new_run_dir,
    paths,
)
from kohya_wrap.sdscripts import PINNED_TAG
from kohya_wrap.sdscripts.checkout import locate
from kohya_wrap.sdscripts.layout import DEFAULT_REPEATS
from kohya_wrap.sdscripts.trainer import (
    DatasetFolder,
    PromptText,
    StepTarget,
    TrainerConfig,
    TrainerPaths,
    TrainerRequest,
    render_trainer_files,
    resolve_trainer_config,
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


def _prompts(ours: OurSettings, dataset: Dataset) -> tuple[PromptText, ...]:
    words = _subject_words(dataset)
    out = []
    for i, template in enumerate(ours.prompts):
        try:
            text = template.format(**words)
        except (KeyError, IndexError, ValueError) as e:
            raise PresetError(
                f"[kohya_wrap] prompts: {template!r} has an unknown placeholder {e}",
                "use {subject}, {token} or {class}",
            ) from None
        out.append(
            PromptText(
                text,
                ours.negative_prompt,
                ours.sample_size,
                ours.sample_seed + i,
                ours.sample_steps,
                ours.sample_scale,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class PlanRequest:
    """What to train: everything `plan` needs (nothing about the machine that will train it).

    gpus: processes (GPUs) on each machine; the step arithmetic counts the processes of all machines.
    Whether this machine has them is train's question, asked where the run trains.
    """

    dataset_dir: str | Path
    preset: str | Path | Preset  # a name or a file, or a preset loaded already (its --set applied)
    base_model: str
    run_dir: str | Path
    overrides: Sequence[str] = ()
    gpus: int | None = None
    tokenizer_cache_dir: str | Path | None = None
    sd_scripts: str | Path | None = None
    allow_pickle: bool = False
    machines: Machines = Machines()


@dataclass(frozen=True)
class PlanInputs:
    """What make_plan checks before it reads the dataset: `run` checks them before it prepares a photo."""

    run_dir: Path
    preset: Preset
    model: BaseModel
    tokenizer: Path | None
    launch: LaunchRequest


def check_plan_inputs(request: PlanRequest) -> PlanInputs:
    """The preset (with --set), the base model, the tokenizer cache and the machine options, checked and loaded
    before a dataset exists, so that `run` refuses a typo before it prepares a single photo."""
    run = Path(request.run_dir).expanduser().resolve()
    check_new_run_dir(run)
    chosen = request.preset if isinstance(request.preset, Preset) else load_preset(request.preset, request.overrides)
    model = check_base_model(request.base_model, allow_pickle=request.allow_pickle)
    tokenizer = check_tokenizer_dir(request.tokenizer_cache_dir) if request.tokenizer_cache_dir is not None else None
    launch = LaunchRequest(request.gpus if request.gpus is not None else 1, request.machines)
    if launch.gpus < 1:
        raise KohyaWrapError(f"--gpus {launch.gpus}: must be at least 1")
    request.machines.check()
    return PlanInputs(run, chosen, model, tokenizer, launch)


def make_plan(request: PlanRequest, inputs: PlanInputs | None = None) -> Plan:
    """What to train, decided and validated; nothing is written and nothing is fetched.

    inputs: check_plan_inputs(request) where the caller checked them already (the preset is loaded once).
    """
    if inputs is None:
        inputs = check_plan_inputs(request)
    else:
        check_new_run_dir(inputs.run_dir)  # a run directory made since the check is never overwritten
    dataset = scan_dataset(request.dataset_dir)
    ours = inputs.preset.settings
    _check_kept_repeats(dataset, ours)
    files_at = paths(inputs.run_dir)
    config = resolve_trainer_config(_trainer_request(inputs, dataset, ours, files_at))
    warnings = [
        *inputs.model.warnings,
        *_replaced_repeats(dataset, config.steps.repeats),
        *config.step_warnings,
    ]
    if not config.prompts and config.settings.wants_samples:
        warnings.append("the preset asks for samples but has no [kohya_wrap] prompts; no samples will be made")
    warnings.extend(config.check_warnings)
    return _plan_record(request, inputs, dataset, config, tuple(warnings))


def _trainer_request(inputs: PlanInputs, dataset: Dataset, ours: OurSettings, files_at: RunPaths) -> TrainerRequest:
    model = inputs.model
    return TrainerRequest(
        chosen={k: (s.value, s.source) for k, s in inputs.preset.values.items()},
        folders=tuple(
            DatasetFolder(s.dir, s.images, s.repeats, s.is_reg, s.class_tokens, s.size) for s in dataset.subsets
        ),
        target=StepTarget(
            ours.target_steps,
            ours.min_steps,
            ours.max_steps,
            ours.preferred_epochs,
            ours.max_repeats,
            ours.single_epoch,
        ),
        keep_repeats=bool(dataset.repeats_explicit or ours.keep_repeats),
        num_processes=inputs.launch.num_processes,
        size=ours.size,
        auto_precision=ours.auto_mixed_precision,
        model=model.path if model.path is not None else model.source,
        tokenizer_cache_dir=inputs.tokenizer,
        paths=TrainerPaths(
            files_at.output_dir, files_at.dataset_toml, files_at.sample_prompts, files_at.tensorboard_dir
        ),
        default_output_name=_output_name(dataset),
        prompts=_prompts(ours, dataset),
    )


def _plan_record(
    request: PlanRequest, inputs: PlanInputs, dataset: Dataset, config: TrainerConfig, warnings: tuple[str, ...]
) -> Plan:
    chosen, model, tokenizer = inputs.preset, inputs.model, inputs.tokenizer
    subsets = tuple(
        PlanSubset(str(s.dir), s.images, r, s.class_tokens, s.is_reg)
        for s, r in zip(dataset.subsets, config.steps.repeats, strict=False)
    )
    output_dir = paths(inputs.run_dir).output_dir
    return Plan(
        run_dir=inputs.run_dir,
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
        values=MappingProxyType(dict(config.values)),
        sources=MappingProxyType(dict(config.sources)),
        ours=MappingProxyType({k: s.value for k, s in chosen.ours.items()}),
        steps=_step_record(config),
        launch=inputs.launch,
        env=MappingProxyType(dict(config.env)),
        output_dir=output_dir,
        output_name=config.output_name,
        lora_file=output_dir / config.lora_file_name,
        sd_scripts=_planned_against(request.sd_scripts),
        warnings=warnings,
        files=MappingProxyType(_render_files(chosen.name, config)),
    )


def _check_kept_repeats(dataset: Dataset, ours: OurSettings) -> None:
    keep = dataset.repeats_explicit or ours.keep_repeats
    for s in dataset.subsets if keep else ():
        # sd-scripts adds each image to its bucket once per repeat before training starts (library/train_util.py,
        # BaseDataset.make_buckets): an absurd count hangs the trainer and fills the memory; more repeats than
        # the most steps a preset may ask for cannot be of use
        if s.repeats > MAX_STEPS:
            raise DatasetError(
                f"{s.dir}: {s.repeats} repeats is out of range: at most {MAX_STEPS:,} are kept",
                "prepare the photos again with a smaller --repeats (or without it: plan then chooses them)",
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


def _step_record(config: TrainerConfig) -> PlanSteps:
    sp = config.steps
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


def _render_files(preset_name: str, config: TrainerConfig) -> dict[str, str]:
    header = (
        f"Written by kohya-wrap {__version__} `plan` from preset {preset_name} for sd-scripts {PINNED_TAG}.\n"
        "Regenerate it with `kohya-wrap plan`; edits here are not checked."
    )
    try:
        rendered = render_trainer_files(config, header)
    except ValueError as e:
        raise PresetError(f"[kohya_wrap] prompts: {e}") from None
    files = {CONFIG_TOML: rendered.config_toml, DATASET_TOML: rendered.dataset_toml}
    if rendered.sample_prompts is not None:
        files[SAMPLE_PROMPTS] = rendered.sample_prompts
    return files


def _planned_against(sd_scripts: str | Path | None) -> PlannedAgainst:
    """The checkout this machine has, for the record: the run trains with whichever one train finds."""
    try:
        checkout = locate(sd_scripts)
    except TrainerNotFound:
        if sd_scripts:
            raise
        return PlannedAgainst()
    return PlannedAgainst(commit=checkout.commit, matches_pin=checkout.matches_pin)
