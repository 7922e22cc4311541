"""What sd-scripts needs of a base model and its tokenizer: an SD1.5 checkpoint's keys, the CLIP tokenizer's files.

models.py checks a checkpoint with sd15_key_problem before a run is planned, and fills the tokenizer
cache sd-scripts reads with --tokenizer_cache_dir (CLIP_TOKENIZER); smoke builds a tiny checkpoint of
the same architecture (SD15, CHECKPOINT_KEYS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.sdscripts import configs, sd15
from kohya_wrap.sdscripts.sd15 import (
    SD15,
    Sd15Architecture,
    TextEncoderShape,
    UNetShape,
    VaeShape,
    read_safetensors_keys,
)
from kohya_wrap.sdscripts.sd15 import sd15_problem as sd15_key_problem

__all__ = [
    "CHECKPOINT_KEYS",
    "CLIP_TOKENIZER",
    "SD15",
    "Sd15Architecture",
    "TextEncoderShape",
    "UNetShape",
    "VaeShape",
    "read_safetensors_keys",
    "sd15_key_problem",
]


@dataclass(frozen=True)
class CheckpointKeys:
    """The prefixes of an SD1.5 checkpoint's keys, one per model (library/model_util.py reads them)."""

    unet: str
    vae: str
    text_encoder: str


@dataclass(frozen=True)
class ClipTokenizer:
    """The CLIP tokenizer sd-scripts loads for SD1.5, and the folder it reads with --tokenizer_cache_dir."""

    repo: str  # on the Hugging Face Hub
    files: tuple[str, ...]  # what a saved tokenizer holds
    required_files: tuple[str, ...]  # what it cannot load without

    def folder(self, cache_dir: str | Path) -> Path:
        """Where sd-scripts looks for it inside a --tokenizer_cache_dir."""
        return configs.tokenizer_subdir(cache_dir)


CHECKPOINT_KEYS = CheckpointKeys(sd15.UNET_PREFIX, sd15.VAE_PREFIX, sd15.TEXT_ENCODER_PREFIX)
CLIP_TOKENIZER = ClipTokenizer(configs.TOKENIZER_REPO, configs.TOKENIZER_FILES, configs.TOKENIZER_REQUIRED_FILES)
