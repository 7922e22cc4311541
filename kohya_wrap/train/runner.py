"""Run a planned training: launch, follow, stop safely, classify, verify, record.

run_training(run_dir) launches the plan's command through kohya_wrap.process, turns the trainer's
output into events (kohya_wrap.sdscripts.output), appends them to RUN_DIR/events.jsonl and hands
them to on_event for rendering, keeps the raw output in RUN_DIR/train.log, stops the run when the
loss becomes NaN (unless allow_nan), classifies how it ended (train.outcome), verifies the LoRA and
writes RUN_DIR/run.json whatever the outcome.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import msgspec

from kohya_wrap import rundir
from kohya_wrap.codec import utc_text
from kohya_wrap.errors import DatasetGone, ExitCode, KohyaWrapError, RunDirError, disk_error
from kohya_wrap.events import (
    Checkpoint,
    Error,
    Event,
    EventWriter,
    Finished,
    Outcome,
    Phase,
    Sample,
    Score,
    StateSaved,
    StopEarly,
    Warning_,
    read_events,
)
from kohya_wrap.fsutil import atomic_write_text, reserve_space
from kohya_wrap.models import ensure_base_model, ensure_tokenizer
from kohya_wrap.process import ProcessResult, Streamer, child_env
from kohya_wrap.rundir import (
    DATASET_TOML,
    Attempt,
    BaseModelEntry,
    CheckEntry,
    CheckoutEntry,
    FileEntry,
    Plan,
    PresetEntry,
    RunFold,
    RunManifest,
    RunPaths,
    SavedEntry,
    StepsEntry,
    StoppedEarly,
    VerificationEntry,
    resume_command,
)
from kohya_wrap.rundir.view import RunView, attempt_started, extended_to_step, resume_point
from kohya_wrap.sdscripts.arguments import package_problems
from kohya_wrap.sdscripts.command import CommandFiles, CommandRequest, Fitted, trainer_command
from kohya_wrap.sdscripts.lora import LoraReport
from kohya_wrap.sdscripts.output import OutputParser
from kohya_wrap.sdscripts.resume import (
    Extension,
    SavedState,
    latest_state,
    plan_extension,
    saved_states,
    step_checkpoint_name,
)
from kohya_wrap.sdscripts.samples import checkpoint_files, find_samples
from kohya_wrap.train import manifest as manifest_mod
from kohya_wrap.train.machine import GpuInfo, Machine, resolve_machine
from kohya_wrap.train.outcome import ADVICE, EXIT_CODES, STOP_EARLY, classify
from kohya_wrap.train.verify import verify_run

TAIL_LINES = 40


@dataclass(frozen=True)
class TrainOptions:
    allow_nan: bool = False
    resume: bool = False
    verify: bool = True
    sd_scripts: str | None = None  # the checkout to train with (else $KOHYA_WRAP_SD_SCRIPTS, else the submodule)
    gpu_info: GpuInfo | None = None  # the GPUs found (tests); None: detected
    extend: int | None = None  # `train --extend STEPS`: continue a finished or early-stopped run by STEPS


class Companion(Protocol):
    """Work that goes on beside the trainer (the pipeline's live scoring); train knows it only as this.

    notice() sees every event train records, poll() hands back events of its own to record (never
    blocking), and a StopEarly among them stops the trainer the way Ctrl-C does. close() ends it
    when the trainer has ended and returns what it still had.
    """

    def notice(self, event: Event) -> None: ...

    def poll(self) -> Sequence[Event]: ...

    def close(self) -> Sequence[Event]: ...


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    outcome: Outcome
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
    report_path: Path | None = None  # the report, when the on_saved hook wrote one
    stopped_early: StoppedEarly | None = None  # as run.json records it, when live scoring stopped the run
    not_resumable: str | None = None  # why `train --resume` would refuse this stopped run (then no resume_command)


@dataclass(frozen=True)
class PreparedRun:
    """Everything decided before the trainer starts: what `--dry-run` prints and run_training launches."""

    plan: Plan
    files: RunPaths
    machine: Machine
    argv: tuple[str, ...]
    env: dict[str, str]  # added to the environment of the trainer
    accelerate_config: str  # the text written to RUN_DIR/accelerate.yaml before the launch
    gpu_dataset_toml: str | None  # RUN_DIR/dataset.gpu.toml's text, when train chose a smaller batch for the GPU
    state: SavedState | None  # the state a resume continues from
    prior: RunManifest | None  # run.json of earlier attempts
    base_model_path: Path | None  # what sd-scripts loads (a hub model may have been fetched again)
    notes: tuple[str, ...] = ()  # what changed since the plan, said before the run starts
    # --resume of a run whose trainer finished but whose end was never recorded: record it, train nothing
    record_only: bool = False
    dataset_toml: str | None = None  # dataset.toml rewritten for a moved run directory, written before the launch
    extension: Extension | None = None  # `train --extend`: where it continues from and to which step
    extend_dataset_toml: str | None = None  # the text written to RUN_DIR/dataset-extend.toml before the launch

    @property
    def total_steps(self) -> int:
        """The step this attempt trains to: the plan's, or the extension's new end."""
        return self.extension.total_steps if self.extension is not None else self.plan.max_train_steps


def _known_state_steps(events_path: Path) -> dict[str, int]:
    """Steps of saved states as our events recorded them (sd-scripts' own counter restarts inside an
    epoch after a resume: docs/sd-scripts.md#step-counter-after-a-resume)."""
    known: dict[str, int] = {}
    if events_path.is_file():
        for event in read_events(events_path):
            if isinstance(event, StateSaved) and event.step is not None:
                known[event.path] = event.step
    return known


def check_run_dir(plan: Plan, files: RunPaths, resume: bool) -> tuple[SavedState | None, RunManifest | None]:
    """Refuse what would overwrite or confuse; for a resume, the state to continue from."""
    prior = rundir.read_manifest(files.run_json)
    if prior and prior.outcome == "stopped_early":
        raise RunDirError(
            f"{plan.run_dir} stopped early: live scoring found that more training would not help.",
            f"Continue it anyway with `kohya-wrap train --extend STEPS {plan.run_dir}`.",
        )
    if prior and prior.finished:
        raise RunDirError(
            f"{plan.run_dir} holds a finished run; finished runs are never overwritten.",
            "Plan a new run (a new directory) to train again.",
        )
    if not resume:
        if attempt_started(plan):
            why = why_not_resumable(plan, files)
            raise RunDirError(
                f"{plan.run_dir} already holds a training attempt (train.log / events.jsonl / output/).",
                f"Continue it with `{resume_command(plan.run_dir)}`, or plan a new run."
                if why is None
                else f"It cannot be resumed: {why}; plan a new run (a new directory) to train again.",
            )
        return None, prior
    # the one rule status applies too (RunView.not_resumable). A final state, or none from a trainer that
    # finished without saving states: run.json does not say it finished (kohya-wrap was killed between the
    # final save and run.json); `train --resume` records it (_record_finished) and trains nothing again.
    state, refusal = resume_point(plan, _known_state_steps(files.events))
    if refusal is not None:
        several_epochs = state is not None  # a state past the first epoch (resume_problem)
        raise RunDirError(
            f"{plan.run_dir} cannot be resumed: {refusal}.",
            "Its checkpoints so far stay in output/; plan a new run to train again."
            + (
                " kohya-wrap's presets plan one epoch so that their runs resume safely; this one has several"
                " (--repeats or max_train_epochs)."
                if several_epochs
                else ""
            ),
        )
    return state, prior


def why_not_resumable(plan: Plan, files: RunPaths) -> str | None:
    """Why `train --resume` would refuse this stopped run (check_run_dir), or None when it would continue it."""
    return resume_point(plan, _known_state_steps(files.events))[1]


def check_extension(plan: Plan, files: RunPaths, steps: int) -> tuple[Extension, RunManifest, list[str]]:
    """For `train --extend STEPS`: the run must have finished or stopped early; how it continues, and notes."""
    prior = rundir.read_manifest(files.run_json)
    if prior is None or not prior.ended_well:
        what = "has not trained yet" if prior is None else f"ended {prior.outcome}"
        hint = f"Continue a stopped run with `{resume_command(plan.run_dir)}`." if prior is not None else None
        raise RunDirError(
            f"{plan.run_dir} {what}; --extend continues a run that finished or stopped early.",
            hint or f"Train it first: `kohya-wrap train {plan.run_dir}`.",
        )
    last = prior.last_checkpoint
    if last is None or last.step is None:
        raise RunDirError(
            f"{plan.run_dir} has no LoRA file left to continue from (run.json lists none that exists).",
            "Plan a new run to train again.",
        )
    states = saved_states(plan.output_dir, plan.output_name, _known_state_steps(files.events))
    weights = Path(last.path)
    if prior.lora is not None and last.path == prior.lora.path:
        # the final file is overwritten by the extension's end: it continues from its step-named copy
        weights = plan.output_dir / step_checkpoint_name(plan.output_name, last.step)
    extension = plan_extension(
        from_step=last.step,
        steps=steps,
        weights=weights,
        states=states,
        steps_per_epoch=plan.steps.steps_per_epoch or 0,
        grad_accum=plan.steps.grad_accum or 1,
    )
    how = (
        f"from its saved state {extension.state.path.name}"
        if extension.state is not None
        else f"from its LoRA weights {weights.name} (a fresh optimizer and learning-rate warmup"
        + (
            f"; dataset repeats x{extension.repeats_factor} so sd-scripts counts the steps on)"
            if extension.repeats_factor > 1
            else ")"
        )
    )
    notes = [f"extends the run from step {last.step} to step {extension.total_steps}, {how}"]
    top = plan.ours.get("max_steps")
    if isinstance(top, int) and extension.total_steps > top:
        notes.append(
            f"step {extension.total_steps} is past the preset's range ({plan.ours.get('min_steps')}-{top} steps): "
            "likeness LoRAs trained this long often copy the photos; watch the copies column"
        )
    return extension, prior, notes


def _models(plan: Plan, fetch: bool) -> tuple[Path | None, Path | None, Path | None, list[str]]:
    """The model fetched again and the tokenizer train passes on this machine (None: config.toml's), the model
    file, and notes.

    A hub model (or one whose cached file was cleared: a new Colab runtime) is fetched here, as is
    kohya-wrap's own tokenizer cache; a local file that is gone, or holds less than its header
    declares, stops the run before it starts (exit 11). fetch=False (a dry run) only says what would be fetched.
    """
    model: Path | None = None
    tokenizer: Path | None = None
    notes: list[str] = []
    base = plan.base_model
    source, kind = base.source, str(base.kind)
    path = plan.base_model_path
    if path is None or not path.exists():
        if fetch or kind != "hub":
            new = ensure_base_model(source, path, kind)
            if new != path:
                model = new
                if path is not None:
                    notes.append(f"base model {source} fetched again: {new}")
            path = new
        elif path is None:
            notes.append(f"base model {source}: train takes it from the Hugging Face cache or downloads it")
        else:
            notes.append(f"base model {source}: its cached file {path} is gone; train fetches it again")
    else:
        ensure_base_model(source, path, kind)  # a file truncated since plan (exit 11) is refused here
    if plan.tokenizer_cache_dir is None:
        if fetch:
            tokenizer = ensure_tokenizer(None)
        else:
            notes.append("CLIP tokenizer: train takes it from kohya-wrap's cache (filled when empty)")
    elif fetch:
        ensure_tokenizer(Path(plan.tokenizer_cache_dir))
    return model, tokenizer, path, notes


def prepare_run(
    run_dir: Path,
    *,
    resume: bool = False,
    fetch_models: bool = True,
    sd_scripts: str | None = None,
    gpu_info: GpuInfo | None = None,
    extend: int | None = None,
) -> PreparedRun:
    """Check the run directory, this machine and the models, and build the exact command; nothing is started.

    fetch_models=False (a dry run) only says what would be fetched.
    """
    return prepare_launch(
        rundir.read_plan(run_dir),
        resume=resume,
        fetch_models=fetch_models,
        sd_scripts=sd_scripts,
        gpu_info=gpu_info,
        extend=extend,
    )


def prepare_launch(
    plan: Plan,
    *,
    resume: bool = False,
    fetch_models: bool = True,
    sd_scripts: str | None = None,
    gpu_info: GpuInfo | None = None,
    extend: int | None = None,
) -> PreparedRun:
    """prepare_run for a Plan, written or not (`train DATASET --dry-run` shows a plan it never writes)."""
    files = rundir.paths(plan.run_dir)
    start = _starting_point(plan, files, resume, extend)
    machine = resolve_machine(plan, sd_scripts=sd_scripts, gpu_info=gpu_info)
    _check_packages(plan)
    # check_run_dir returns no state for a resume only when the trainer finished without saving states
    record_only = resume and (start.state is None or start.state.is_final)
    gone = None if record_only else _dataset_gone(plan, raise_it=fetch_models)  # a dry run only says it
    model, tokenizer, base_path, notes = _models(plan, fetch_models)
    command = trainer_command(_command_request(plan, files, machine, start, model, tokenizer))
    notes = start.notes + ([gone] if gone else []) + notes
    if plan.planned_at is not None:
        notes.append(f"{plan.run_dir} was planned at {plan.planned_at}; it trains here, into {plan.output_dir}")
    if record_only:
        notes.append(
            f"the trainer finished already ({plan.lora_file.name}); train --resume records the run, trains nothing"
        )
    return PreparedRun(
        plan=plan,
        files=files,
        machine=machine,
        argv=command.argv,
        env=dict(plan.env),
        accelerate_config=command.accelerate_config,
        gpu_dataset_toml=command.gpu_dataset_toml,
        state=start.state,
        prior=start.prior,
        base_model_path=base_path,
        notes=(*machine.notes, *notes),
        record_only=record_only,
        dataset_toml=command.dataset_toml,
        extension=start.extension,
        extend_dataset_toml=command.extend_dataset_toml,
    )


def _dataset_gone(plan: Plan, *, raise_it: bool) -> str | None:
    """An image folder the plan trains on that is no longer there (the trainer would find no images, exit 12):
    raised, or (raise_it False: a dry run) said; None when every one is there."""
    for subset in plan.subsets:
        if not Path(subset.dir).is_dir():
            message = f"dataset folder {subset.dir} (planned for this run) no longer exists"
            if raise_it:
                raise DatasetGone(
                    message, "put the dataset back at that path, or plan the run again from where the dataset is now"
                )
            return f"{message}: train would stop here"
    return None


@dataclass(frozen=True)
class _Start:
    """Where an attempt starts: from scratch, a saved state (a resume) or a finished run's end (--extend)."""

    state: SavedState | None
    prior: RunManifest | None
    extension: Extension | None = None
    notes: list[str] = field(default_factory=list)


def _starting_point(plan: Plan, files: RunPaths, resume: bool, extend: int | None) -> _Start:
    if extend is not None:
        extension, finished, notes = check_extension(plan, files, extend)
        return _Start(None, finished, extension, notes)
    state, prior = check_run_dir(plan, files, resume)
    return _Start(state, prior)


def _command_request(
    plan: Plan, files: RunPaths, machine: Machine, start: _Start, model: Path | None, tokenizer: Path | None
) -> CommandRequest:
    """What sd-scripts' launch on this machine is built from: the plan, its files, the machine and where it starts."""
    fit = machine.fit
    return CommandRequest(
        checkout=machine.checkout.path,
        python=machine.python,
        launch=machine.launch,
        files=CommandFiles(
            files.config_toml,
            files.dataset_toml,
            files.gpu_dataset_toml,
            files.extend_dataset_toml,
            files.accelerate_config,
        ),
        values=plan.values,
        planned_dataset_toml=plan.files.get(DATASET_TOML),
        written_dataset_toml=files.dataset_toml.read_text(encoding="utf-8") if files.dataset_toml.is_file() else None,
        choose_precision=plan.auto_mixed_precision,
        fitted=None if fit is None else Fitted(fit.batch_size, fit.grad_accum, fit.gradient_checkpointing),
        resume_from=start.state,
        extension=start.extension,
        base_model=model,
        tokenizer_cache_dir=tokenizer,
        planned_at=plan.planned_at,
        run_dir=plan.run_dir,
    )


def _check_packages(plan: Plan) -> None:
    """The optimizer's package in the Python that trains: plan checked where it planned, this is where it trains."""
    problems = package_problems(plan.values)
    if problems:
        error = KohyaWrapError(f"{problems[0].keys[0]}: {problems[0].message}", problems[0].hint)
        error.exit_code = ExitCode.TRAIN_MISSING_PACKAGE
        raise error


def run_training(
    run_dir: Path,
    options: TrainOptions = TrainOptions(),
    on_event: Callable[[Event], None] | None = None,
    on_signal: Callable[[int, int], None] | None = None,
    on_saved: Callable[[Path], object] | None = None,
    companion: Callable[[Path], Companion | None] | None = None,
) -> TrainResult:
    """Train a planned run directory, holding its lock for the trainer's whole life.

    on_saved(run_dir) runs after each checkpoint and live score and once more after run.json is
    written (the CLI writes the report there); its failure becomes a warning, never a failed run.
    companion(run_dir) starts work beside the trainer once the run is checked (see Companion).
    """
    what = "train --extend" if options.extend else "train --resume" if options.resume else "train"
    hooks = _Hooks(on_event, on_signal, on_saved, companion)
    with rundir.RunLock(run_dir, what) as lock:
        return _run_locked(Path(run_dir), options, hooks, lock.fileno())


@dataclass(frozen=True)
class _Hooks:
    """What run_training's caller hands in: renderers, the signal notice, the saved hook, the companion."""

    on_event: Callable[[Event], None] | None = None
    on_signal: Callable[[int, int], None] | None = None
    on_saved: Callable[[Path], object] | None = None
    start_companion: Callable[[Path], Companion | None] | None = None


@dataclass(frozen=True)
class _Ending:
    """How an attempt ended, as train records it."""

    outcome: Outcome
    exit_code: int
    returncode: int | None
    verification: LoraReport | None
    manifest: RunManifest


def _run_locked(run_dir: Path, options: TrainOptions, hooks: _Hooks, lock_fd: int) -> TrainResult:
    prepared = prepare_run(
        run_dir,
        resume=options.resume,
        sd_scripts=options.sd_scripts,
        gpu_info=options.gpu_info,
        extend=options.extend,
    )
    if prepared.record_only:
        return _record_finished(prepared, options, hooks.on_event, hooks.on_saved)
    _write_launch_files(prepared)
    return _Training(prepared, options, hooks, lock_fd).run()


def _write_launch_files(prepared: PreparedRun) -> None:
    """What this machine trains from (accelerate's config, the datasets rewritten for it), and room for run.json."""
    files = prepared.files
    prepared.plan.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(files.accelerate_config, prepared.accelerate_config)
    if prepared.dataset_toml is not None:
        atomic_write_text(files.dataset_toml, prepared.dataset_toml)
    if prepared.gpu_dataset_toml is not None:
        atomic_write_text(files.gpu_dataset_toml, prepared.gpu_dataset_toml)
    if prepared.extend_dataset_toml is not None:
        atomic_write_text(files.extend_dataset_toml, prepared.extend_dataset_toml)
    _keep_final_lora(prepared)
    reserve_space(files.run_json_reserve, RUN_JSON_RESERVE_BYTES)


class _Training:
    """One launch of the trainer under the run's lock: its output turned into events that are recorded,
    folded, rendered and shown to the companion; its end classified, verified and written to run.json."""

    def __init__(self, prepared: PreparedRun, options: TrainOptions, hooks: _Hooks, lock_fd: int) -> None:
        self.prepared, self.options, self.hooks, self.lock_fd = prepared, options, hooks, lock_fd
        self.plan, self.files = prepared.plan, prepared.files
        self.fold = RunFold()
        self.seen_samples = {str(p) for p, _ in find_samples(self.plan.output_dir)}
        self.parser = OutputParser()
        self.hasher = manifest_mod.FileHasher(prepared.base_model_path)
        self.probe = manifest_mod.EnvironmentProbe(prepared.machine.python)
        self.started_at = datetime.now(timezone.utc)
        self.writer = EventWriter(self.files.events)
        self.streamer: Streamer | None = None
        self.companion: Companion | None = None
        self.process: ProcessResult | None = None
        self.log_error: OSError | None = None
        self.outcome: Outcome = "crashed"
        self.verification: LoraReport | None = None

    def run(self) -> TrainResult:
        for note in self.prepared.notes:
            self.emit(Warning_(message=note))
        completed = False
        try:
            self._launch()
            self._classify()
            completed = True
        except KeyboardInterrupt:
            self.outcome = "interrupted"
            raise
        finally:
            ending = self._record_end(completed)
        return _result(self.prepared, self.fold, self.parser, ending, self._warnings())

    # -- the events ---------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.writer.write(event)
        self.fold.feed(event)
        if self.hooks.on_event is not None:
            self.hooks.on_event(event)
        if self.companion is not None:
            self.companion.notice(event)
        if isinstance(event, StopEarly) and self.streamer is not None:
            self.streamer.stop(STOP_EARLY)  # as Ctrl-C: SIGINT to the trainer's group; the checkpoints so far stay
        if isinstance(event, Checkpoint):
            self.saved()

    def saved(self) -> None:
        if self.hooks.on_saved is not None:
            problem = _call_saved_hook(self.hooks.on_saved, self.plan.run_dir)
            if problem:
                self.emit(Warning_(message=problem))

    def poll_companion(self) -> None:
        if self.companion is not None:
            events = self.companion.poll()
            for event in events:
                self.emit(event)
            if any(isinstance(event, Score) for event in events):
                self.saved()  # once for a batch of live scores: the report shows them

    def emit_new_samples(self) -> None:
        """sd-scripts does not print where samples go: look for new images in output/sample/."""
        for path, name in sorted(find_samples(self.plan.output_dir), key=lambda item: item[0].stat().st_mtime):
            if str(path) not in self.seen_samples:
                self.seen_samples.add(str(path))
                self.emit(Sample(path=str(path), step=name.step, prompt_index=name.prompt_index))

    def handle(self, events: list[Event]) -> None:
        for event in events:
            self.emit(event)
            nan = isinstance(event, Error) and event.kind == "nan" and not self.options.allow_nan
            if nan and self.streamer is not None:
                self.streamer.stop("nan")
            if isinstance(event, Phase) and event.phase != "sampling":
                self.emit_new_samples()

    def on_output(self, stream: str, data: bytes) -> None:
        self.handle(self.parser.feed(stream, data))
        self.poll_companion()

    def on_idle(self) -> None:
        self.handle(self.parser.flush())
        self.poll_companion()

    # -- the steps ----------------------------------------------------------------------------------

    def _launch(self) -> None:
        """Start the companion and the trainer, and follow the trainer to its end."""
        start = self.hooks.start_companion
        self.companion = start(self.plan.run_dir) if start is not None else None
        self.streamer = Streamer(
            list(self.prepared.argv),
            env=child_env(self.prepared.env),
            cwd=self.plan.run_dir,
            log_path=self.files.train_log,
            on_output=self.on_output,
            on_idle=self.on_idle,
            on_signal=self.hooks.on_signal,
            pass_fds=(self.lock_fd,),
        )
        try:
            self.process = self.streamer.run()
        finally:
            self.handle(self.parser.close())
            self.emit_new_samples()
            self.log_error = self.streamer.log_error
            self.streamer = None  # a StopEarly from here on has no trainer to stop
            if self.companion is not None:
                ending, self.companion = self.companion, None
                for event in ending.close():
                    if not isinstance(event, StopEarly):
                        self.emit(event)

    def _classify(self) -> None:
        """The outcome from how the trainer ended; a LoRA that fails its checks makes it verify_failed."""
        assert self.process is not None
        lora = self.plan.lora_file
        lora_written = lora.is_file() and lora.stat().st_mtime >= self.started_at.timestamp() - 1
        self.outcome = classify(self.process.returncode, self.process.stop_reason, self.fold.errors, lora_written)
        if not self.options.verify:
            return
        if self.outcome == "finished":
            self.verification = verify_run(self.plan, self.hasher.wait(), steps=self.prepared.total_steps)
        elif self.outcome == "stopped_early":
            self.verification = _verify_last_checkpoint(self.prepared, self.fold, self.hasher.wait())
        if self.verification is not None and not self.verification.ok:
            self.outcome = "verify_failed"

    def _record_end(self, completed: bool) -> _Ending:
        """The Finished event and run.json, whatever happened (an exception on its way is not rendered)."""
        if self.companion is not None:
            self.companion.close()
        exit_code = int(EXIT_CODES[self.outcome])
        returncode = self.process.returncode if self.process else None
        finished = Finished(outcome=self.outcome, exit_code=exit_code, returncode=returncode)
        if completed:
            self.emit(finished)
        else:
            self.writer.write(finished)
            self.fold.feed(finished)
        self.writer.close()
        attempt = _attempt(self.prepared, self.started_at, self.outcome, exit_code, self.process)
        manifest = _manifest(self.prepared, self.fold, attempt, self.hasher, self.probe, self.verification, self.parser)
        _write_run_json(self.files, manifest)
        return _Ending(self.outcome, exit_code, returncode, self.verification, manifest)

    def _warnings(self) -> tuple[str, ...]:
        warnings = list(self.prepared.notes)
        if self.writer.lost:
            warnings.append(
                f"{self.writer.lost} events could not be written to {self.files.events}: {self.writer.last_error}"
            )
        if self.log_error is not None:
            warnings.append(f"{self.files.train_log} stopped growing: {self.log_error}")
        if self.hooks.on_saved is not None:
            problem = _call_saved_hook(self.hooks.on_saved, self.plan.run_dir)
            if problem:
                warnings.append(problem)
        return tuple(warnings)


# run.json of a long run with hundreds of checkpoints is some 100 KB; this much is set aside while training.
RUN_JSON_RESERVE_BYTES = 1 << 20


def _write_run_json(files: RunPaths, manifest: RunManifest) -> None:
    """run.json, even on a disk the trainer filled: the space set aside at the start is freed for it."""
    try:
        rundir.write_manifest(files.run_json, manifest)
    except OSError as e:
        if disk_error(e) is None or not files.run_json_reserve.is_file():
            raise
        files.run_json_reserve.unlink()
        rundir.write_manifest(files.run_json, manifest)
    files.run_json_reserve.unlink(missing_ok=True)


RECORDED_AFTER_THE_FACT = "recorded: the trainer had finished (its end-of-training state exists); nothing was trained"


def _record_finished(
    prepared: PreparedRun,
    options: TrainOptions,
    on_event: Callable[[Event], None] | None,
    on_saved: Callable[[Path], object] | None,
) -> TrainResult:
    """`train --resume` of a run whose trainer finished but whose end was never recorded: verify the
    final LoRA and write the Finished event and run.json, without starting the trainer."""
    plan, files = prepared.plan, prepared.files
    fold = RunFold()
    if files.events.is_file():
        fold.feed_all(read_events(files.events))
    hasher = manifest_mod.FileHasher(prepared.base_model_path)
    probe = manifest_mod.EnvironmentProbe(prepared.machine.python)
    started_at = datetime.now(timezone.utc)
    verification = verify_run(plan, hasher.wait()) if options.verify else None
    outcome: Outcome = "finished" if plan.lora_file.is_file() else "crashed"
    if outcome == "finished" and verification is not None and not verification.ok:
        outcome = "verify_failed"
    exit_code = int(EXIT_CODES[outcome])
    finished = Finished(outcome=outcome, exit_code=exit_code, returncode=None)
    with EventWriter(files.events) as writer:
        writer.write(finished)
    fold.feed(finished)
    if on_event is not None:
        on_event(finished)
    attempt = msgspec.structs.replace(
        _attempt(prepared, started_at, outcome, exit_code, None), stop_reason=RECORDED_AFTER_THE_FACT
    )
    parser = OutputParser()
    manifest = _manifest(prepared, fold, attempt, hasher, probe, verification, parser)
    _write_run_json(files, manifest)
    warnings = [*prepared.notes, f"{plan.run_dir}: the trainer had finished; its end is recorded now"]
    if on_saved is not None and (problem := _call_saved_hook(on_saved, plan.run_dir)):
        warnings.append(problem)
    ending = _Ending(outcome, exit_code, None, verification, manifest)
    return _result(prepared, fold, parser, ending, tuple(warnings))


def _keep_final_lora(prepared: PreparedRun) -> None:
    """Before an extension from the final LoRA: keep it under its step's name, since the extension's
    end is saved under the final name (the run's recommended checkpoint may be that one)."""
    extension, plan = prepared.extension, prepared.plan
    if extension is None or extension.weights is None or extension.weights.is_file():
        return
    if plan.lora_file.is_file():
        partial = extension.weights.with_name(extension.weights.name + ".partial")
        shutil.copyfile(plan.lora_file, partial)
        partial.replace(extension.weights)


def _verify_last_checkpoint(prepared: PreparedRun, fold: RunFold, base_sha256: str | None) -> LoraReport | None:
    """A run stopped early ends on the checkpoint its stop was decided on (a later one may have been cut
    short by the stop, as by Ctrl-C): check that file as the final LoRA is checked."""
    decided = fold.stop_early.step if fold.stop_early is not None else None
    saved = [
        c
        for c in fold.checkpoints
        if c.step is not None and Path(c.path).is_file() and (decided is None or c.step <= decided)
    ]
    if not saved:
        return None
    last = max(saved, key=lambda c: c.step or 0)
    return verify_run(prepared.plan, base_sha256, lora_file=Path(last.path), steps=last.step)


def _attempt(
    prepared: PreparedRun, started_at: datetime, outcome: Outcome, exit_code: int, result: ProcessResult | None
) -> Attempt:
    ended_at = datetime.now(timezone.utc)
    state, extension = prepared.state, prepared.extension
    # an extension continues from its own source (a state or the last LoRA); a resume from its state
    resumed_from: str | None = None
    resumed_at: int | None = None
    if extension is not None:
        resumed_from, resumed_at = str(extension.source), extension.from_step
    elif state is not None:
        resumed_from, resumed_at = str(state.path), state.step
    return Attempt(
        started_at=utc_text(started_at),
        ended_at=utc_text(ended_at),
        duration_s=round((ended_at - started_at).total_seconds(), 3),
        outcome=outcome,
        exit_code=exit_code,
        returncode=result.returncode if result else None,
        stop_reason=result.stop_reason if result else None,
        resumed_from=resumed_from,
        resumed_at_step=resumed_at,
        argv=prepared.argv,
        machine=manifest_mod.machine_entry(prepared.machine),
        extend_steps=extension.total_steps - extension.from_step if extension is not None else None,
    )


def _result(
    prepared: PreparedRun, fold: RunFold, parser: OutputParser, ending: _Ending, warnings: tuple[str, ...]
) -> TrainResult:
    """What train says of the attempt: the run's view (total steps, resumable) as it ended, and where its files are."""
    plan, files, state = prepared.plan, prepared.files, prepared.state
    view = RunView.of(plan, fold, manifest=ending.manifest, read_lock=False)  # this process holds the lock
    last = latest_state(plan.output_dir, plan.output_name, _known_state_steps(files.events))
    checkpoint = fold.last_checkpoint
    return TrainResult(
        run_dir=plan.run_dir,
        outcome=ending.outcome,
        exit_code=ending.exit_code,
        returncode=ending.returncode,
        advice=ADVICE.get(ending.outcome, ""),
        lora_file=plan.lora_file if plan.lora_file.is_file() else None,
        verification=ending.verification,
        last_step=fold.step,
        total_steps=view.total_steps,
        final_loss=fold.final_loss,
        mean_it_per_s=fold.mean_it_per_s,
        last_checkpoint=checkpoint.path if checkpoint else _latest_checkpoint(plan),
        last_state=last if view.resumable else None,
        resume_command=view.resume_command,
        resumed_from=str(state.path) if state else None,
        errors=tuple(fold.errors),
        tail=tuple(parser.recent_lines[-TAIL_LINES:]),
        log_path=files.train_log,
        events_path=files.events,
        manifest_path=files.run_json,
        output_name=plan.output_name,
        warnings=warnings,
        report_path=files.report_html if files.report_html.is_file() else None,
        stopped_early=_stopped_early(prepared, fold) if ending.outcome == "stopped_early" else None,
        not_resumable=view.not_resumable,
    )


def _call_saved_hook(hook: Callable[[Path], object], run_dir: Path) -> str | None:
    try:
        hook(run_dir)
    except Exception as e:  # noqa: BLE001  a report that cannot be written must not fail the training
        return f"after saving: {type(e).__name__}: {e}"
    return None


def _latest_checkpoint(plan: Plan) -> str | None:
    files = sorted(checkpoint_files(plan.output_dir, plan.output_name), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else None


def _manifest(
    prepared: PreparedRun,
    fold: RunFold,
    attempt: Attempt,
    hasher: manifest_mod.FileHasher,
    probe: manifest_mod.EnvironmentProbe,
    verification: LoraReport | None,
    parser: OutputParser,
) -> RunManifest:
    plan, prior = prepared.plan, prepared.prior
    attempts = (*(prior.attempts if prior else ()), attempt)
    base_sha = hasher.wait() if attempt.outcome != "interrupted" else hasher.result
    return RunManifest(
        run_dir=str(plan.run_dir),
        outcome=attempt.outcome,
        exit_code=attempt.exit_code,
        started_at=attempts[0].started_at,
        ended_at=attempt.ended_at,
        preset=PresetEntry(name=plan.preset_name, sha256=plan.preset_sha256),
        values=dict(plan.values),
        value_sources=dict(plan.sources),
        dataset_manifest_sha256=plan.manifest_sha256,
        base_model=BaseModelEntry(path=str(hasher.path) if hasher.path else plan.base_model.source, sha256=base_sha),
        sd_scripts=CheckoutEntry(path=str(prepared.machine.checkout.path), commit=prepared.machine.checkout.commit),
        machine=manifest_mod.machine_entry(prepared.machine),
        environment=probe.wait(),
        steps=_steps_record(prepared, fold, parser),
        mean_it_per_s=None if fold.mean_it_per_s is None else round(fold.mean_it_per_s, 4),
        final_loss=fold.final_loss,
        checkpoints=_checkpoint_entries(prepared, fold),
        states=tuple(SavedEntry(s.path, s.step) for s in fold.states),
        samples=tuple(SavedEntry(s.path, s.step, s.prompt_index) for s in fold.samples),
        lora=_lora_entry(prepared, attempt.outcome),
        verification=_verification_record(verification),
        score=prior.score if prior is not None and prepared.extension is None else None,
        stopped_early=_stopped_early(prepared, fold) if attempt.outcome == "stopped_early" else None,
        errors=tuple(fold.errors),
        attempts=attempts,
    )


def _steps_record(prepared: PreparedRun, fold: RunFold, parser: OutputParser) -> StepsEntry:
    """Planned, reached, the trainer's count, and the end of the latest extension (kept by later resumes)."""
    extension, prior = prepared.extension, prepared.prior
    extended_to = prepared.total_steps if extension is not None else extended_to_step(prior)
    return StepsEntry(
        planned=prepared.plan.max_train_steps,
        reached=fold.step,
        trainer_total=parser.total_steps,
        extended_to=extended_to,
    )


def _checkpoint_entries(prepared: PreparedRun, fold: RunFold) -> tuple[FileEntry, ...]:
    """This attempt's checkpoints, after those of earlier attempts that still exist."""
    checkpoints = [FileEntry.of(Path(c.path), c.step) for c in fold.checkpoints]
    for old in prepared.prior.checkpoints if prepared.prior else ():
        if old.path not in {c.path for c in checkpoints} and Path(old.path).is_file():
            checkpoints.insert(0, FileEntry.of(Path(old.path), old.step))
    return tuple(checkpoints)


def _lora_entry(prepared: PreparedRun, outcome: Outcome) -> FileEntry | None:
    plan, prior = prepared.plan, prepared.prior
    if not plan.lora_file.is_file():
        return None
    lora_step: int | None = prepared.total_steps
    if outcome != "finished" and prior is not None and prior.lora is not None:
        lora_step = prior.lora.step  # the final file is still the earlier attempt's
    return FileEntry.of(plan.lora_file, lora_step)


def _verification_record(verification: LoraReport | None) -> VerificationEntry | None:
    if verification is None:
        return None
    return VerificationEntry(
        ok=verification.ok,
        checks=tuple(CheckEntry(name=c.name, ok=c.ok, detail=c.detail) for c in verification.checks),
    )


def _stopped_early(prepared: PreparedRun, fold: RunFold) -> StoppedEarly:
    """What run.json records of a run live scoring stopped: when, why, and the GPU time it saved."""
    decided = fold.stop_early
    reached = fold.step or 0
    planned = prepared.total_steps
    saved_steps = max(0, planned - reached)
    per_step = fold.seconds_per_step
    return StoppedEarly(
        step=decided.step if decided else None,
        reason=decided.reason if decided else None,
        stopped_at=reached,
        planned=planned,
        steps_saved=saved_steps,
        seconds_saved=round(saved_steps * per_step, 1) if per_step else None,
    )
