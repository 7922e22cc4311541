"""What sd-scripts' SD1.5 loader expects of a base model and a tokenizer.

sd-scripts v0.10.1 hardcodes the SD1.5 layer sizes (library/model_util.py: UNET_PARAMS_*, VAE_PARAMS_*,
the CLIPTextConfig in load_models_from_stable_diffusion_checkpoint) and loads every component with a
strict load_state_dict, so a base model must carry exactly these shapes under the original
single-file (CompVis LDM) key layout. Where the tokenizer goes: configs.tokenizer_subdir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap import codec
from kohya_wrap.codec import Record, RecordError, TomlValue
from kohya_wrap.safetensors_header import read_header

# Single-file checkpoint prefixes, one per component.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

TEXT_ENCODER_VOCAB_SIZE = 49408
TOKENIZER_MAX_LENGTH = 77
# The line sd-scripts logs after each strict load_state_dict of the base model.
ALL_KEYS_MATCHED = "All keys matched successfully"


@dataclass(frozen=True)
class UNetShape:
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    # Levels (0 = full latent resolution) whose blocks carry cross-attention transformers.
    attention_levels: tuple[int, ...] = (0, 1, 2)
    num_res_blocks: int = 2
    context_dim: int = 768
    num_heads: int = 8
    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 64


@dataclass(frozen=True)
class VaeShape:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    resolution: int = 256


@dataclass(frozen=True)
class TextEncoderShape:
    vocab_size: int = TEXT_ENCODER_VOCAB_SIZE
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = TOKENIZER_MAX_LENGTH
    hidden_act: str = "quick_gelu"
    projection_dim: int = 768


@dataclass(frozen=True)
class Sd15Architecture:
    unet: UNetShape = UNetShape()
    vae: VaeShape = VaeShape()
    text_encoder: TextEncoderShape = TextEncoderShape()


# The only architecture sd-scripts' SD1.5 loader accepts.
SD15 = Sd15Architecture()


# A few keys every SD1.5 single-file checkpoint holds, one or two per component, in the layout
# library/model_util.py: load_models_from_stable_diffusion_checkpoint reads (convert_ldm_unet_checkpoint,
# convert_ldm_vae_checkpoint, and the text encoder under cond_stage_model.transformer.).
REQUIRED_KEYS = (
    UNET_PREFIX + "input_blocks.0.0.weight",
    UNET_PREFIX + "out.2.weight",
    VAE_PREFIX + "encoder.conv_in.weight",
    VAE_PREFIX + "decoder.conv_out.weight",
    TEXT_ENCODER_PREFIX + "text_model.embeddings.token_embedding.weight",
)
# model_util.load_checkpoint_with_text_encoder_conversion also accepts the older text encoder layout
# without "text_model.": such a key stands for its text_model. twin.
_OLD_TEXT_ENCODER = (TEXT_ENCODER_PREFIX + "text_model.", TEXT_ENCODER_PREFIX)
# Key prefixes that say which other architecture a checkpoint is.
OTHER_ARCHITECTURES = (
    ("conditioner.embedders.", "an SDXL checkpoint"),
    ("cond_stage_model.model.", "an SD 2.x checkpoint (OpenCLIP text encoder)"),
    ("double_blocks.", "a FLUX checkpoint"),
    ("joint_blocks.", "an SD3 checkpoint"),
    ("lora_unet_", "a LoRA, not a base model"),
    ("lora_te_", "a LoRA, not a base model"),
)
# A diffusers folder: unet/config.json's cross_attention_dim is the text encoder width (768 for SD1.x).
DIFFUSERS_CROSS_ATTENTION_DIM = 768


def read_safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors header; no tensor is read (ValueError for another kind of file)."""
    header, _ = read_header(path)
    return [k for k in header if k != "__metadata__"]


def sd15_problem(keys: list[str] | set[str]) -> str | None:
    """Why these checkpoint keys are not an SD1.5 single-file checkpoint sd-scripts can load, or None."""
    present = set(keys)
    for prefix, what in OTHER_ARCHITECTURES:
        if any(k.startswith(prefix) for k in present):
            return f"it is {what}"
    missing = []
    for key in REQUIRED_KEYS:
        old = key.replace(*_OLD_TEXT_ENCODER) if key.startswith(_OLD_TEXT_ENCODER[0]) else key
        if key not in present and old not in present:
            missing.append(key)
    if not missing:
        return None
    sample = ", ".join(sorted(present)[:3]) + (", ..." if len(present) > 3 else "") if present else "none"
    return (
        f"{len(missing)} of the SD1.5 keys sd-scripts loads are missing (e.g. {missing[0]}); "
        f"its {len(present)} tensor names begin: {sample}"
    )


class _UNetConfig(Record, frozen=True):
    """unet/config.json of a diffusers folder, as far as it is read here."""

    cross_attention_dim: TomlValue | None = None


def diffusers_problem(folder: Path) -> str | None:
    """Why a diffusers folder is not an SD1.x model (unet/config.json cross_attention_dim), or None."""
    config = folder / "unet" / "config.json"
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {config.relative_to(folder)}"
    except (OSError, ValueError) as e:
        return f"{config.relative_to(folder)} cannot be read: {e}"
    try:
        dim = codec.convert(doc, _UNetConfig, source=str(config)).cross_attention_dim
    except RecordError:  # not an object, or a table where a number belongs: no SD1.x dimension either way
        dim = None
    if dim != DIFFUSERS_CROSS_ATTENTION_DIM:
        kind = {1024: " (SD 2.x)", 2048: " (SDXL)"}.get(dim, "") if isinstance(dim, int) else ""
        return f"its U-Net cross_attention_dim is {dim!r}{kind}, SD1.5's is {DIFFUSERS_CROSS_ATTENTION_DIM}"
    return None
