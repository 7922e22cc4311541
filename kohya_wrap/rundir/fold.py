"""One fold of a run's events into what is known of it: train's follower, `status`, the report and the
live view all read a run through RunFold, so they agree on its step, speed, loss and outcome.

events.jsonl may hold several segments: a run that stopped and was resumed appends to it. A
`finished` event ends a segment; any event after it starts the next one. Per-segment facts (the
outcome, the mean speed, the trainer's count of steps) describe the latest segment; the loss curve and
the files saved span all.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from kohya_wrap import events as ev

_T = TypeVar("_T", int, float)


@dataclass(frozen=True)
class SavedFile:
    path: str
    step: int | None


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float
    lr: float | None


@dataclass
class RunFold:
    """The running summary of a stream of events; `feed` them in file order."""

    phase: str | None = None
    summary: ev.Summary | None = None
    first_progress: ev.Progress | None = None  # of the latest segment
    last_progress: ev.Progress | None = None
    rate: float | None = None
    rate_unit: str | None = None
    avr_loss: float | None = None
    lr: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    total_steps: int | None = None  # the trainer's count of the latest segment (an extension counts on)
    checkpoints: list[SavedFile] = field(default_factory=list)
    states: list[SavedFile] = field(default_factory=list)
    samples: list[ev.Sample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[ev.Error] = field(default_factory=list)  # of the latest segment
    all_errors: list[str] = field(default_factory=list)
    loss: list[LossPoint] = field(default_factory=list)
    scores: dict[int, ev.Score] = field(default_factory=dict)  # live scoring: the latest score of each step
    stop_early: ev.StopEarly | None = None  # of the latest segment
    finished: ev.Finished | None = None  # the latest segment's end, None while it runs
    segments: int = 0
    started_at: str | None = None
    last_event_at: str | None = None
    _after_finished: bool = field(default=True, repr=False)

    def feed(self, event: ev.Event) -> None:
        if self._after_finished:
            # the first event, or the first one of a resumed segment
            self.segments += 1
            self._after_finished = False
            self.finished = None
            self.first_progress = None
            self.total_steps = None
            self.errors = []
            self.stop_early = None
        self.started_at = self.started_at or event.t
        self.last_event_at = event.t
        if isinstance(event, ev.Phase):
            self.phase = event.phase
        elif isinstance(event, ev.Summary):
            self.summary = event
            self.total_steps = _first(event.total_steps, self.total_steps)
            self.epochs = _first(event.epochs, self.epochs)
        elif isinstance(event, ev.Epoch):
            self.epoch, self.epochs = event.epoch, event.total
        elif isinstance(event, ev.Progress):
            self._progress(event)
        elif isinstance(event, ev.Checkpoint):
            self.checkpoints.append(SavedFile(event.path, event.step))
        elif isinstance(event, ev.StateSaved):
            self.states.append(SavedFile(event.path, event.step))
        elif isinstance(event, ev.Sample):
            self.samples.append(event)
        elif isinstance(event, ev.Warning_):
            self.warnings.append(event.message)
        elif isinstance(event, ev.Error):
            self.errors.append(event)
            self.all_errors.append(event.message)
        elif isinstance(event, ev.Score):
            self.scores[event.step] = event
        elif isinstance(event, ev.StopEarly):
            self.stop_early = event
        elif isinstance(event, ev.Finished):
            self.finished = event
            self.phase = "finished"
            self._after_finished = True

    def feed_all(self, events: Iterable[ev.Event]) -> RunFold:
        for event in events:
            self.feed(event)
        return self

    def _progress(self, event: ev.Progress) -> None:
        if self.first_progress is None:
            self.first_progress = event
        self.last_progress = event
        self.total_steps = event.total
        if event.rate is not None:
            self.rate, self.rate_unit = event.rate, event.rate_unit
        self.avr_loss = _first(event.avr_loss, self.avr_loss)
        self.lr = _first(event.lr, self.lr)
        if event.avr_loss is not None:
            self.loss.append(LossPoint(event.step, event.avr_loss, event.lr))

    # what the fold means

    @property
    def step(self) -> int | None:
        return self.last_progress.step if self.last_progress else None

    @property
    def outcome(self) -> ev.Outcome | None:
        return self.finished.outcome if self.finished else None

    @property
    def final_loss(self) -> float | None:
        """The last finite loss (a run stopped for NaN ends on its last good one), else the last one."""
        finite = next((p.loss for p in reversed(self.loss) if math.isfinite(p.loss)), None)
        return finite if finite is not None else (self.loss[-1].loss if self.loss else None)

    @property
    def score_list(self) -> list[ev.Score]:
        """The live scores, one per checkpoint, by step."""
        return [self.scores[step] for step in sorted(self.scores)]

    @property
    def last_failure(self) -> ev.Error | None:
        """The latest segment's last error that is one: a KeyboardInterrupt is how the trainer stops on
        SIGINT (Ctrl-C, or a stop early), and the outcome says how the run ended."""
        failures = [e for e in self.errors if e.kind != "interrupted"]
        return failures[-1] if failures else None

    @property
    def last_checkpoint(self) -> SavedFile | None:
        return self.checkpoints[-1] if self.checkpoints else None

    @property
    def last_state(self) -> SavedFile | None:
        return self.states[-1] if self.states else None

    @property
    def last_sample(self) -> SavedFile | None:
        return SavedFile(self.samples[-1].path, self.samples[-1].step) if self.samples else None

    @property
    def mean_it_per_s(self) -> float | None:
        """Steps of the latest segment over its bar's clock (a resumed bar starts past 0)."""
        first, last = self.first_progress, self.last_progress
        if first is None or last is None or last.elapsed_s <= 0:
            return None
        steps = last.step - first.step
        return steps / last.elapsed_s if steps > 0 else None

    @property
    def seconds_per_step(self) -> float | None:
        if not self.rate:
            return None
        return self.rate if self.rate_unit == "s/it" else 1.0 / self.rate

    def trend(self) -> str:
        """The loss now against a tenth of the run ago: falling, flat or rising ('' too early to say)."""
        losses: list[float] = []
        for point in self.loss:
            if not losses or losses[-1] != point.loss:  # the bar repeats a loss between updates
                losses.append(point.loss)
        if len(losses) < 3:
            return ""
        back, now = losses[-max(2, len(losses) // 10)], losses[-1]
        if math.isnan(back) or math.isnan(now):
            return "NaN"
        change = (now - back) / back if back else 0.0
        return "falling" if change < -0.01 else "rising" if change > 0.01 else "flat"


def fold_events(events: Iterable[ev.Event]) -> RunFold:
    return RunFold().feed_all(events)


def _first(value: _T | None, fallback: _T | None) -> _T | None:
    return fallback if value is None else value


def format_duration(seconds: float | None) -> str:
    """The one duration format: 1h02m, 4m05s, 12s; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def resume_command(run_dir: Path | str) -> str:
    """The one resume command, shell-quoted."""
    return f"kohya-wrap train --resume {shlex.quote(str(run_dir))}"
