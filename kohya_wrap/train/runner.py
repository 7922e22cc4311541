"""Run a planned training: launch, follow, stop safely, classify, verify, record.

run_training(run_dir) launches the plan's command through kohya_wrap.process, turns the trainer's
output into events (kohya_wrap.sdscripts.output), appends them to RUN_DIR/events.jsonl and hands
them to on_event for rendering, keeps the raw output in RUN_DIR/train.log, stops the run when the
loss becomes NaN (unless allow_nan), classifies how it ended (train.outcome), verifies the LoRA and
writes RUN_DIR/run.json whatever the outcome.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from kohya_wrap.errors import RunDirError
from kohya_wrap.events import (
    Checkpoint, Error, Event, EventWriter, Finished, Phase, Progress, Sample, StateSaved, Warning_, read_events, to_dict,
)
from kohya_wrap.models import ensure_base_model, ensure_tokenizer
from kohya_wrap.process import ProcessResult, Streamer, child_env
from kohya_wrap.sdscripts.command import base_model_args
from kohya_wrap.sdscripts.lora_file import LoraReport
from kohya_wrap.sdscripts.output import OutputParser
from kohya_wrap.sdscripts.samples import SAMPLE_DIR_NAME, parse_sample_name
from kohya_wrap.sdscripts.resume import SavedState, latest_state, read_state, resume_args, resume_problem
from kohya_wrap.train import manifest as manifest_mod
from kohya_wrap.train.job import TrainJob, load_job
from kohya_wrap.train.outcome import ADVICE, EXIT_CODES, classify
from kohya_wrap.train.verify import verify_run

TAIL_LINES = 40


@dataclass(frozen=True)
class TrainOptions:
    allow_nan: bool = False
    resume: bool = False
    verify: bool = True


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    outcome: str
    exit_code: int
    returncode: int | None
    advice: str
    lora_file: Path | None
    verification: LoraReport | None
    last_step: int | None
    total_steps: int | None
    final_loss: float | None
    mean_it_per_s: float | None
    last_checkpoint: str | None
    last_state: SavedState | None
    resume_command: str | None
    resumed_from: str | None
    errors: tuple[Error, ...]
    tail: tuple[str, ...]
    log_path: Path
    events_path: Path
    manifest_path: Path
    output_name: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedRun:
    """Everything decided before the trainer starts: what `--dry-run` prints and run_training launches."""

    job: TrainJob
    argv: tuple[str, ...]
    state: SavedState | None  # the state a resume continues from
    prior: dict[str, Any] | None  # run.json of earlier attempts
    base_model_path: Path | None  # what sd-scripts loads (a hub model may have been fetched again)
    notes: tuple[str, ...] = ()  # what changed since the plan, said before the run starts


def resume_command(run_dir: Path) -> str:
    return f"kohya-wrap train --resume {shlex.quote(str(run_dir))}"


def _known_state_steps(events_path: Path) -> dict[str, int]:
    """Steps of saved states as our events recorded them (corrected for SPEC 8.8's relative counter)."""
    known: dict[str, int] = {}
    if events_path.is_file():
        for event in read_events(events_path):
            if isinstance(event, StateSaved) and event.step is not None:
                known[event.path] = event.step
    return known


def check_run_dir(job: TrainJob, resume: bool) -> tuple[SavedState | None, dict[str, Any] | None]:
    """Refuse what would overwrite or confuse; for a resume, the state to continue from."""
    prior = manifest_mod.read_manifest(job.manifest_path)
    if prior and prior.get("outcome") == "finished":
        raise RunDirError(
            f"{job.run_dir} holds a finished run; finished runs are never overwritten.",
            "Plan a new run (a new directory) to train again.",
        )
    if not resume:
        started = job.events_path.exists() or job.log_path.exists() or (
            job.output_dir.is_dir() and any(job.output_dir.iterdir()))
        if started:
            raise RunDirError(
                f"{job.run_dir} already holds a training attempt (train.log / events.jsonl / output/).",
                f"Continue it with `{resume_command(job.run_dir)}`, or plan a new run.",
            )
        return None, prior
    state = latest_state(job.output_dir, job.output_name, _known_state_steps(job.events_path))
    if state is None:
        raise RunDirError(
            f"{job.run_dir} has no saved state to resume from (no {job.output_name}-*-state folder in {job.output_dir}).",
            "The run stopped before its first save; start it again with a new plan.",
        )
    if state.is_final:
        raise RunDirError(
            f"{job.run_dir} finished training already ({state.path.name} is the end-of-training state).",
            "Nothing to resume; plan a new run to train again.",
        )
    problem = resume_problem(state, int(job.plan.steps.get("steps_per_epoch") or 0))
    if problem:
        raise RunDirError(
            f"{job.run_dir} cannot be resumed: {problem}.",
            "Its checkpoints so far stay in output/; plan a new run to train again. kohya-wrap's presets plan "
            "one epoch so that their runs resume safely; this one has several (--repeats or max_train_epochs).",
        )
    return state, prior


def _models(job: TrainJob, fetch: bool) -> tuple[list[str], Path | None, list[str]]:
    """Arguments for a model that moved since the plan, the model file, and notes.

    A hub model or kohya-wrap's tokenizer cache that was cleared (a new Colab runtime) is fetched
    again; a local file that is gone stops the run before it starts (exit 11).
    """
    args: list[str] = []
    notes: list[str] = []
    base = job.plan.base_model
    path = job.base_model_path
    if path is not None and not path.exists():
        source, kind = str(base.get("source")), str(base.get("kind"))
        if fetch or kind != "hub":
            new = ensure_base_model(source, path, kind)
            if new != path:
                args += base_model_args(new)
                notes.append(f"base model {source} fetched again: {new}")
            path = new
        else:
            notes.append(f"base model {source}: its cached file {path} is gone; train fetches it again")
    tokenizer = job.plan.tokenizer_cache_dir
    if tokenizer and fetch:
        ensure_tokenizer(Path(tokenizer))
    return args, path, notes


def prepare_run(run_dir: Path, *, resume: bool = False, fetch_models: bool = True) -> PreparedRun:
    """Check the run directory and the models, and build the exact command; nothing is started.

    fetch_models=False (a dry run) only says what would be fetched again.
    """
    job = load_job(run_dir)
    state, prior = check_run_dir(job, resume)
    argv = list(job.argv)
    if state is not None:
        recorded = _state_file_step(state.path)
        argv += resume_args(state.path, initial_step=state.step if recorded != state.step else None)
    model_args, base_path, notes = _models(job, fetch_models)
    argv += model_args
    return PreparedRun(job=job, argv=tuple(argv), state=state, prior=prior, base_model_path=base_path, notes=tuple(notes))


@dataclass
class _Follow:
    """What the runner learns from the events of this attempt."""

    first_progress: Progress | None = None
    last_progress: Progress | None = None
    final_loss: float | None = None
    last_checkpoint: Checkpoint | None = None
    last_state: StateSaved | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    states: list[StateSaved] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)
    seen_samples: set[str] = field(default_factory=set)


def run_training(
    run_dir: Path,
    options: TrainOptions = TrainOptions(),
    on_event: Callable[[Event], None] | None = None,
    on_signal: Callable[[int, int], None] | None = None,
    on_saved: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train a planned run directory.

    on_saved(run_dir) runs after each checkpoint and once more after run.json is written (the CLI
    writes the report there); its failure becomes a warning, never a failed run.
    """
    prepared = prepare_run(run_dir, resume=options.resume)
    job, state, prior, argv = prepared.job, prepared.state, prepared.prior, list(prepared.argv)
    job.output_dir.mkdir(parents=True, exist_ok=True)

    follow = _Follow(seen_samples=_existing_samples(job.output_dir))
    parser = OutputParser()
    hasher = manifest_mod.FileHasher(prepared.base_model_path)
    probe = manifest_mod.EnvironmentProbe(manifest_mod.trainer_python(job.argv))
    started_at = datetime.now(timezone.utc)
    writer = EventWriter(job.events_path)
    streamer: Streamer | None = None

    def emit(event: Event) -> None:
        writer.write(event)
        _learn(follow, event)
        if on_event is not None:
            on_event(event)
        if isinstance(event, Checkpoint) and on_saved is not None:
            problem = _call_saved_hook(on_saved, job.run_dir)
            if problem:
                emit(Warning_(message=problem))

    for note in prepared.notes:
        emit(Warning_(message=note))

    def handle(events: list[Event]) -> None:
        for event in events:
            emit(event)
            if isinstance(event, Error) and event.kind == "nan" and not options.allow_nan and streamer is not None:
                streamer.stop("nan")
            if isinstance(event, Phase) and event.phase != "sampling":
                _emit_samples(job, follow, emit)

    def on_output(stream: str, data: bytes) -> None:
        handle(parser.feed(stream, data))

    def on_idle() -> None:
        handle(parser.flush())

    result: ProcessResult | None = None
    outcome = "crashed"
    verification: LoraReport | None = None
    completed = False
    try:
        streamer = Streamer(argv, env=child_env(job.env), cwd=job.cwd, log_path=job.log_path,
                            on_output=on_output, on_idle=on_idle, on_signal=on_signal)
        try:
            result = streamer.run()
        finally:
            handle(parser.close())
            _emit_samples(job, follow, emit)
        lora_written = job.lora_file.is_file() and job.lora_file.stat().st_mtime >= started_at.timestamp() - 1
        outcome = classify(result.returncode, result.stop_reason, follow.errors, lora_written)
        if outcome == "finished" and options.verify:
            verification = verify_run(job, hasher.wait())
            if not verification.ok:
                outcome = "verify_failed"
        completed = True
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        exit_code = int(EXIT_CODES[outcome])
        finished = Finished(outcome=outcome, exit_code=exit_code, returncode=result.returncode if result else None)
        if completed:
            emit(finished)
        else:
            writer.write(finished)  # an exception is on its way: record the end, but do not render it
        writer.close()
        ended_at = datetime.now(timezone.utc)
        last = latest_state(job.output_dir, job.output_name, _known_state_steps(job.events_path))
        manifest = _manifest(job, argv, prior, state, follow, outcome, exit_code, result,
                             started_at, ended_at, hasher, probe, verification, parser)
        manifest_mod.write_manifest(job.manifest_path, manifest)

    warnings = list(prepared.notes)
    if on_saved is not None:
        problem = _call_saved_hook(on_saved, job.run_dir)
        if problem:
            warnings.append(problem)
    last_progress = follow.last_progress
    return TrainResult(
        run_dir=job.run_dir, outcome=outcome, exit_code=exit_code,
        returncode=result.returncode if result else None, advice=ADVICE.get(outcome, ""),
        lora_file=job.lora_file if job.lora_file.is_file() else None, verification=verification,
        last_step=last_progress.step if last_progress else None,
        total_steps=job.max_train_steps or (last_progress.total if last_progress else None),
        final_loss=follow.final_loss, mean_it_per_s=_mean_rate(follow),
        last_checkpoint=follow.last_checkpoint.path if follow.last_checkpoint else _latest_checkpoint(job),
        last_state=last if last is not None and not last.is_final else None,
        resume_command=resume_command(job.run_dir) if last is not None and not last.is_final else None,
        resumed_from=str(state.path) if state else None,
        errors=tuple(follow.errors), tail=tuple(parser.recent_lines[-TAIL_LINES:]),
        log_path=job.log_path, events_path=job.events_path, manifest_path=job.manifest_path,
        output_name=job.output_name, warnings=tuple(warnings),
    )


def _call_saved_hook(hook: Callable[[Path], None], run_dir: Path) -> str | None:
    try:
        hook(run_dir)
    except Exception as e:  # noqa: BLE001  a report that cannot be written must not fail the training
        return f"after saving: {type(e).__name__}: {e}"
    return None


def _state_file_step(path: Path) -> int | None:
    state = read_state(path)
    return state.step if state else None


def _learn(follow: _Follow, event: Event) -> None:
    if isinstance(event, Progress):
        if follow.first_progress is None:
            follow.first_progress = event
        follow.last_progress = event
        if event.avr_loss is not None:
            follow.final_loss = event.avr_loss
    elif isinstance(event, Checkpoint):
        follow.last_checkpoint = event
        follow.checkpoints.append(event)
    elif isinstance(event, StateSaved):
        follow.last_state = event
        follow.states.append(event)
    elif isinstance(event, Sample):
        follow.samples.append(event)
    elif isinstance(event, Error):
        follow.errors.append(event)


def _existing_samples(output_dir: Path) -> set[str]:
    folder = output_dir / SAMPLE_DIR_NAME
    return {str(p) for p in folder.glob("*.png")} if folder.is_dir() else set()


def _emit_samples(job: TrainJob, follow: _Follow, emit: Callable[[Event], None]) -> None:
    """sd-scripts does not print where samples go: look for new images in output/sample/."""
    folder = job.output_dir / SAMPLE_DIR_NAME
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime):
        if str(path) in follow.seen_samples:
            continue
        follow.seen_samples.add(str(path))
        name = parse_sample_name(path.name)
        emit(Sample(path=str(path), step=name.step if name else None, prompt_index=name.prompt_index if name else None))


def _mean_rate(follow: _Follow) -> float | None:
    first, last = follow.first_progress, follow.last_progress
    if first is None or last is None or last.elapsed_s <= 0:
        return None
    steps = max(last.step - first.step, 0)
    return steps / last.elapsed_s if steps else None


def _latest_checkpoint(job: TrainJob) -> str | None:
    files = sorted(job.output_dir.glob(f"{job.output_name}*.safetensors"), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else None


def _finite(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _manifest(job: TrainJob, argv: list[str], prior: dict[str, Any] | None, state: SavedState | None,
              follow: _Follow, outcome: str, exit_code: int, result: ProcessResult | None,
              started_at: datetime, ended_at: datetime, hasher: manifest_mod.FileHasher,
              probe: manifest_mod.EnvironmentProbe, verification: LoraReport | None,
              parser: OutputParser) -> dict[str, Any]:
    attempt = {
        "started_at": started_at.isoformat(), "ended_at": ended_at.isoformat(),
        "duration_s": round((ended_at - started_at).total_seconds(), 3),
        "outcome": outcome, "exit_code": exit_code,
        "returncode": result.returncode if result else None,
        "stop_reason": result.stop_reason if result else None,
        "resumed_from": str(state.path) if state else None,
        "resumed_at_step": state.step if state else None,
        "argv": argv,
    }
    attempts = list((prior or {}).get("attempts") or []) + [attempt]
    checkpoints = [manifest_mod.file_entry(Path(c.path), c.step) for c in follow.checkpoints]
    # checkpoints of earlier attempts that still exist keep their entries
    for old in (prior or {}).get("checkpoints") or []:
        if old.get("path") not in {c["path"] for c in checkpoints} and Path(old.get("path", "")).is_file():
            checkpoints.insert(0, manifest_mod.file_entry(Path(old["path"]), old.get("step")))
    last = follow.last_progress
    started_first = attempts[0]["started_at"]
    base_sha = hasher.wait() if outcome not in ("interrupted",) else hasher.result
    base_path = hasher.path
    return {
        "run_dir": str(job.run_dir),
        "outcome": outcome,
        "exit_code": exit_code,
        "started_at": started_first,
        "ended_at": ended_at.isoformat(),
        "preset": {"name": job.plan.preset_name, "sha256": job.plan.preset_sha256},
        "values": job.values,
        "value_sources": job.value_sources,
        "dataset_manifest_sha256": job.plan.manifest_sha256,
        "base_model": {"path": str(base_path) if base_path else
                       job.plan.base_model.get("source"), "sha256": base_sha},
        "sd_scripts": {"path": job.plan.sd_scripts.get("path"), "commit": job.plan.sd_scripts.get("commit")},
        "environment": probe.wait(),
        "steps": {"planned": job.max_train_steps, "reached": last.step if last else None,
                  "trainer_total": parser.total_steps},
        "mean_it_per_s": round(_mean_rate(follow), 4) if _mean_rate(follow) else None,
        "final_loss": _finite(follow.final_loss),
        "checkpoints": checkpoints,
        "states": [{"path": s.path, "step": s.step} for s in follow.states],
        "samples": [{"path": s.path, "step": s.step, "prompt_index": s.prompt_index} for s in follow.samples],
        "lora": manifest_mod.file_entry(job.lora_file, job.max_train_steps) if job.lora_file.is_file() else None,
        "verification": None if verification is None else {
            "ok": verification.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in verification.checks],
        },
        "errors": [to_dict(e) for e in follow.errors],
        "attempts": attempts,
    }
