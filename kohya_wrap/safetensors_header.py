"""The one reader of a safetensors file's header: an 8-byte little-endian length, then that many bytes of
JSON (tensor names with dtype, shape and offsets, and `__metadata__`). No tensor is read, so a 4 GB
checkpoint is looked at in milliseconds; LoRA checks, base-model checks, inspect and export use it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

# A real header is kilobytes to a few megabytes; a larger length is a damaged file or another format.
MAX_HEADER_BYTES = 100_000_000


class HeaderError(ValueError):
    """The file is not a readable safetensors file; the message says why."""


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header as JSON, and the offset where the tensor data starts."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError(f"it is only {size} bytes long, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length < 2 or length > min(size - 8, MAX_HEADER_BYTES):
            raise HeaderError(f"the header claims {length} bytes but the file has {size}")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HeaderError(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise HeaderError("its header is not a JSON object")
    return header, 8 + length
