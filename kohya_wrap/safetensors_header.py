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


def truncation(header: dict[str, Any], data_start: int, size: int) -> str | None:
    """Why a file of `size` bytes does not hold every tensor its header declares, or None.

    An interrupted download or save leaves a whole header and part of the data: only the file's size
    against the furthest tensor end is compared, so no tensor is read."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        offsets = entry.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            end = max(end, offsets[1])
    held = size - data_start
    if end > held:
        return f"its header declares {end} bytes of tensor data but the file holds {max(held, 0)} (it is truncated)"
    return None


def check_complete(path: Path) -> None:
    """HeaderError unless the file is a safetensors file holding every tensor its header declares."""
    header, data_start = read_header(path)
    problem = truncation(header, data_start, Path(path).stat().st_size)
    if problem is not None:
        raise HeaderError(problem)
