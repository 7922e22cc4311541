"""One view of a run: its plan, run.json, the fold of its events and its lock, loaded once.

`status`, the report, the runs table, `train`'s result and the sweep's status all read a run through
RunView, so they agree on what it is: how many steps it trains to (`total_steps`), where it stands
(`state`), whether `train --resume` can continue it (`resumable`) and the command that does
(`resume_command`). Each is defined here and nowhere else.

score.json is not part of the view: it belongs to `score`, which comes after train in the flow, and
train builds its own result as a RunView. status and the report, which come after score, read it there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kohya_wrap.codec import parse_time
from kohya_wrap.errors import RunDirError
from kohya_wrap.events import ENDED_WELL, Outcome
from kohya_wrap.rundir.fold import RunFold, SavedFile, resume_command
from kohya_wrap.rundir.layout import EVENTS_JSONL, PLAN_JSON, paths
from kohya_wrap.rundir.lock import LockHolder, lock_holder
from kohya_wrap.rundir.manifest import RunManifest, read_manifest
from kohya_wrap.rundir.plan_record import Plan, read_plan, trained_to_the_end

if TYPE_CHECKING:
    from kohya_wrap.sdscripts.resume import SavedState

RunState = Literal["planned", "running", "stalled", "finished", "interrupted", "failed"]
PLANNED: RunState = "planned"
RUNNING: RunState = "running"
STALLED: RunState = "stalled"  # no process trains it and its end was never recorded
FINISHED: RunState = "finished"  # finished, or stopped early by live scoring
INTERRUPTED: RunState = "interrupted"
FAILED: RunState = "failed"
DONE_STATES: frozenset[RunState] = frozenset({FINISHED, INTERRUPTED, FAILED})

# outcomes (the `finished` event) after which `train --resume` can continue from a saved state
STOPPED_OUTCOMES: frozenset[Outcome] = frozenset({"interrupted", "killed", "oom", "crashed", "nan"})

# Loading SD1.5 and caching latents can be silent for minutes, and train.log is checked too,
# so ten minutes without a line of output is well past anything a live run does.
DEFAULT_STALE_AFTER_S = 600.0


_WHICH_RUN = "give the folder `kohya-wrap train` printed when it started (RUNS_DIR/<run name>)"


@dataclass(frozen=True)
class RunView:
    """A run as it stands: what was planned, what its events say, what run.json recorded, who holds it.

    Build it with `load` (a run directory) or `of` (a plan and a fold already in hand: train's own
    result, status --follow's incremental fold).
    """

    plan: Plan
    fold: RunFold
    where: Path | None = None  # the run directory as it was given (plan.run_dir is resolved)
    manifest: RunManifest | None = None
    holder: LockHolder | None = None  # who holds the run's lock now; None: nobody
    lock_file: bool = False  # the run has a lock file: running or stopped is read from the lock
    started: bool = False  # a training attempt began here (attempt_started)
    seconds_since_event: float | None = None
    seconds_since_output: float | None = None  # train.log's age
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    unreadable_lines: int = 0
    disk_state: SavedFile | None = field(default=None)  # the newest complete state folder in output/

    @staticmethod
    def load(run_dir: Path, *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunView:
        """The run in `run_dir` (`now`: a time.time() value, for tests). RunDirError for no run directory."""
        from kohya_wrap.events import read_events

        run = check_run_dir(run_dir)
        fold = RunFold()
        events = paths(run).events
        if events.is_file():
            fold.feed_all(read_events(events))
        return RunView.of(load_plan(run), fold, where=run, now=now, stale_after_s=stale_after_s)

    @staticmethod
    def of(
        plan: Plan,
        fold: RunFold,
        *,
        where: Path | None = None,
        now: float | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        unreadable_lines: int = 0,
        manifest: RunManifest | None = None,
        read_lock: bool = True,
    ) -> RunView:
        """The view of `plan`'s run directory with the events folded so far; the rest is read from the folder:
        run.json unless `manifest` is given, the lock unless read_lock=False (train's own view of the run
        it has just trained, whose lock it still holds)."""
        files = paths(plan.run_dir)
        now = time.time() if now is None else now
        view = RunView(
            plan=plan,
            fold=fold,
            where=where,
            manifest=manifest if manifest is not None else read_manifest(files.run_json),
            holder=lock_holder(plan.run_dir) if read_lock else None,
            lock_file=files.lock.exists(),
            started=attempt_started(plan),
            seconds_since_event=_since(fold.last_event_at, now),
            seconds_since_output=_age(files.train_log, now),
            stale_after_s=stale_after_s,
            unreadable_lines=unreadable_lines,
        )
        return replace(view, disk_state=_disk_state(view)) if view.stopped else view

    # -- what the run is: each defined once -------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.where if self.where is not None else self.plan.run_dir

    @property
    def outcome(self) -> Outcome | None:
        """How the latest attempt ended, None while it runs or when its end was never recorded.

        The events say it; where they do not and no process holds the run, run.json (written at every
        attempt's end) does when the events were lost or it ended well (a damaged events.jsonl must not
        make a finished run look resumable).
        """
        if self.fold.finished is not None:
            return self.fold.finished.outcome
        if self.holder is not None or self.manifest is None or not self.manifest.outcome:
            return None
        if self.fold.segments == 0 or self.manifest.outcome in ENDED_WELL:
            return self.manifest.outcome
        return None

    @property
    def exit_code(self) -> int | None:
        if self.fold.finished is not None:
            return self.fold.finished.exit_code
        return self.manifest.exit_code if self.manifest is not None and self.outcome is not None else None

    @property
    def state(self) -> RunState:
        outcome = self.outcome
        if outcome in ENDED_WELL:
            return FINISHED
        if outcome in ("interrupted", "killed"):
            return INTERRUPTED
        if outcome is not None:
            return FAILED
        if self.holder is not None:
            return RUNNING
        if self.fold.segments == 0 and not self.started:
            return PLANNED
        if self.lock_file:
            return STALLED  # the lock is free: no process trains this run any more
        # a run directory without a lock file (another machine, an older kohya-wrap): its last sign of life
        quiet = [s for s in (self.seconds_since_event, self.seconds_since_output) if s is not None]
        return STALLED if not quiet or min(quiet) > self.stale_after_s else RUNNING

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES

    @property
    def stopped(self) -> bool:
        """Stopped before its end: no process trains it, and what it did so far stays."""
        state = self.state
        return state in (STALLED, INTERRUPTED) or (state == FAILED and self.outcome in STOPPED_OUTCOMES)

    @property
    def total_steps(self) -> int | None:
        """The step the run trains to: the trainer's own count in its latest attempt; before the trainer said
        it, the end run.json recorded for an extension (`train --extend`); else the plan's."""
        if self.fold.total_steps is not None:
            return self.fold.total_steps
        extended_to = extended_to_step(self.manifest)
        return extended_to if extended_to is not None else self.plan.max_train_steps

    @property
    def step(self) -> int | None:
        return self.fold.step

    @property
    def percent(self) -> float | None:
        step, total = self.step, self.total_steps
        return None if step is None or not total else 100.0 * step / total

    @property
    def eta_s(self) -> float | None:
        """The trainer's ETA, else the steps left at the current speed."""
        progress, per_step, total = self.fold.last_progress, self.fold.seconds_per_step, self.total_steps
        if progress is not None and progress.eta_s is not None:
            return progress.eta_s
        if per_step is None or progress is None or total is None:
            return None
        return max(0, total - progress.step) * per_step

    @property
    def last_state(self) -> SavedFile | None:
        """The newest saved state: as the events recorded it, else as output/ holds it (events lost)."""
        return self.here(self.fold.last_state) or self.disk_state

    @property
    def not_resumable(self) -> str | None:
        """Why `train --resume` would refuse this stopped run (None while it runs or when it would not)."""
        if not self.stopped:
            return None
        return resume_point(self.plan, {s.path: s.step for s in self.fold.states if s.step is not None})[1]

    @property
    def resumable(self) -> bool:
        """`train --resume` continues it: stopped, with a saved state it can continue from, or the trainer
        finished without saving states and its end was never recorded (`train --resume` records it)."""
        return self.stopped and self.not_resumable is None

    @property
    def resume_command(self) -> str | None:
        return resume_command(self.run_dir) if self.resumable else None

    @property
    def lora_file(self) -> Path | None:
        """The final LoRA, when it is there and complete (a file cut short by a kill mid-save is no output)."""
        from kohya_wrap.safetensors_header import incomplete

        path = self.plan.lora_file
        return path if path.is_file() and incomplete(path) is None else None

    def here(self, saved: SavedFile | None) -> SavedFile | None:
        """A file the trainer reported where the run was planned, where it is now: a copied or moved run
        directory holds its own copy (the events keep the absolute paths of the trainer's lines)."""
        planned_at = self.plan.planned_at
        if saved is None or planned_at is None:
            return saved
        path = Path(saved.path)
        if planned_at not in path.parents:
            return saved
        return replace(saved, path=str(self.run_dir / path.relative_to(planned_at)))


def extended_to_step(manifest: RunManifest | None) -> int | None:
    """The step `train --extend` last extended the run to, as run.json records it."""
    if manifest is None:
        return None
    return manifest.steps.extended_to


def check_run_dir(run_dir: Path) -> Path:
    """`run_dir` as an absolute path; RunDirError saying what is missing when it is no run directory."""
    run = Path(run_dir).absolute()
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory", _WHICH_RUN)
    if not (run / PLAN_JSON).exists():
        # status, report, export and score all need the plan: events alone say nothing of what was planned
        what = (
            f"{EVENTS_JSONL} but no {PLAN_JSON}"
            if (run / EVENTS_JSONL).exists()
            else f"neither {PLAN_JSON} nor {EVENTS_JSONL}"
        )
        raise RunDirError(f"{run} is not a run directory: it holds {what}", _WHICH_RUN)
    return run


def load_plan(run_dir: Path) -> Plan:
    """The run's plan; a damaged plan.json is an error that says readers never repair it."""
    try:
        return read_plan(run_dir)
    except RunDirError as e:
        raise RunDirError(e.message, "the run directory is damaged; reading a run never writes to it") from None


def resume_point(plan: Plan, known_state_steps: dict[str, int]) -> tuple[SavedState | None, str | None]:
    """Where `train --resume` would continue the run once stopped, and why it would refuse (None: it would
    not). No state and no refusal: the trainer finished without saving states, and --resume records its end.
    known_state_steps: the saved states' steps as the events recorded them."""
    from kohya_wrap.sdscripts.resume import latest_state, resume_problem

    state = latest_state(plan.output_dir, plan.output_name, known_state_steps)
    if state is None:
        no_state = f"it stopped before its first save: {plan.output_dir} holds no saved state"
        return None, None if trained_to_the_end(plan) else no_state
    return state, None if state.is_final else resume_problem(state, plan.steps.steps_per_epoch or 0)


def _disk_state(view: RunView) -> SavedFile | None:
    from kohya_wrap.sdscripts.resume import latest_state

    known = {s.path: s.step for s in view.fold.states if s.step is not None}
    state = latest_state(view.plan.output_dir, view.plan.output_name, known)
    return SavedFile(str(state.path), state.step) if state is not None else None


def attempt_started(plan: Plan) -> bool:
    """A training attempt began here: events.jsonl or train.log exists, or output/ holds a file (what `train`
    refuses to start over, and what makes a run without events more than planned)."""
    files = paths(plan.run_dir)
    if files.events.exists() or files.train_log.exists():
        return True
    try:
        return any(p.is_file() for p in plan.output_dir.rglob("*"))
    except OSError:
        return False


def _since(text: str | None, now: float) -> float | None:
    if text is None:
        return None
    try:
        when = parse_time(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, now - when.timestamp())


def _age(path: Path, now: float) -> float | None:
    try:
        return max(0.0, now - path.stat().st_mtime)
    except OSError:
        return None
