"""The one reader of a safetensors file's header: an 8-byte little-endian length, then that many bytes of
JSON (tensor names with dtype, shape and offsets, and `__metadata__`). No tensor is read, so a 4 GB
checkpoint is looked at in milliseconds; LoRA checks, base-model checks, inspect and export use it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from kohya_wrap.fsutil import load_json

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
        header = load_json(raw.decode("utf-8"))
    except ValueError as e:
        raise HeaderError(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise HeaderError("its header is not a JSON object")
    return header, 8 + length


def incomplete(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file, or None: the header must read, its __metadata__ be
    strings, and every tensor it declares lie inside the file (a save or copy cut short fails this)."""
    path = Path(path)
    try:
        header, data_start = read_header(path)
        data_size = path.stat().st_size - data_start
    except (OSError, HeaderError) as e:
        return str(e)
    metadata = header.get("__metadata__")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        return "its __metadata__ is not an object of strings"
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("dtype"), str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            return f"tensor {name!r} has no valid dtype, shape and data_offsets"
        if offsets[1] > data_size:
            return (
                f"tensor {name!r} ends at byte {offsets[1]} of the data, but the file holds {data_size}: "
                "it was cut short (truncated: a save, copy or download that did not finish)"
            )
    return None


def check_complete(path: Path) -> None:
    """HeaderError unless the file is a safetensors file holding every tensor its header declares."""
    problem = incomplete(path)
    if problem is not None:
        raise HeaderError(problem)
