"""A tiny .safetensors file with SD1.5 single-file key names: the base-model check reads only the keys."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from kohya_wrap.sdscripts.sd15 import REQUIRED_KEYS


def write_sd15_stub(path: Path, keys: tuple[str, ...] = REQUIRED_KEYS) -> Path:
    """Each key holds one float32 (4 bytes): a valid safetensors file, far from a real model."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, key in enumerate(keys):
        header[key] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(keys)))
    return path
