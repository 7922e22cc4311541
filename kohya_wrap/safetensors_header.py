"""The one reader of a safetensors file's header: an 8-byte little-endian length, then that many bytes of
JSON (tensor names with dtype, shape and offsets, and `__metadata__`). No tensor is read, so a 4 GB
checkpoint is looked at in milliseconds; LoRA checks, base-model checks, inspect and export use it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Annotated

import msgspec

# A real header is kilobytes to a few megabytes; a larger length is a damaged file or another format.
MAX_HEADER_BYTES = 100_000_000
ALIGNMENT = 8  # safetensors pads the header so the tensor data starts 8-byte aligned


class TensorEntry(msgspec.Struct, frozen=True):
    """One tensor the header declares: where its bytes lie in the data after the header."""

    dtype: str
    shape: tuple[Annotated[int, msgspec.Meta(ge=0)], ...]
    data_offsets: tuple[int, int]


class HeaderError(ValueError):
    """The file is not a readable safetensors file; the message says why."""


# A header as read: tensor names (the file's own) and `__metadata__`, each holding any JSON until
# TensorEntry or metadata_text reads it.
Header = dict[str, object]
METADATA_KEY = "__metadata__"


def read_header(path: Path) -> tuple[Header, int]:
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
        # a JSON object of any JSON values: the tensors' names are the file's own (TensorEntry checks each)
        header = msgspec.json.decode(raw, type=Header)
    except msgspec.ValidationError:
        raise HeaderError("its header is not a JSON object") from None
    except msgspec.DecodeError as e:
        raise HeaderError(f"its header is not JSON ({e})") from None
    except RecursionError:
        raise HeaderError("its header is not JSON (its arrays or objects nest too deeply to read)") from None
    return header, 8 + length


def metadata_text(header: Header) -> dict[str, str]:
    """`__metadata__` as text: {} when it is absent or empty; a value another tool wrote as JSON rather
    than as the string the format asks for is that JSON's text. HeaderError when it is not an object."""
    try:
        metadata = msgspec.convert(header.get(METADATA_KEY) or {}, dict[str, object])
    except msgspec.ValidationError:
        raise HeaderError("its __metadata__ is not a JSON object") from None
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def header_bytes(header: Header) -> bytes:
    """A header as a safetensors file starts: its length (u64, little-endian), then the JSON, padded with
    spaces so the tensor data after it starts 8-byte aligned."""
    body = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    body += b" " * (-(8 + len(body)) % ALIGNMENT)
    return struct.pack("<Q", len(body)) + body


def incomplete(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file, or None: the header must read, its __metadata__ be
    strings, and every tensor it declares lie inside the file (a save or copy cut short fails this)."""
    path = Path(path)
    try:
        header, data_start = read_header(path)
        data_size = path.stat().st_size - data_start
    except (OSError, HeaderError) as e:
        return str(e)
    try:
        msgspec.convert(header.get(METADATA_KEY), dict[str, str] | None)  # absent or null: no metadata
    except msgspec.ValidationError:
        return "its __metadata__ is not an object of strings"
    for name, entry in header.items():
        if name == METADATA_KEY:
            continue
        try:
            start, end = msgspec.convert(entry, TensorEntry).data_offsets
        except msgspec.ValidationError:
            start, end = 1, 0
        if not 0 <= start <= end:
            return f"tensor {name!r} has no valid dtype, shape and data_offsets"
        if end > data_size:
            return (
                f"tensor {name!r} ends at byte {end} of the data, but the file holds {data_size}: "
                "it was cut short (truncated: a save, copy or download that did not finish)"
            )
    return None


def check_complete(path: Path) -> None:
    """HeaderError unless the file is a safetensors file holding every tensor its header declares."""
    problem = incomplete(path)
    if problem is not None:
        raise HeaderError(problem)
