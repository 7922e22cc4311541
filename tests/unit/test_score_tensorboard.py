"""Reading sd-scripts' validation loss from TensorBoard event files."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from kohya_wrap.sdscripts.tensorboard import (
    VALIDATION_EPOCH_AVERAGE,
    VALIDATION_STEP_AVERAGE,
    read_event_file,
    read_scalars,
    validation_losses,
)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def event(step: int, tag: str, value: float, *, tensor: bool = False) -> bytes:
    """An Event{wall_time, step, summary{value{tag, simple_value | tensor{float_val}}}} as TensorFlow encodes it."""
    if tensor:
        scalar = _field(8, 2, _field(1, 0, _varint(1)) + _field(5, 2, struct.pack("<f", value)))
    else:
        scalar = _field(2, 5, struct.pack("<f", value))
    summary = _field(1, 2, _field(1, 2, tag.encode()) + scalar)
    return _field(1, 1, struct.pack("<d", 1.7e9)) + _field(2, 0, _varint(step)) + _field(5, 2, summary)


def record(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload)) + b"\0" * 4 + payload + b"\0" * 4  # CRCs are not checked


def test_scalars_simple_and_tensor_style_and_a_record_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    version = _field(1, 1, struct.pack("<d", 1.7e9)) + _field(3, 2, b"brain.Event:2")
    path.write_bytes(
        record(version)
        + record(event(250, VALIDATION_STEP_AVERAGE, 0.125))
        + record(event(500, VALIDATION_STEP_AVERAGE, 0.0625, tensor=True))
        + record(event(2, VALIDATION_EPOCH_AVERAGE, 0.5))
        + record(event(750, VALIDATION_STEP_AVERAGE, 0.25))[:-9]
    )  # still being written
    assert list(read_event_file(path)) == [
        (VALIDATION_STEP_AVERAGE, 250, 0.125),
        (VALIDATION_STEP_AVERAGE, 500, 0.0625),
        (VALIDATION_EPOCH_AVERAGE, 2, 0.5),
    ]


def test_validation_losses_by_step_from_nested_folders(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "20261201101010" / "network_train"
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1.host").write_bytes(
        record(event(500, VALIDATION_STEP_AVERAGE, 0.5))
        + record(event(250, VALIDATION_STEP_AVERAGE, 0.75))
        + record(event(250, "loss/current", 0.1))
    )
    assert validation_losses(tmp_path / "logs") == {250: 0.75, 500: 0.5}
    assert set(read_scalars(tmp_path / "logs")) == {VALIDATION_STEP_AVERAGE, "loss/current"}
    assert validation_losses(tmp_path / "none") == {}


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("torch") is None,
    reason="tensorboard (or torch) is not installed: torch's SummaryWriter (accelerate's) needs it",
)
def test_the_files_torchs_summary_writer_writes(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "logs" / "run"))  # what accelerate's TensorBoardTracker opens
    for step, value in ((100, 0.3), (200, 0.25)):
        writer.add_scalar(VALIDATION_STEP_AVERAGE, value, step)
        writer.add_scalar("loss/validation/step_divergence", value - 0.2, step)
    writer.add_scalar("loss/average", 0.2, 200)
    writer.close()
    assert validation_losses(tmp_path / "logs") == {100: pytest.approx(0.3), 200: pytest.approx(0.25)}
    assert set(read_scalars(tmp_path / "logs", "loss/validation/")) == {
        VALIDATION_STEP_AVERAGE,
        "loss/validation/step_divergence",
    }
