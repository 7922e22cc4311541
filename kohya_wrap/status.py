"""`kohya-wrap status`: the state of a run, read from its folder while it runs or after it ended.

The run's events are folded by kohya_wrap.rundir.RunFold (as train, the report and the live view
fold them); plan.json says what was planned. Whether a run without a `finished` event is still
going is read from the run directory's lock: train holds it for the trainer's whole life and the
kernel frees it when the process dies (a Colab disconnect, a lost SSH session, kill -9), so a free
lock means "stalled" at once. A run directory without a lock file (written by another machine or an
older kohya-wrap) falls back to the age of its last sign of life: events.jsonl or train.log older
than `stale_after_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict

from kohya_wrap import events as ev
from kohya_wrap import rundir
from kohya_wrap.codec import Record, RecordError
from kohya_wrap.rundir import RunFold, SavedFile, format_duration
from kohya_wrap.rundir.view import DEFAULT_STALE_AFTER_S, RunState, RunView, check_run_dir, load_plan
from kohya_wrap.score import load_score, recommended_line, recommended_step
from kohya_wrap.score.advice import Advice, advise
from kohya_wrap.sdscripts.samples import validation_losses

DEFAULT_POLL_S = 1.0


class LiveScore(Record, frozen=True):
    """One checkpoint's live score, as the `score` event recorded it."""

    step: int
    samples: int
    faces: int
    likeness: float | None
    matches: int
    copies: int
    checkpoint: str | None = None
    recommended: int | None = None


class RunStatus(Record, frozen=True):
    """What `status` shows of a run (and prints with --json): a projection of its RunView at one moment."""

    run_dir: str
    state: RunState
    phase: str | None
    step: int | None
    total_steps: int | None
    rate: float | None
    rate_unit: str | None  # "it/s" | "s/it", as the trainer printed it
    seconds_per_step: float | None
    elapsed_s: float | None
    eta_s: float | None
    avr_loss: float | None
    lr: float | None
    epoch: int | None
    epochs: int | None
    last_checkpoint: SavedFile | None
    last_state: SavedFile | None
    last_sample: SavedFile | None
    samples: int
    last_warning: str | None
    warnings: int
    last_error: str | None
    outcome: ev.Outcome | None
    exit_code: int | None
    returncode: int | None
    segments: int  # 1 + the number of times the run was resumed
    started_at: str | None
    last_event_at: str | None
    seconds_since_last_event: float | None
    seconds_since_output: float | None  # train.log's age
    stale_after_s: float
    preset: str | None
    lora_file: str | None
    lora_exists: bool
    resumable: bool
    resume_command: str | None
    unreadable_lines: int
    not_resumable: str | None = None  # why `train --resume` would refuse this stopped run
    held_by: str | None = None  # who holds the run directory's lock (pid, since when), while it runs
    lock_file: bool = False  # the run directory has a lock file: running or stopped is read from the lock
    recommended_step: int | None = None  # from score.json, when the run was scored
    score: str | None = None  # the score's recommendation in words
    validation_loss: float | None = None  # the latest held-out loss sd-scripts logged to TensorBoard
    validation_step: int | None = None
    scores: tuple[LiveScore, ...] = ()  # live scoring: step, samples, faces, likeness, matches, copies
    stop_early: str | None = None  # why live scoring stopped (or is stopping) the run
    advice: Advice | None = None  # what to do next (score.advice): kind, text, step, command
    percent: float | None = None
    done: bool = False


def read_status(run_dir: Path, *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunStatus:
    """The state of the run in `run_dir` now (`now`: a time.time() value, for tests)."""
    run_dir = check_run_dir(run_dir)
    reader = EventTail(rundir.paths(run_dir).events)
    fold = RunFold().feed_all(reader.read_new())
    plan = load_plan(run_dir)
    view = RunView.of(
        plan, fold, where=run_dir, now=now, stale_after_s=stale_after_s, unreadable_lines=reader.unreadable_lines
    )
    return project(view)


def follow(
    run_dir: Path,
    on_update: Callable[[RunStatus, list[ev.Event]], None],
    *,
    poll_s: float = DEFAULT_POLL_S,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Tail events.jsonl until a `finished` event; call on_update(status, new_events) as they come.

    Returns the final status. A stalled run is reported (on_update) but followed on, since a resumed
    run appends to the same file. `should_stop` ends the loop early (Ctrl-C raises KeyboardInterrupt
    out of the sleep, and nothing here needs cleaning up).
    """
    run_dir = check_run_dir(run_dir)
    plan = load_plan(run_dir)
    fold = RunFold()
    reader = EventTail(rundir.paths(run_dir).events)
    last_state: str | None = None
    while True:
        new = reader.read_new()
        fold.feed_all(new)
        view = RunView.of(
            plan, fold, where=run_dir, stale_after_s=stale_after_s, unreadable_lines=reader.unreadable_lines
        )
        status = project(view)
        if last_state is None or new or status.state != last_state:
            on_update(status, new)
            last_state = status.state
        if view.outcome is not None or should_stop():
            return status
        sleep(poll_s)


class EventTail:
    """Reads events.jsonl incrementally: whole lines only, so a line being written is read next time.

    (events.read_events reads a finished file whole; following a live one needs the offset kept.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.unreadable_lines = 0

    def read_new(self) -> list[ev.Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return list(self._parse(lines))

    def _parse(self, lines: list[bytes]) -> Iterator[ev.Event]:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                yield ev.parse_event(raw)
            except RecordError:
                self.unreadable_lines += 1


def project(view: RunView) -> RunStatus:
    """The status of a run: its view, as `status` shows it."""
    fold = view.fold
    return RunStatus(
        run_dir=str(view.run_dir),
        state=view.state,
        phase=fold.phase,
        step=view.step,
        total_steps=view.total_steps,
        percent=view.percent,
        eta_s=view.eta_s,
        **_speed(fold),
        **_files(view),
        **_messages(fold),
        outcome=view.outcome,
        exit_code=view.exit_code,
        returncode=fold.finished.returncode if fold.finished else None,
        segments=fold.segments,
        started_at=fold.started_at,
        last_event_at=fold.last_event_at,
        seconds_since_last_event=view.seconds_since_event,
        seconds_since_output=view.seconds_since_output,
        stale_after_s=view.stale_after_s,
        preset=view.plan.preset_name,
        resumable=view.resumable,
        resume_command=view.resume_command,
        not_resumable=view.not_resumable,
        unreadable_lines=view.unreadable_lines,
        held_by=view.holder.describe() if view.holder is not None else None,
        lock_file=view.lock_file,
        **_scoring(view),
        done=view.done,
    )


class _Speed(TypedDict):
    rate: float | None
    rate_unit: str | None
    seconds_per_step: float | None
    elapsed_s: float | None
    avr_loss: float | None
    lr: float | None
    epoch: int | None
    epochs: int | None


class _Files(TypedDict):
    last_checkpoint: SavedFile | None
    last_state: SavedFile | None
    last_sample: SavedFile | None
    samples: int
    lora_file: str
    lora_exists: bool


class _Messages(TypedDict):
    last_warning: str | None
    warnings: int
    last_error: str | None
    stop_early: str | None


class _Scoring(TypedDict):
    recommended_step: int | None
    score: str | None
    validation_step: int | None
    validation_loss: float | None
    scores: tuple[LiveScore, ...]
    advice: Advice | None


def _speed(fold: RunFold) -> _Speed:
    progress = fold.last_progress
    return {
        "rate": fold.rate,
        "rate_unit": fold.rate_unit,
        "seconds_per_step": fold.seconds_per_step,
        "elapsed_s": progress.elapsed_s if progress else None,
        "avr_loss": fold.avr_loss,
        "lr": fold.lr,
        "epoch": fold.epoch,
        "epochs": fold.epochs,
    }


def _files(view: RunView) -> _Files:
    """What the run saved so far, where the run directory is now."""
    lora = view.plan.lora_file
    return {
        "last_checkpoint": view.here(view.fold.last_checkpoint),
        "last_state": view.last_state,
        "last_sample": view.here(view.fold.last_sample),
        "samples": len(view.fold.samples),
        "lora_file": str(lora),
        "lora_exists": view.lora_file is not None,
    }


def _messages(fold: RunFold) -> _Messages:
    return {
        "last_warning": fold.warnings[-1] if fold.warnings else None,
        "warnings": len(fold.warnings),
        "last_error": fold.last_failure.message if fold.last_failure is not None else None,
        "stop_early": fold.stop_early.reason if fold.stop_early is not None else None,
    }


def _scoring(view: RunView) -> _Scoring:
    """The score's recommendation, the held-out loss, the live scores and what to do next."""
    scored = load_score(view.run_dir)
    validation = _last_validation_loss(rundir.paths(view.run_dir).tensorboard_dir)
    return {
        "recommended_step": recommended_step(scored),
        "score": recommended_line(scored) if scored is not None else None,
        "validation_step": validation[0] if validation else None,
        "validation_loss": validation[1] if validation else None,
        "scores": tuple(_live_score(score) for score in view.fold.score_list),
        # what to do next once the run has ended well (while it trains, the score is of the steps so far)
        "advice": advise(scored, view.run_dir) if scored is not None and view.state == "finished" else None,
    }


def _live_score(score: ev.Score) -> LiveScore:
    return LiveScore(
        step=score.step,
        samples=score.samples,
        faces=score.faces,
        likeness=score.likeness,
        matches=score.matches,
        copies=score.copies,
        checkpoint=score.checkpoint,
        recommended=score.recommended,
    )


_validation_seen: dict[Path, tuple[tuple[tuple[str, int, int], ...], tuple[int, float] | None]] = {}


def _last_validation_loss(logging_dir: Path) -> tuple[int, float] | None:
    """(step, loss) of the latest validation loss, when the run holds out images (validation_split).

    `status --follow` asks every second: the TensorBoard files are parsed again only when one changed.
    """
    if not logging_dir.is_dir():
        return None
    files = sorted(p for p in logging_dir.rglob("*") if p.is_file())
    stamp = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),))
    seen = _validation_seen.get(logging_dir)
    if seen is not None and seen[0] == stamp:
        return seen[1]
    losses = validation_losses(logging_dir)
    latest = max(losses.items()) if losses else None
    _validation_seen[logging_dir] = (stamp, latest)
    return latest


__all__ = ["EventTail", "LiveScore", "RunStatus", "SavedFile", "follow", "format_duration", "project", "read_status"]
