import json
import math

import pytest

from kohya_wrap.codec import RecordError, to_builtins
from kohya_wrap.events import (
    Checkpoint,
    Epoch,
    Error,
    EventWriter,
    Finished,
    Phase,
    Progress,
    Sample,
    StateSaved,
    Summary,
    Warning_,
    event_line,
    parse_event,
    read_events,
)

ALL = [
    Phase(phase="training"),
    Summary(train_images=40, reg_images=0, batches_per_epoch=40, epochs=1, batch_size="1", grad_accum=1, total_steps=4),
    Epoch(epoch=1, total=3),
    Progress(step=2, total=4, rate=2.5, rate_unit="s/it", elapsed_s=5.0, eta_s=None, avr_loss=0.0, lr=None),
    Checkpoint(path="/o/x-step00000002.safetensors", step=2),
    StateSaved(path="/o/x-step00000002-state", step=2),
    Sample(path="/o/sample/x_000002_00_20261125101010_1.png", step=2, prompt_index=0),
    Warning_(message="no regularization images"),
    Error(message="CUDA out of memory", kind="oom"),
    Finished(outcome="finished", exit_code=0, returncode=0),
]


@pytest.mark.parametrize("event", ALL, ids=lambda e: e.type)
def test_round_trip_keeps_every_field(event):
    line = event_line(event)
    data = json.loads(line)
    assert list(data)[:2] == ["t", "type"]
    assert data["type"] == event.type
    assert data["t"].endswith("Z") and "." in data["t"]
    back = parse_event(line)
    assert back == event and back.t == event.t


def test_falsy_values_survive():
    data = to_builtins(Progress(step=0, total=4, rate=0.0, rate_unit="it/s", elapsed_s=0.0, eta_s=0.0, avr_loss=0.0))
    assert data["step"] == 0 and data["rate"] == 0.0 and data["eta_s"] == 0.0 and data["avr_loss"] == 0.0


def test_non_finite_loss_is_strict_json():
    line = event_line(
        Progress(step=3, total=4, rate=1.0, rate_unit="it/s", elapsed_s=1, eta_s=1, avr_loss=float("nan"))
    )
    assert '"avr_loss": "nan"' in line
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert math.isnan(parse_event(line).avr_loss)
    assert parse_event(event_line(Progress(1, 2, 1.0, "it/s", 1, 1, float("-inf")))).avr_loss == float("-inf")


def test_unknown_type_is_rejected_and_unknown_keys_ignored():
    with pytest.raises(RecordError, match="type: Invalid value 'bogus'"):
        parse_event('{"t": "x", "type": "bogus"}')
    assert parse_event('{"t": "x", "type": "phase", "phase": "saving", "new_key": 1}') == Phase(phase="saving")


def test_writer_appends_and_reader_skips_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write(ALL[0])
    with EventWriter(path) as w:
        w.write(ALL[2])
    with open(path, "a") as f:
        f.write('{"t": "2026-11-25T10:00:00.000Z", "type": "epo')  # killed mid-write
    assert list(read_events(path)) == [ALL[0], ALL[2]]


def test_only_numbers_are_decoded_from_nan_strings():
    assert parse_event(event_line(Error(message="nan", kind="nan"))) == Error(message="nan", kind="nan")
