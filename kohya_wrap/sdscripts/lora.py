"""Reading and verifying a LoRA file train_network.py wrote: what train, inspect, sample and report ask of one.

verify_planned_lora checks a run's file against what its plan asked for; verify_found_lora checks any
Kohya-named file against what its own keys and metadata say it is. interpret and training_step read
its ss_* metadata (docs/sd-scripts.md#lora-metadata); is_kohya_key and kohya_part read its key names
(docs/sd-scripts.md#lora-tensor-keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from kohya_wrap.sdscripts.lora_file import (
    UNET_PREFIX,
    Expectation,
    LoraReport,
    expectation_from_values,
    is_kohya_key,
    is_sdxl,
    is_text_encoder_module,
    verify_lora,
)
from kohya_wrap.sdscripts.lora_metadata import TrainingInfo, conv_network, interpret, training_step

__all__ = [
    "LoraReport",
    "TrainingInfo",
    "interpret",
    "is_kohya_key",
    "kohya_part",
    "training_step",
    "verify_found_lora",
    "verify_planned_lora",
]


def verify_planned_lora(
    path: Path, values: Mapping[str, object], steps: int | None, base_model_sha256: str | None
) -> LoraReport:
    """A run's LoRA file against the plan's resolved values, saved at `steps`, trained from that base model."""
    return verify_lora(path, expectation_from_values(dict(values), steps, base_model_sha256))


def verify_found_lora(path: Path, keys: list[str], metadata: Mapping[str, str]) -> LoraReport:
    """A Kohya-named LoRA file against what its own keys and metadata say it trained (`kohya-wrap inspect`)."""
    expect = Expectation(
        train_unet=any(k.startswith(UNET_PREFIX) for k in keys),
        train_text_encoder=any(is_text_encoder_module(k) for k in keys),
        conv=conv_network(metadata),
        sdxl=is_sdxl(keys),
    )
    return verify_lora(path, expect)


def kohya_part(module: str) -> Literal["unet", "text_encoder"] | None:
    """Which model a Kohya LoRA module (a key's part before the first dot) adapts; None: neither."""
    if module.startswith(UNET_PREFIX):
        return "unet"
    if is_text_encoder_module(module):  # lora_te_ and SDXL's lora_te1_/lora_te2_
        return "text_encoder"
    return None
