"""Training events: typed records of what the trainer did, and their JSON Lines form.

The train stage turns the trainer's console into these; events.jsonl holds one per line; report
and status read them back with read_events(). Nothing here knows sd-scripts. The format is the
events.jsonl format in docs/run-directory.md#eventsjsonl: every object has "t" (ISO-8601 UTC, ms) and "type",
the tag of the event's record. Lines are written and read by kohya_wrap/codec.py (a non-finite loss is the
string "nan", "inf" or "-inf" there, as strict JSON has no NaN).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from kohya_wrap.codec import Record, RecordError, decode, encode, utc_now_text

PhaseName = Literal["preparing", "loading_model", "caching_latents", "training", "sampling", "saving", "finished"]
# How an attempt ended: the exit code and the advice of each are in kohya_wrap/train/outcome.py.
Outcome = Literal[
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
]
# Outcomes of a run that ended as it should: it trained to its end, or live scoring stopped it early
# because more training could only make it worse. Both exit 0, and `train --extend` continues either.
ENDED_WELL: frozenset[Outcome] = frozenset({"finished", "stopped_early"})
# What an error event is about; the runner classifies a run's outcome from these.
ErrorKind = Literal[
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
]


def now_iso() -> str:
    """An event's time: to the millisecond, as events of one second still come in order."""
    return utc_now_text(timespec="milliseconds")


class Event(Record, frozen=True, kw_only=True, tag_field="type"):
    """One line of events.jsonl: its `type` is the tag, `t` when it happened. Two events are equal when
    everything but their time is (a parsed line equals the event a test expects)."""

    t: str = msgspec.field(default_factory=now_iso)

    @property
    def type(self) -> str:
        return str(type(self).__struct_config__.tag)

    def _facts(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__struct_fields__ if name != "t")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Event)
        return self._facts() == other._facts()

    def __hash__(self) -> int:
        return hash((type(self), self._facts()))


class Phase(Event, frozen=True, kw_only=False, tag="phase"):
    phase: PhaseName


class Summary(Event, frozen=True, kw_only=False, tag="summary"):
    train_images: int | None
    reg_images: int | None
    batches_per_epoch: int | None
    epochs: int | None
    batch_size: str | None  # one entry per dataset, comma-separated, as the trainer prints it
    grad_accum: int | None
    total_steps: int | None


class Epoch(Event, frozen=True, kw_only=False, tag="epoch"):
    epoch: int
    total: int


class Progress(Event, frozen=True, kw_only=False, tag="progress"):
    step: int
    total: int
    rate: float | None  # None while the trainer shows "?"
    rate_unit: str  # "it/s" or "s/it"
    elapsed_s: float
    eta_s: float | None
    avr_loss: float | None
    lr: float | None = None


class Checkpoint(Event, frozen=True, kw_only=False, tag="checkpoint"):
    path: str
    step: int | None


class StateSaved(Event, frozen=True, kw_only=False, tag="state_saved"):
    path: str
    step: int | None


class Sample(Event, frozen=True, kw_only=False, tag="sample"):
    path: str
    step: int | None
    prompt_index: int | None


class Warning_(Event, frozen=True, kw_only=False, tag="warning"):  # noqa: N801  "Warning" is a builtin
    message: str


class Error(Event, frozen=True, kw_only=False, tag="error"):
    message: str
    kind: ErrorKind = "log"


class Finished(Event, frozen=True, kw_only=False, tag="finished"):
    outcome: Outcome
    exit_code: int  # kohya-wrap's exit code for this outcome
    returncode: int | None  # the trainer's; None when it never started


class Score(Event, frozen=True, kw_only=False, tag="score"):
    """The likeness of one checkpoint's samples, scored while the trainer goes on (live scoring)."""

    step: int
    samples: int
    faces: int
    likeness: float | None
    matches: int
    copies: int
    checkpoint: str | None = None  # the LoRA file of that step, when it was saved
    recommended: int | None = None  # the step the score recommends among the checkpoints scored so far


class StopEarly(Event, frozen=True, kw_only=False, tag="stop_early"):
    """Training more can only make it worse: train stops the trainer the way Ctrl-C does."""

    step: int | None  # the last checkpoint scored when it was decided
    reason: str


# What one line of events.jsonl is read as: the type field says which.
_Line = (
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


def event_line(event: Event) -> str:
    """One line of events.jsonl (without its newline): strict JSON, its time first."""
    return encode(event, indent=None, lead=("t",))


def parse_event(line: str | bytes, source: str = "an events.jsonl line") -> Event:
    """The event one line holds; unknown keys (from a newer kohya-wrap) are ignored. RecordError for
    anything else (a JSON null or array, an unknown type, a field of the wrong type, bytes that are not
    UTF-8): readers skip such a line as they skip a torn one, so one bad line never hides the run."""
    event: Event = decode(line, _Line, source=source)  # type: ignore[arg-type]
    return event


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
        data = (("\n" if self._torn else "") + event_line(event) + "\n").encode("utf-8")
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
    damaged one, bytes that are not UTF-8 included (read line by line, as status's EventTail does)."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                yield parse_event(raw)
            except RecordError:
                continue
