"""Training events: typed records of what the trainer did, and their JSON Lines form.

The train stage turns the trainer's console into these; events.jsonl holds one per line; report
and status read them back with read_events(). Nothing here knows sd-scripts. The format is the
events.jsonl format in docs/run-directory.md#eventsjsonl: every object has "t" (ISO-8601 UTC, ms) and "type".

A non-finite loss is written as the string "nan", "inf" or "-inf" (strict JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from kohya_wrap.fsutil import load_json

PHASES = ("preparing", "loading_model", "caching_latents", "training", "sampling", "saving", "finished")
OUTCOMES = (
    "finished",
    "oom",
    "model_missing",
    "no_data",
    "config_rejected",
    "missing_package",
    "nan",
    "crashed",
    "killed",
    "interrupted",
    "verify_failed",
    "stopped_early",
)
# Outcomes of a run that ended as it should: it trained to its end, or live scoring stopped it early
# because more training could only make it worse. Both exit 0, and `train --extend` continues either.
ENDED_WELL = ("finished", "stopped_early")
# What an error event is about; the runner classifies a run's outcome from these.
ERROR_KINDS = (
    "oom",
    "model_missing",
    "no_data",
    "config_rejected",
    "missing_package",
    "nan",
    "killed",
    "interrupted",
    "launcher",
    "exception",
    "log",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Phase:
    phase: str
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["phase"] = field(default="phase", init=False)


@dataclass(frozen=True)
class Summary:
    train_images: int | None
    reg_images: int | None
    batches_per_epoch: int | None
    epochs: int | None
    batch_size: str | None  # one entry per dataset, comma-separated, as the trainer prints it
    grad_accum: int | None
    total_steps: int | None
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["summary"] = field(default="summary", init=False)


@dataclass(frozen=True)
class Epoch:
    epoch: int
    total: int
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["epoch"] = field(default="epoch", init=False)


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    rate: float | None  # None while the trainer shows "?"
    rate_unit: str  # "it/s" or "s/it"
    elapsed_s: float
    eta_s: float | None
    avr_loss: float | None
    lr: float | None = None
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["progress"] = field(default="progress", init=False)


@dataclass(frozen=True)
class Checkpoint:
    path: str
    step: int | None
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["checkpoint"] = field(default="checkpoint", init=False)


@dataclass(frozen=True)
class StateSaved:
    path: str
    step: int | None
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["state_saved"] = field(default="state_saved", init=False)


@dataclass(frozen=True)
class Sample:
    path: str
    step: int | None
    prompt_index: int | None
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["sample"] = field(default="sample", init=False)


@dataclass(frozen=True)
class Warning_:  # noqa: N801  "Warning" is a builtin; the JSON type is "warning"
    message: str
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["warning"] = field(default="warning", init=False)


@dataclass(frozen=True)
class Error:
    message: str
    kind: str = "log"  # one of ERROR_KINDS
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["error"] = field(default="error", init=False)


@dataclass(frozen=True)
class Finished:
    outcome: str  # one of OUTCOMES
    exit_code: int  # kohya-wrap's exit code for this outcome
    returncode: int | None  # the trainer's; None when it never started
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["finished"] = field(default="finished", init=False)


@dataclass(frozen=True)
class Score:
    """The likeness of one checkpoint's samples, scored while the trainer goes on (live scoring)."""

    step: int
    samples: int
    faces: int
    likeness: float | None
    matches: int
    copies: int
    checkpoint: str | None = None  # the LoRA file of that step, when it was saved
    recommended: int | None = None  # the step the score recommends among the checkpoints scored so far
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["score"] = field(default="score", init=False)


@dataclass(frozen=True)
class StopEarly:
    """Training more can only make it worse: train stops the trainer the way Ctrl-C does."""

    step: int | None  # the last checkpoint scored when it was decided
    reason: str
    t: str = field(default_factory=now_iso, compare=False)
    type: Literal["stop_early"] = field(default="stop_early", init=False)


Event = (
    Phase
    | Summary
    | Epoch
    | Progress
    | Checkpoint
    | StateSaved
    | Sample
    | Warning_
    | Error
    | Score
    | StopEarly
    | Finished
)
EVENT_TYPES: dict[str, type] = {
    "phase": Phase,
    "summary": Summary,
    "epoch": Epoch,
    "progress": Progress,
    "checkpoint": Checkpoint,
    "state_saved": StateSaved,
    "sample": Sample,
    "warning": Warning_,
    "error": Error,
    "score": Score,
    "stop_early": StopEarly,
    "finished": Finished,
}


def _encode_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


_FLOAT_FIELDS = frozenset({"avr_loss", "rate", "lr", "elapsed_s", "eta_s", "likeness"})


def _decode_float(key: str, value: Any) -> Any:
    if key in _FLOAT_FIELDS and value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def to_dict(event: Event) -> dict[str, Any]:
    data = asdict(event)
    out: dict[str, Any] = {"t": data.pop("t"), "type": data.pop("type")}
    out.update({k: _encode_float(v) for k, v in data.items()})
    return out


def to_json(event: Event) -> str:
    return json.dumps(to_dict(event), ensure_ascii=False, allow_nan=False)


# The JSON types each field annotation allows (bool is not a number here, as in the files we write).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
}


def from_dict(data: Any) -> Event:
    """The event a dict describes; unknown keys (from a newer kohya-wrap) are ignored.

    ValueError for anything else (a JSON null or array line, a field of the wrong type): the
    readers skip such a line as they skip a torn one, so one bad line never hides the run.
    """
    if not isinstance(data, dict):
        raise ValueError(f"an event is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init or f.name not in data:
            continue
        value = _decode_float(f.name, data[f.name])
        allowed = _FIELD_TYPES.get(str(f.type))
        if allowed is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
            raise ValueError(f"event {kind!r}: {f.name} is {value!r}, not {f.type}")
        kwargs[f.name] = value
    return cls(**kwargs)


def from_json(line: str) -> Event:
    return from_dict(load_json(line))


class EventWriter:
    """Appends events to a JSON Lines file, one line per write() call, so a crash loses nothing written.

    A line the disk cannot take (full, read-only) is counted in `lost`, never raised: the training it
    records goes on, and the next line that fits starts on a line of its own (readers skip the torn one).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.lost = 0
        self.last_error: OSError | None = None
        self._torn = False

    def write(self, event: Event) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (("\n" if self._torn else "") + to_json(event) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
        except OSError as e:
            written, self.last_error = 0, e
        if written < len(data):
            self.lost += 1
            self._torn = written > 0 or self._torn
        else:
            self._torn = False

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError as e:
                self.last_error = e
            finally:
                os.close(fd)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: Path) -> Iterator[Event]:
    """Events of an events.jsonl. A torn last line (the writer was killed mid-write) is skipped, and so is a
    damaged one, bytes that are not UTF-8 included (decoded line by line, as status's EventTail does)."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                yield from_json(raw.decode("utf-8").strip())
            except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
                continue
