"""`kohya-wrap status`: the state of a run, read from its folder while it runs or after it ended.

Everything comes from RUN_DIR/events.jsonl (what train streamed), plan.json (what was planned)
and the modification time of train.log (the trainer's raw output, which moves even in phases that
emit no event). A run with no `finished` event whose last sign of life is older than `stale_after_s`
is reported as "stalled": the process died (a Colab disconnect, a lost SSH session, kill -9) or hangs.

`events.jsonl` may hold several segments: a run that stopped and was resumed appends to it. A
`finished` event ends a segment; any event after it means the run is going again.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kohya_wrap import events as ev
from kohya_wrap.errors import RunDirError

EVENTS_FILE = "events.jsonl"
PLAN_FILE = "plan.json"
RUN_MANIFEST_FILE = "run.json"
TRAIN_LOG_FILE = "train.log"

# Loading SD1.5 and caching latents can be silent for minutes, and train.log is checked too,
# so ten minutes without a line of output is well past anything a live run does.
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_POLL_S = 1.0

# state values
PLANNED, RUNNING, STALLED, FINISHED, INTERRUPTED, FAILED = (
    "planned", "running", "stalled", "finished", "interrupted", "failed",
)
# outcomes (the `finished` event) after which `train --resume` can continue from a saved state
STOPPED_OUTCOMES = frozenset({"interrupted", "killed", "oom", "crashed", "nan"})


@dataclass(frozen=True)
class SavedFile:
    path: str
    step: int | None


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
class _Fold:
    """The running summary of a stream of events; `feed` them in file order."""

    phase: str | None = None
    step: int | None = None
    total_steps: int | None = None
    rate: float | None = None
    rate_unit: str | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    avr_loss: float | None = None
    lr: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    last_checkpoint: SavedFile | None = None
    last_state: SavedFile | None = None
    last_sample: SavedFile | None = None
    samples: int = 0
    last_warning: str | None = None
    warnings: int = 0
    last_error: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    returncode: int | None = None
    segments: int = 0
    started_at: str | None = None
    last_event_at: str | None = None
    unreadable_lines: int = 0
    _after_finished: bool = field(default=True, repr=False)

    def feed(self, event: ev.Event) -> None:
        if self._after_finished:
            # the first event, or the first one of a resumed segment
            self.segments += 1
            self._after_finished = False
            self.outcome = self.exit_code = self.returncode = None
            self.last_error = None
        self.started_at = self.started_at or event.t
        self.last_event_at = event.t
        if isinstance(event, ev.Phase):
            self.phase = event.phase
        elif isinstance(event, ev.Summary):
            self.total_steps = _first(event.total_steps, self.total_steps)
            self.epochs = _first(event.epochs, self.epochs)
        elif isinstance(event, ev.Epoch):
            self.epoch, self.epochs = event.epoch, event.total
        elif isinstance(event, ev.Progress):
            self.step, self.total_steps = event.step, event.total
            if event.rate is not None:
                self.rate, self.rate_unit = event.rate, event.rate_unit
            self.elapsed_s, self.eta_s = event.elapsed_s, event.eta_s
            self.avr_loss = _first(event.avr_loss, self.avr_loss)
            self.lr = _first(event.lr, self.lr)
        elif isinstance(event, ev.Checkpoint):
            self.last_checkpoint = SavedFile(event.path, event.step)
        elif isinstance(event, ev.StateSaved):
            self.last_state = SavedFile(event.path, event.step)
        elif isinstance(event, ev.Sample):
            self.last_sample = SavedFile(event.path, event.step)
            self.samples += 1
        elif isinstance(event, ev.Warning_):
            self.last_warning = event.message
            self.warnings += 1
        elif isinstance(event, ev.Error):
            self.last_error = event.message
        elif isinstance(event, ev.Finished):
            self.outcome, self.exit_code, self.returncode = event.outcome, event.exit_code, event.returncode
            self.phase = "finished"
            self._after_finished = True


def read_status(run_dir: Path, *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunStatus:
    """The state of the run in `run_dir` now (`now`: a time.time() value, for tests)."""
    run_dir = _check_run_dir(run_dir)
    fold = _Fold()
    reader = EventTail(run_dir / EVENTS_FILE)
    for event in reader.read_new():
        fold.feed(event)
    fold.unreadable_lines = reader.unreadable_lines
    return _snapshot(run_dir, fold, _load_json(run_dir / PLAN_FILE), now=now, stale_after_s=stale_after_s)


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
    reader = EventTail(run_dir / EVENTS_FILE)
    plan = _load_json(run_dir / PLAN_FILE)
    first = True
    last_state: str | None = None
    while True:
        new = reader.read_new()
        for event in new:
            fold.feed(event)
        fold.unreadable_lines = reader.unreadable_lines
        if plan is None and new:
            plan = _load_json(run_dir / PLAN_FILE)
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


def _snapshot(run_dir: Path, fold: _Fold, plan: dict[str, Any] | None, *, now: float | None,
              stale_after_s: float) -> RunStatus:
    now = time.time() if now is None else now
    since_event = None
    if fold.last_event_at is not None and (t := _parse_time(fold.last_event_at)) is not None:
        since_event = max(0.0, now - t)
    since_output = None
    try:
        since_output = max(0.0, now - (run_dir / TRAIN_LOG_FILE).stat().st_mtime)
    except OSError:
        pass

    if fold.segments == 0:
        state = PLANNED
    elif fold.outcome is None:
        quiet = [s for s in (since_event, since_output) if s is not None]
        state = STALLED if quiet and min(quiet) > stale_after_s else RUNNING
    elif fold.outcome == "finished":
        state = FINISHED
    elif fold.outcome in ("interrupted", "killed"):
        state = INTERRUPTED
    else:
        state = FAILED

    output = (plan or {}).get("output") or {}
    lora_file = _str(output.get("lora_file"))
    total = fold.total_steps
    if total is None:
        total = _int(((plan or {}).get("steps") or {}).get("max_train_steps"), None)

    seconds_per_step = None
    if fold.rate:
        seconds_per_step = fold.rate if fold.rate_unit == "s/it" else 1.0 / fold.rate
    eta = fold.eta_s
    if eta is None and seconds_per_step is not None and fold.step is not None and total is not None:
        eta = max(0, total - fold.step) * seconds_per_step

    can_resume = fold.last_state is not None and (
        state in (STALLED, INTERRUPTED) or (state == FAILED and fold.outcome in STOPPED_OUTCOMES)
    )
    return RunStatus(
        run_dir=str(run_dir),
        state=state,
        phase=fold.phase,
        step=fold.step,
        total_steps=total,
        rate=fold.rate,
        rate_unit=fold.rate_unit,
        seconds_per_step=seconds_per_step,
        elapsed_s=fold.elapsed_s,
        eta_s=eta,
        avr_loss=fold.avr_loss,
        lr=fold.lr,
        epoch=fold.epoch,
        epochs=fold.epochs,
        last_checkpoint=fold.last_checkpoint,
        last_state=fold.last_state,
        last_sample=fold.last_sample,
        samples=fold.samples,
        last_warning=fold.last_warning,
        warnings=fold.warnings,
        last_error=fold.last_error,
        outcome=fold.outcome,
        exit_code=fold.exit_code,
        returncode=fold.returncode,
        segments=fold.segments,
        started_at=fold.started_at,
        last_event_at=fold.last_event_at,
        seconds_since_last_event=since_event,
        seconds_since_output=since_output,
        stale_after_s=stale_after_s,
        preset=_str(((plan or {}).get("preset") or {}).get("name")),
        lora_file=lora_file,
        lora_exists=bool(lora_file) and Path(lora_file).is_file(),
        resumable=can_resume,
        resume_command=f"kohya-wrap train --resume {shlex.quote(str(run_dir))}" if can_resume else None,
        unreadable_lines=fold.unreadable_lines,
    )


def _check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory",
                          "give the folder `kohya-wrap train` printed when it started (RUNS_DIR/<run name>)")
    if not (run_dir / EVENTS_FILE).exists() and not (run_dir / PLAN_FILE).exists():
        raise RunDirError(f"{run_dir} is not a run directory: it holds neither {PLAN_FILE} nor {EVENTS_FILE}",
                          "give the folder `kohya-wrap train` printed when it started (RUNS_DIR/<run name>)")
    return run_dir


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: cannot be read as JSON ({e})",
                          "the run directory is damaged; `kohya-wrap status` reads it, never writes it") from e
    return data if isinstance(data, dict) else None


def _finite_or_name(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any, default: int | None) -> int | None:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return default


def _parse_time(t: str) -> float | None:
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_duration(seconds: float | None) -> str:
    """1h02m, 4m05s, 12s; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"

