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

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kohya_wrap import events as ev
from kohya_wrap import rundir
from kohya_wrap.errors import RunDirError
from kohya_wrap.rundir import EVENTS_JSONL, PLAN_JSON, Plan, RunFold, SavedFile, format_duration, resume_command
from kohya_wrap.safetensors_header import incomplete
from kohya_wrap.score import load_score, recommended_line, recommended_step
from kohya_wrap.score.advice import advise
from kohya_wrap.sdscripts.samples import validation_losses

# Loading SD1.5 and caching latents can be silent for minutes, and train.log is checked too,
# so ten minutes without a line of output is well past anything a live run does.
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_POLL_S = 1.0

# state values
PLANNED, RUNNING, STALLED, FINISHED, INTERRUPTED, FAILED = (
    "planned",
    "running",
    "stalled",
    "finished",
    "interrupted",
    "failed",
)
# outcomes (the `finished` event) after which `train --resume` can continue from a saved state
STOPPED_OUTCOMES = frozenset({"interrupted", "killed", "oom", "crashed", "nan"})


@dataclass(frozen=True)
class RunStatus:
    run_dir: str
    state: str  # planned | running | stalled | finished | interrupted | failed
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
    outcome: str | None
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
    held_by: str | None = None  # who holds the run directory's lock (pid, since when), while it runs
    lock_file: bool = False  # the run directory has a lock file: running or stopped is read from the lock
    recommended_step: int | None = None  # from score.json, when the run was scored
    score: str | None = None  # the score's recommendation in words
    validation_loss: float | None = None  # the latest held-out loss sd-scripts logged to TensorBoard
    validation_step: int | None = None
    scores: tuple[dict[str, Any], ...] = ()  # live scoring: step, samples, faces, likeness, matches, copies
    stop_early: str | None = None  # why live scoring stopped (or is stopping) the run
    advice: dict[str, Any] | None = None  # what to do next (score.advice): kind, text, step, command

    @property
    def done(self) -> bool:
        return self.state in (FINISHED, INTERRUPTED, FAILED)

    @property
    def percent(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return 100.0 * self.step / self.total_steps

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["percent"] = self.percent
        out["done"] = self.done
        # strict JSON has no NaN: a diverged loss is written as events.py writes it
        return {k: _finite_or_name(v) for k, v in out.items()}


@dataclass
class _Fold(RunFold):
    """RunFold, plus the lines of events.jsonl that could not be read."""

    unreadable_lines: int = 0


def read_status(run_dir: Path, *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunStatus:
    """The state of the run in `run_dir` now (`now`: a time.time() value, for tests)."""
    run_dir = _check_run_dir(run_dir)
    fold = _Fold()
    reader = EventTail(rundir.paths(run_dir).events)
    fold.feed_all(reader.read_new())
    fold.unreadable_lines = reader.unreadable_lines
    return _snapshot(run_dir, fold, _load_plan(run_dir), now=now, stale_after_s=stale_after_s)


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
    run_dir = _check_run_dir(run_dir)
    fold = _Fold()
    reader = EventTail(rundir.paths(run_dir).events)
    plan = _load_plan(run_dir)
    first = True
    last_state: str | None = None
    while True:
        new = reader.read_new()
        for event in new:
            fold.feed(event)
        fold.unreadable_lines = reader.unreadable_lines
        if plan is None and new:
            plan = _load_plan(run_dir)
        status = _snapshot(run_dir, fold, plan, now=None, stale_after_s=stale_after_s)
        if first or new or status.state != last_state:
            on_update(status, new)
            first = False
            last_state = status.state
        if fold.outcome is not None or should_stop():
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
                yield ev.from_json(raw.decode("utf-8"))
            except (ValueError, TypeError, AttributeError):
                self.unreadable_lines += 1


def _here(saved: SavedFile | None, plan: Plan | None) -> SavedFile | None:
    """A file the trainer reported where the run was planned, where it is now: a copied or moved run
    directory holds its own copy (the events keep the absolute paths of the trainer's lines)."""
    if saved is None or plan is None or plan.planned_at is None:
        return saved
    path = Path(saved.path)
    if plan.planned_at not in path.parents:
        return saved
    return replace(saved, path=str(plan.run_dir / path.relative_to(plan.planned_at)))


def _snapshot(run_dir: Path, fold: _Fold, plan: Plan | None, *, now: float | None, stale_after_s: float) -> RunStatus:
    now = time.time() if now is None else now
    files = rundir.paths(run_dir)
    since_event = None
    if fold.last_event_at is not None and (t := _parse_time(fold.last_event_at)) is not None:
        since_event = max(0.0, now - t)
    since_output = None
    try:
        since_output = max(0.0, now - files.train_log.stat().st_mtime)
    except OSError:
        pass

    holder = rundir.lock_holder(run_dir)
    outcome = fold.outcome
    if outcome is None and holder is None:
        # events.jsonl damaged or lost: run.json, which train reads to refuse a finished run, says it ended
        manifest = rundir.read_manifest(files.run_json)
        if manifest is not None and manifest.finished:
            outcome = "finished"
    if outcome == "finished" and fold.outcome is None:
        state = FINISHED
    elif fold.segments == 0:
        state = RUNNING if holder is not None else PLANNED
    elif outcome is None:
        if holder is not None:
            state = RUNNING
        elif files.lock.exists():
            state = STALLED  # the lock is free: no process trains this run any more
        else:
            quiet = [s for s in (since_event, since_output) if s is not None]
            state = STALLED if quiet and min(quiet) > stale_after_s else RUNNING
    elif outcome in ("finished", "stopped_early"):
        state = FINISHED
    elif outcome in ("interrupted", "killed"):
        state = INTERRUPTED
    else:
        state = FAILED

    lora_file = str(plan.lora_file) if plan is not None else None
    total = fold.total_steps
    if total is None and plan is not None:
        total = plan.steps.get("max_train_steps")
    seconds_per_step = fold.seconds_per_step
    progress = fold.last_progress
    step = progress.step if progress else None
    eta = progress.eta_s if progress else None
    if eta is None and seconds_per_step is not None and step is not None and total is not None:
        eta = max(0, total - step) * seconds_per_step

    scored = load_score(run_dir)
    validation = _last_validation_loss(files.tensorboard_dir)
    last_state = fold.last_state
    stopped = state in (STALLED, INTERRUPTED) or (state == FAILED and outcome in STOPPED_OUTCOMES)
    # a trainer that finished without saving states, its end never recorded: `train --resume` records it
    can_resume = stopped and (last_state is not None or (plan is not None and rundir.trained_to_the_end(plan)))
    finished = fold.finished
    return RunStatus(
        run_dir=str(run_dir),
        state=state,
        phase=fold.phase,
        step=step,
        total_steps=total,
        rate=fold.rate,
        rate_unit=fold.rate_unit,
        seconds_per_step=seconds_per_step,
        elapsed_s=progress.elapsed_s if progress else None,
        eta_s=eta,
        avr_loss=fold.avr_loss,
        lr=fold.lr,
        epoch=fold.epoch,
        epochs=fold.epochs,
        last_checkpoint=_here(fold.last_checkpoint, plan),
        last_state=_here(last_state, plan),
        last_sample=_here(fold.last_sample, plan),
        samples=len(fold.samples),
        last_warning=fold.warnings[-1] if fold.warnings else None,
        warnings=len(fold.warnings),
        last_error=fold.errors[-1].message if fold.errors else None,
        outcome=outcome,
        exit_code=finished.exit_code if finished else None,
        returncode=finished.returncode if finished else None,
        segments=fold.segments,
        started_at=fold.started_at,
        last_event_at=fold.last_event_at,
        seconds_since_last_event=since_event,
        seconds_since_output=since_output,
        stale_after_s=stale_after_s,
        preset=plan.preset_name if plan is not None else None,
        lora_file=lora_file,
        lora_exists=lora_file is not None and Path(lora_file).is_file() and incomplete(Path(lora_file)) is None,
        resumable=can_resume,
        resume_command=resume_command(run_dir) if can_resume else None,
        unreadable_lines=fold.unreadable_lines,
        held_by=holder.describe() if holder is not None else None,
        lock_file=files.lock.exists(),
        recommended_step=recommended_step(scored),
        score=recommended_line(scored) if scored is not None else None,
        validation_step=validation[0] if validation else None,
        validation_loss=validation[1] if validation else None,
        scores=tuple(
            {k: v for k, v in ev.to_dict(score).items() if k not in ("t", "type")} for score in fold.score_list
        ),
        stop_early=fold.stop_early.reason if fold.stop_early is not None else None,
        # what to do next once the run has ended well (while it trains, the score is of the steps so far)
        advice=advise(scored, run_dir).to_json() if scored is not None and state == FINISHED else None,
    )


def _check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise RunDirError(
            f"{run_dir}: no such run directory",
            "give the folder `kohya-wrap train` printed when it started (RUNS_DIR/<run name>)",
        )
    if not (run_dir / EVENTS_JSONL).exists() and not (run_dir / PLAN_JSON).exists():
        raise RunDirError(
            f"{run_dir} is not a run directory: it holds neither {PLAN_JSON} nor {EVENTS_JSONL}",
            "give the folder `kohya-wrap train` printed when it started (RUNS_DIR/<run name>)",
        )
    return run_dir


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


def _load_plan(run_dir: Path) -> Plan | None:
    """The plan, or None before plan.json exists; a damaged one is an error (status never writes)."""
    if not rundir.is_planned(run_dir):
        return None
    try:
        return rundir.read_plan(run_dir)
    except RunDirError as e:
        raise RunDirError(
            e.message, "the run directory is damaged; `kohya-wrap status` reads it, never writes it"
        ) from None


def _finite_or_name(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _parse_time(t: str) -> float | None:
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


__all__ = ["RunStatus", "SavedFile", "format_duration", "follow", "read_status", "EventTail"]
