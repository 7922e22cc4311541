"""sd-scripts' DreamBooth folder convention and the files its dataset scan accepts (docs/sd-scripts.md#folder-naming-convention, #image-and-caption-files)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CAPTION_EXTENSION",
    "DEFAULT_REPEATS",
    "IMAGE_EXTENSIONS",
    "REG_DIR",
    "SubsetName",
    "TRAIN_DIR",
    "parse_subset_dir_name",
    "subset_dir_name",
]

TRAIN_DIR = "img"
REG_DIR = "reg"
CAPTION_EXTENSION = ".txt"
# library/train_util.py: IMAGE_EXTENSIONS: matched case-sensitively on Linux, so we only ever write lower case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# The repeats a prepared folder gets when the user gives none; `plan` may change them.
DEFAULT_REPEATS = 1

_SUBSET_RE = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class SubsetName:
    repeats: int
    class_tokens: str


def subset_dir_name(repeats: int, class_tokens: str) -> str:
    """`10_ohwx man`: how sd-scripts' folder mode reads repeats and class tokens."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return f"{repeats}_{class_tokens}"


def parse_subset_dir_name(name: str) -> SubsetName | None:
    """The (repeats, class tokens) sd-scripts reads from a folder name, or None if it skips it."""
    m = _SUBSET_RE.match(name)
    if not m or name.startswith("."):
        return None
    return SubsetName(repeats=int(m.group(1)), class_tokens=m.group(2))
