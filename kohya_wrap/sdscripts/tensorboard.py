"""Scalars sd-scripts logs to TensorBoard: the validation loss, which it prints nowhere else.

train_network.py (v0.10.1) holds out `validation_split` of the dataset and, every
`validate_every_n_steps`, logs `loss/validation/step_average` and `loss/validation/step_divergence`
(validation minus training moving average) at the global step; at each epoch's end
`loss/validation/epoch_average` and `.../epoch_divergence` - but NetworkTrainer.epoch_logging passes
the *epoch number* as TensorBoard's step for those. They go to the trackers only (log_with
tensorboard + logging_dir), through accelerate's TensorBoardTracker: torch's SummaryWriter files
`<logging_dir>/**/events.out.tfevents.*`.

Those files are TFRecord-framed `Event` protocol buffers; the few fields needed here are decoded
directly (no tensorboard or protobuf package needed): a record is a little-endian u64 length, a
u32 CRC of it, the payload, a u32 CRC of the payload. A record cut short (a file still being
written) ends the reading of that file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

VALIDATION_STEP_AVERAGE = "loss/validation/step_average"
VALIDATION_STEP_DIVERGENCE = "loss/validation/step_divergence"
VALIDATION_EPOCH_AVERAGE = "loss/validation/epoch_average"  # at step = epoch number
VALIDATION_EPOCH_DIVERGENCE = "loss/validation/epoch_divergence"
EVENT_FILE_GLOB = "events.out.tfevents.*"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one protobuf message: ints, bytes, or raw 4/8-byte values."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _tensor_value(buf: bytes) -> float | None:
    # TensorProto: float_val = 5, double_val = 6 (new-style scalars)
    for number, _, value in _fields(buf):
        if number == 5 and isinstance(value, bytes) and len(value) >= 4:
            return float(struct.unpack("<f", value[:4])[0])
        if number == 6 and isinstance(value, bytes) and len(value) >= 8:
            return float(struct.unpack("<d", value[:8])[0])
    return None


def _scalars(event: bytes) -> Iterator[tuple[str, int, float]]:
    step = 0
    summaries: list[bytes] = []
    for number, _, value in _fields(event):
        if number == 2 and isinstance(value, int):
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5 and isinstance(value, bytes):
            summaries.append(value)
    for summary in summaries:
        for number, _, value in _fields(summary):
            if number != 1 or not isinstance(value, bytes):
                continue
            tag, scalar = None, None
            for vnum, vwire, v in _fields(value):
                if vnum == 1 and isinstance(v, bytes):
                    tag = v.decode("utf-8", "replace")
                elif vnum == 2 and vwire == 5 and isinstance(v, bytes):
                    scalar = float(struct.unpack("<f", v)[0])
                elif vnum == 8 and isinstance(v, bytes):
                    scalar = _tensor_value(v)
            if tag is not None and scalar is not None:
                yield tag, step, scalar


def read_event_file(path: Path) -> Iterator[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in one event file, in file order."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return  # cut short: still being written
        try:
            yield from _scalars(data[start:end])
        except (ValueError, struct.error):
            pass  # not an event this reader understands
        pos = end + 4


def read_scalars(logging_dir: Path, prefix: str = "") -> dict[str, dict[int, float]]:
    """tag -> step -> value for the scalars under logging_dir whose tag starts with prefix; the
    newest file wins where two write the same step (a resumed run)."""
    folder = Path(logging_dir)
    if not folder.is_dir():
        return {}
    found: dict[str, dict[int, float]] = {}
    files = sorted(folder.rglob(EVENT_FILE_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        try:
            for tag, step, value in read_event_file(path):
                if tag.startswith(prefix):
                    found.setdefault(tag, {})[step] = value
        except OSError:
            continue
    return found


def validation_losses(logging_dir: Path) -> dict[int, float]:
    """The validation loss (sd-scripts' step_average) by global step; empty when none was logged."""
    return dict(sorted(read_scalars(logging_dir, "loss/validation/").get(VALIDATION_STEP_AVERAGE, {}).items()))
