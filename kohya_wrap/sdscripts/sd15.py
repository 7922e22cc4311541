"""What sd-scripts' SD1.5 loader expects of a base model and a tokenizer.

sd-scripts v0.10.1 hardcodes the SD1.5 layer sizes (library/model_util.py: UNET_PARAMS_*, VAE_PARAMS_*,
the CLIPTextConfig in load_models_from_stable_diffusion_checkpoint) and loads every component with a
strict load_state_dict, so a base model must carry exactly these shapes under the original
single-file (CompVis LDM) key layout. Where the tokenizer goes: configs.tokenizer_subdir.
"""

from __future__ import annotations

from dataclasses import dataclass

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
