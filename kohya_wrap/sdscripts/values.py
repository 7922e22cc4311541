"""The train_network.py arguments `plan` decides, and what it needs to read from the resolved values.

plan works in its own terms (batch size, resolution, precision, paths); this module maps them to and
from sd-scripts' argument names, so no other package spells them.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.codec import Record, TomlValue, convert
from kohya_wrap.sdscripts.arguments import argparse_default


@dataclass(frozen=True)
class TrainerSettings:
    """What the resolved values mean, in kohya-wrap's terms: the one way code outside this package reads them."""

    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    resolution: str  # "512" or "512,768", as config.toml carries it
    width: int
    height: int
    enable_bucket: bool
    resizes_images: bool  # sd-scripts resizes images of another size (bucketing or latent caching: docs/sd-scripts.md#image-sizes-and-bucketing)
    mixed_precision: str
    pinned_steps: int | None  # max_train_steps set by the user for this run
    pinned_epochs: int | None
    output_name: str | None
    wants_samples: bool
    samples_while_training: bool  # samples every so many steps or epochs (not only before the first)
    model_suffix: str  # of the saved LoRA file


# TrainerSettings fields -> the sd-scripts argument each one reads (what run.json names a change by)
_ARGUMENT_OF = {
    "batch_size": "train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "gradient_checkpointing": "gradient_checkpointing",
    "resolution": "resolution",
    "mixed_precision": "mixed_precision",
}


def argument_of(field: str) -> str:
    """The sd-scripts argument behind a TrainerSettings field ("batch_size" -> "train_batch_size")."""
    return _ARGUMENT_OF[field]


def set_by(sources: Mapping[str, str], source: str) -> frozenset[str]:
    """The TrainerSettings fields whose argument came from `source` (e.g. "--set")."""
    return frozenset(f for f, key in _ARGUMENT_OF.items() if sources.get(key) == source)


def precision_for(cuda: bool, bf16: bool) -> str:
    """Automatic mixed precision: bf16 where the GPU computes it natively, else fp16; fp32 on a CPU."""
    if not cuda:
        return "no"
    return "bf16" if bf16 else "fp16"


def filled_in(
    values: Mapping[str, TomlValue], *, size: int, auto_precision: bool
) -> dict[str, tuple[TomlValue | None, str]]:
    """Values written although the preset left them out, as (value, source "plan" or "default").

    auto_precision: mixed_precision is left out, for train to choose on the machine it finds
    (precision_for); else sd-scripts' default ("no") is written.
    """
    out: dict[str, tuple[TomlValue | None, str]] = {}
    if "mixed_precision" not in values and not auto_precision:
        out["mixed_precision"] = (argparse_default("mixed_precision"), "default")
    for key in ("train_batch_size", "gradient_accumulation_steps"):  # the step count depends on them
        if key not in values:
            out[key] = (argparse_default(key), "default")
    if "resolution" not in values:
        out["resolution"] = (str(size), "plan")
    return out


class _ReadValues(Record, frozen=True):
    """The arguments trainer_settings reads, typed as sd-scripts' argument table types them (None: unset)."""

    train_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    gradient_checkpointing: bool = False
    resolution: str | int | None = None
    enable_bucket: bool = False
    cache_latents: bool = False
    cache_latents_to_disk: bool = False
    mixed_precision: str | None = None
    max_train_steps: int | None = None
    max_train_epochs: int | None = None
    output_name: str | None = None
    sample_every_n_steps: int | None = None
    sample_every_n_epochs: int | None = None
    sample_at_first: bool = False
    save_model_as: str | None = None


# read from the values only: set, or not (sd-scripts' default does not count)
_SET_ONLY = ("max_train_steps", "max_train_epochs", "output_name")


def trainer_settings(values: Mapping[str, TomlValue]) -> TrainerSettings:
    """The settings the values (a plan's, a preset's) give, sd-scripts' defaults filling what they leave out."""
    read = {
        key: values[key] if key in values or key in _SET_ONLY else argparse_default(key)
        for key in _ReadValues.__struct_fields__
        if key in values or key not in _SET_ONLY
    }
    v = convert(read, _ReadValues, source="the resolved sd-scripts values")
    resolution = str(v.resolution or "512")
    sides = [int(p) for p in resolution.split(",")]
    return TrainerSettings(
        batch_size=v.train_batch_size or 1,
        grad_accum=v.gradient_accumulation_steps or 1,
        gradient_checkpointing=v.gradient_checkpointing,
        resolution=resolution,
        width=sides[0],
        height=sides[-1],
        enable_bucket=v.enable_bucket,
        resizes_images=v.enable_bucket or v.cache_latents or v.cache_latents_to_disk,
        mixed_precision=v.mixed_precision or "no",
        pinned_steps=v.max_train_steps,
        pinned_epochs=v.max_train_epochs,
        output_name=v.output_name,
        wants_samples=bool(v.sample_every_n_steps or v.sample_every_n_epochs or v.sample_at_first),
        samples_while_training=bool(v.sample_every_n_steps or v.sample_every_n_epochs),
        model_suffix="." + (v.save_model_as or "safetensors"),
    )


# TensorBoard is the tracker every run logs to unless the user's --set chooses (sd-scripts' requirements.txt
# ships it; train_util.prepare_accelerator passes log_with and logging_dir to accelerate).
DEFAULT_LOG_WITH = "tensorboard"


@dataclass(frozen=True)
class TrainerPaths:
    """Where the run's files go (rundir.paths names them)."""

    output_dir: Path
    dataset_toml: Path
    sample_prompts: Path
    tensorboard_dir: Path | None  # None: no TensorBoard log


def run_values(
    paths: TrainerPaths,
    *,
    model: Path | str,
    tokenizer_cache_dir: Path | None,
    output_name: str | None,
    with_prompts: bool,
    max_train_steps: int | None,
    chosen: Container[str] = (),
) -> dict[str, TomlValue]:
    """The paths and counts only plan sets (never a preset). None: leave the value as it is.

    tokenizer_cache_dir None: kohya-wrap's own cache, which train passes on the command line.
    paths.tensorboard_dir: the run's TensorBoard folder; it becomes logging_dir and log_with is "tensorboard",
    each unless `chosen` (the keys the preset or --set set) holds it.
    """
    sample_prompts = paths.sample_prompts if with_prompts else None
    logging_dir = paths.tensorboard_dir
    out: dict[str, TomlValue] = {
        "pretrained_model_name_or_path": str(model),
        "output_dir": str(paths.output_dir),
        "dataset_config": str(paths.dataset_toml),
    }
    if tokenizer_cache_dir is not None:
        out["tokenizer_cache_dir"] = str(tokenizer_cache_dir)
    if output_name is not None:
        out["output_name"] = output_name
    if sample_prompts is not None:
        out["sample_prompts"] = str(sample_prompts)
    if max_train_steps is not None:
        out["max_train_steps"] = max_train_steps
    if logging_dir is not None:
        if "log_with" not in chosen:
            out["log_with"] = DEFAULT_LOG_WITH
        if "logging_dir" not in chosen:
            out["logging_dir"] = str(logging_dir)
    return out


def bucket_key(size: tuple[int, int] | None, enable_bucket: bool) -> object:
    """Images sharing a key share a bucket: one bucket without bucketing, else one per aspect ratio
    (exact for the square images prepare writes; sd-scripts' bucket list is not reproduced)."""
    if not enable_bucket or size is None:
        return "single"
    return round(size[0] / size[1], 3)


def saves_state(values: Mapping[str, TomlValue]) -> bool:
    """The run saves a training state with its checkpoints (what `train --resume` continues from)."""
    return bool(values.get("save_state"))


def check_image_sizes(sizes: Sequence[tuple[str, tuple[int, int] | None]], shape: TrainerSettings) -> list[str]:
    """Warnings for images of another size than the training resolution; ValueError where sd-scripts
    would refuse them (bucketing and latent caching off: library/train_util.py, BaseDataset
    make_buckets, requires every image at the resolution). sizes: (folder name, (width, height))."""
    for name, size in sizes:
        if size is not None and size != (shape.width, shape.height):
            if not shape.resizes_images:
                raise ValueError(
                    f"{name}: images are {size[0]}x{size[1]} px but the training resolution is {shape.resolution}, "
                    "and with bucketing and latent caching off sd-scripts refuses images of another size"
                )
            return [f"{Path(name).name}: images are {size[0]}x{size[1]} px, trained at {shape.resolution} (resized)"]
    return []
