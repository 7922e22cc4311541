"""What the ss_* / modelspec.* metadata sd-scripts writes into a LoRA file says (docs/sd-scripts.md#lora-metadata).

Every value is a string there (`str(v)`: None is "None", booleans "True"/"False", dicts JSON), and
which keys exist depends on how it was trained (folder mode or --dataset_config, --no_metadata), on
the sd-scripts version, and on the tool that made the file, so every field here may be None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

from kohya_wrap import codec
from kohya_wrap.codec import Record, RecordError, TomlValue

T = TypeVar("T")

_NONE = {"None", "none", "null", ""}


def _str(meta: Mapping[str, str], key: str) -> str | None:
    value = meta.get(key)
    return None if value is None or value in _NONE else value


def _int(meta: Mapping[str, str], key: str) -> int | None:
    value = _str(meta, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _float(meta: Mapping[str, str], key: str) -> float | None:
    value = _str(meta, key)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _json(meta: Mapping[str, str], key: str, kind: type[T]) -> T | None:
    """A metadata value that holds JSON, as its typed shape; None when it is absent or is not that shape
    (a file from another tool, or edited: the value is left out, never guessed)."""
    value = _str(meta, key)
    if value is None:
        return None
    try:
        return codec.decode(value, kind, source=key)
    except RecordError:
        return None


class _DatasetMeta(Record, frozen=True):
    """One dataset of ss_datasets (--dataset_config), as far as it is read here."""

    resolution: tuple[int, int] | None = None
    batch_size_per_device: int | None = None


class _FolderMeta(Record, frozen=True):
    """One folder of ss_dataset_dirs: its repeats and image count."""

    n_repeats: int | None = None
    img_count: int | None = None


class DatasetDir(Record, frozen=True):
    name: str
    repeats: int | None
    images: int | None


class TagCount(Record, frozen=True):
    tag: str
    count: int


class TrainingInfo(Record, frozen=True):
    """What a LoRA file's metadata says about its training (`inspect --json` prints it as "training")."""

    title: str | None
    output_name: str | None
    architecture: str | None
    network_module: str | None
    network_dim: int | None
    network_alpha: float | None
    network_args: dict[str, TomlValue] | None
    base_model_name: str | None
    base_model_hash: str | None  # A1111's short hash
    base_model_sha256: str | None
    base_model_version: str | None
    resolution: str | None
    steps: int | None
    epoch: int | None
    epochs: int | None
    max_train_steps: int | None
    learning_rate: float | None
    unet_lr: float | None
    text_encoder_lr: float | None
    optimizer: str | None
    lr_scheduler: str | None
    batch_size: int | None
    train_images: int | None
    reg_images: int | None
    mixed_precision: str | None
    seed: int | None
    clip_skip: int | None
    dataset_dirs: tuple[DatasetDir, ...]
    top_tags: tuple[TagCount, ...]
    training_started_at: float | None  # unix time
    training_finished_at: float | None
    training_seconds: float | None
    sd_scripts_commit: str | None
    comment: str | None
    has_training_metadata: bool  # False: saved with --no_metadata, or not by sd-scripts


def training_step(meta: Mapping[str, str]) -> int | None:
    """The global step the file was saved at."""
    return _int(meta, "ss_steps")


def _resolution(meta: Mapping[str, str]) -> str | None:
    value = _str(meta, "ss_resolution")  # folder mode: "(512, 512)"
    if value is not None:
        parts = [p.strip() for p in value.strip("()[] ").split(",") if p.strip()]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return f"{parts[0]}x{parts[1]}"
        return value
    datasets = _json(meta, "ss_datasets", list[_DatasetMeta]) or []  # --dataset_config: per dataset
    found = [f"{d.resolution[0]}x{d.resolution[1]}" for d in datasets if d.resolution is not None]
    if found:
        return ", ".join(dict.fromkeys(found))
    return _str(meta, "modelspec.resolution")


def _batch_size(meta: Mapping[str, str]) -> int | None:
    total = _int(meta, "ss_total_batch_size")
    if total is not None:
        return total
    datasets = _json(meta, "ss_datasets", list[_DatasetMeta])
    return datasets[0].batch_size_per_device if datasets else None


def _dataset_dirs(meta: Mapping[str, str]) -> tuple[DatasetDir, ...]:
    dirs = _json(meta, "ss_dataset_dirs", dict[str, _FolderMeta]) or {}
    return tuple(DatasetDir(name=name, repeats=d.n_repeats, images=d.img_count) for name, d in dirs.items())


def top_tags(meta: Mapping[str, str], limit: int = 20) -> tuple[TagCount, ...]:
    """Caption tags over every dataset folder, most frequent first (A1111 shows the same)."""
    frequency = _json(meta, "ss_tag_frequency", dict[str, dict[str, int]]) or {}
    counts: Counter[str] = Counter()
    for tags in frequency.values():
        for tag, n in tags.items():
            counts[tag.strip()] += n
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return tuple(TagCount(tag=tag, count=n) for tag, n in ranked)


def interpret(meta: Mapping[str, str]) -> TrainingInfo:
    started, finished = _float(meta, "ss_training_started_at"), _float(meta, "ss_training_finished_at")
    return TrainingInfo(
        title=_str(meta, "modelspec.title"),
        output_name=_str(meta, "ss_output_name"),
        architecture=_str(meta, "modelspec.architecture"),
        network_module=_str(meta, "ss_network_module"),
        network_dim=_int(meta, "ss_network_dim"),
        network_alpha=_float(meta, "ss_network_alpha"),
        network_args=_network_args(meta),
        base_model_name=_str(meta, "ss_sd_model_name"),
        base_model_hash=_str(meta, "ss_sd_model_hash"),
        base_model_sha256=_str(meta, "ss_new_sd_model_hash"),
        base_model_version=_str(meta, "ss_base_model_version"),
        resolution=_resolution(meta),
        steps=training_step(meta),
        epoch=_int(meta, "ss_epoch"),
        epochs=_int(meta, "ss_num_epochs"),
        max_train_steps=_int(meta, "ss_max_train_steps"),
        learning_rate=_float(meta, "ss_learning_rate"),
        unet_lr=_float(meta, "ss_unet_lr"),
        text_encoder_lr=_float(meta, "ss_text_encoder_lr"),
        optimizer=_str(meta, "ss_optimizer"),
        lr_scheduler=_str(meta, "ss_lr_scheduler"),
        batch_size=_batch_size(meta),
        train_images=_int(meta, "ss_num_train_images"),
        reg_images=_int(meta, "ss_num_reg_images"),
        mixed_precision=_str(meta, "ss_mixed_precision"),
        seed=_int(meta, "ss_seed"),
        clip_skip=_int(meta, "ss_clip_skip"),
        dataset_dirs=_dataset_dirs(meta),
        top_tags=top_tags(meta),
        training_started_at=started,
        training_finished_at=finished,
        training_seconds=finished - started if started is not None and finished is not None else None,
        sd_scripts_commit=_str(meta, "ss_sd_scripts_commit_hash"),
        comment=_str(meta, "ss_training_comment"),
        has_training_metadata="ss_session_id" in meta or "ss_training_started_at" in meta,
    )


def conv_network(meta: Mapping[str, str]) -> bool:
    """networks.lora with conv_dim adds the ResNet convolutions: more U-Net modules than 192."""
    args = _network_args(meta)
    return args is not None and "conv_dim" in args


def _network_args(meta: Mapping[str, str]) -> dict[str, TomlValue] | None:
    # sd-scripts writes the --network_args "key=value" pairs as a JSON object of strings
    return _json(meta, "ss_network_args", dict[str, TomlValue])
