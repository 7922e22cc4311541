"""The one chain of stages: prepare -> plan -> train (-> verify). `train`, `run`, `smoke` and `sweep` call it.

Each stage takes the typed record the previous one made. Every failure, a stage's KohyaWrapError or a
training that did not finish, is shaped here into one StageFailure (the stage, what went wrong, what to
do, the exit code, the trainer's last lines), which the CLI renders, smoke reports and sweep records.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.errors import ExitCode, KohyaWrapError
from kohya_wrap.plan import PlanInputs
from kohya_wrap.plan import PlanRequest as PlanRequest  # re-exported: callers build a request for make_plan
from kohya_wrap.rundir import Plan
from kohya_wrap.train.runner import TrainOptions

if TYPE_CHECKING:
    from kohya_wrap.events import Event
    from kohya_wrap.prepare import PrepareOptions, PrepareResult
    from kohya_wrap.preset import Preset
    from kohya_wrap.score.advice import Advice
    from kohya_wrap.score.records import ScoreReport
    from kohya_wrap.train.runner import Companion, PreparedRun, TrainResult

PREPARE, PLAN, TRAIN, VERIFY, SCORE = "prepare", "plan", "train", "verify", "score"


@dataclass(frozen=True)
class TrainRequest:
    """How to train a planned run directory on this machine."""

    run_dir: Path
    options: TrainOptions = TrainOptions()  # resume, extend, allow_nan, verify, the checkout, the GPUs (tests)
    # score the checkpoints as their samples land and when the run ended, where the scorer is installed
    score: bool = False
    stop_early: bool | None = None  # stop once more training can only make it worse; None: the preset's stop_early
    on_event: Callable[[Event], None] | None = field(default=None, compare=False)
    on_signal: Callable[[int, int], None] | None = field(default=None, compare=False)
    on_saved: Callable[[Path], object] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StageFailure:
    stage: str
    message: str
    hint: str | None
    exit_code: int
    tail: tuple[str, ...] = ()  # the trainer's last output lines when training failed

    def error(self) -> PipelineFailed:
        return PipelineFailed(self)


class PipelineFailed(KohyaWrapError):
    """A stage failed; carries its StageFailure and exit code (a training outcome's 10-18 included)."""

    def __init__(self, failure: StageFailure) -> None:
        super().__init__(failure.message, failure.hint)
        self.failure = failure
        self.exit_code = failure.exit_code


class Stages:
    """Runs named stages, times them, and shapes any KohyaWrapError inside one into a PipelineFailed."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.on_stage = on_stage
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            self.on_stage(name)
        began = time.monotonic()
        try:
            yield
        except PipelineFailed:
            raise
        except KohyaWrapError as e:
            raise PipelineFailed(StageFailure(name, e.message, e.hint, int(e.exit_code))) from e
        finally:
            spent = time.monotonic() - began
            if self.timings and self.timings[-1][0] == name:  # a stage entered twice in a row counts once
                spent += self.timings.pop()[1]
            self.timings.append((name, spent))


def make_plan(request: PlanRequest, inputs: PlanInputs | None = None) -> Plan:
    """Decide and validate a plan; nothing is written. inputs: check_plan_inputs' (the preset is loaded once)."""
    from kohya_wrap.plan import make_plan as _make_plan

    return _make_plan(request, inputs)


def plan_run(request: PlanRequest) -> Plan:
    """Plan and write the run directory."""
    from kohya_wrap.rundir import write_plan

    plan = make_plan(request)
    write_plan(plan)
    return plan


def check_plan_inputs(request: PlanRequest) -> PlanInputs:
    """What can be checked before a dataset exists (the preset, --set, the base model, the machine
    options), so that `run` refuses a typo before it prepares a single photo."""
    from kohya_wrap.plan import check_plan_inputs as _check

    return _check(request)


def preset_prepare_settings(preset: str, overrides: Sequence[str] = ()) -> tuple[int, str, Preset]:
    """The image size and crop a preset's [kohya_wrap] table asks prepare for (with --set applied):
    what `run` prepares at unless told otherwise, so the images match the resolution it trains at.
    And the preset, loaded: a PlanRequest takes it as it is, so `run` loads it once."""
    from kohya_wrap.preset import load_preset

    loaded = load_preset(preset, overrides)
    return loaded.settings.size, loaded.settings.crop, loaded


def train_run(request: TrainRequest) -> TrainResult:
    """Train a planned run directory (or resume or extend it) and return how it ended."""
    from kohya_wrap.train.runner import run_training

    return run_training(
        request.run_dir,
        request.options,
        on_event=request.on_event,
        on_signal=request.on_signal,
        on_saved=request.on_saved,
        companion=(lambda run_dir: live_companion(run_dir, request.stop_early)) if request.score else None,
    )


class _Note:
    """A companion that only says why there is no live scoring (train.runner.Companion)."""

    def __init__(self, message: str) -> None:
        self.message: str | None = message

    def notice(self, event: Event) -> None:
        pass

    def poll(self) -> list[Event]:
        from kohya_wrap.events import Warning_

        message, self.message = self.message, None
        return [Warning_(message=message)] if message else []

    def close(self) -> list[Event]:
        return self.poll()


def live_companion(run_dir: Path, stop_early: bool | None) -> Companion | None:
    """Live scoring beside the trainer (score.live) when the scorer is installed and the run draws
    samples; with stop_early (else the preset's `stop_early`), it may stop the trainer."""
    from kohya_wrap.rundir import read_plan
    from kohya_wrap.score import scorer_available
    from kohya_wrap.sdscripts.trainer import trainer_settings

    plan = read_plan(run_dir)
    stop = bool(plan.ours.get("stop_early", False)) if stop_early is None else stop_early
    missing = scorer_available()
    draws = trainer_settings(plan.values).samples_while_training
    if missing is not None or not draws:
        why = f"the scorer is not installed ({missing})" if missing else "the run draws no samples"
        return _Note(f"stop early: off, {why}; the run trains every step") if stop else None
    from kohya_wrap.rundir import paths, read_manifest
    from kohya_wrap.score.live import LiveScorer

    min_steps = plan.ours.get("min_steps")
    # an extension (the run ended well before this attempt) stops only on what its own checkpoints show
    before = read_manifest(paths(run_dir).run_json)
    last = before.last_checkpoint if before is not None and before.ended_well else None
    return LiveScorer(
        run_dir,
        stop_early=stop,
        min_steps=min_steps if isinstance(min_steps, int) else None,
        after_step=last.step if last is not None else None,
    )


def training_failure(result: TrainResult) -> StageFailure | None:
    """How a training that did not finish is told: None when it finished (or live scoring stopped it
    early) and its LoRA was verified."""
    from kohya_wrap.events import ENDED_WELL

    if result.outcome in ENDED_WELL:
        return None
    message = f"training {result.outcome}"
    if result.last_step is not None:
        message += f" at step {result.last_step}/{result.total_steps}"
    message += f"; full output: {result.log_path}"
    if result.outcome == "verify_failed" and result.verification is not None:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in result.verification.failed)
        message = f"the LoRA {result.lora_file} failed verification: {failed}"
    stage = VERIFY if result.outcome == "verify_failed" else TRAIN
    return StageFailure(stage, message, result.advice or None, result.exit_code, result.tail)


@dataclass(frozen=True)
class PipelineRequest:
    """prepare (optional) -> plan (optional) -> train. Without `plan`, train.run_dir is planned already."""

    train: TrainRequest
    plan: PlanRequest | None = None
    prepare: PrepareOptions | None = None  # its dataset_dir is the plan's dataset_dir
    remove_on_failure: Path | None = None  # a folder this call creates, removed if prepare or plan fails
    on_prepare_progress: Callable[[int, int], None] | None = field(default=None, compare=False)
    after_prepare: Callable[[PrepareResult], None] | None = field(default=None, compare=False)  # may raise to stop
    after_plan: Callable[[Plan], None] | None = field(default=None, compare=False)  # e.g. show its warnings


@dataclass(frozen=True)
class PipelineResult:
    run_dir: Path
    plan: Plan | None
    prepared: PrepareResult | None
    trained: TrainResult | None
    stage_seconds: tuple[tuple[str, float], ...]
    failure: StageFailure | None = None
    score: ScoreReport | None = None  # score.json, when the run was scored
    score_note: str | None = None  # why it was not scored, or what went wrong scoring it
    advice: Advice | None = None  # what to do next, from the score (score.advice)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK) if self.failure is None else self.failure.exit_code


def run_pipeline(request: PipelineRequest, stages: Stages | None = None) -> PipelineResult:
    """Run the stages in order; a failure ends the chain and is returned, never raised (Ctrl-C and bugs are)."""
    stages = stages or Stages()
    created = request.remove_on_failure
    if created is not None and created.exists():
        created = None  # never remove what was there before
    prepared: PrepareResult | None = None
    plan: Plan | None = None
    trained: TrainResult | None = None

    def result(
        failure: StageFailure | None,
        score: ScoreReport | None = None,
        note: str | None = None,
        advice: Advice | None = None,
    ) -> PipelineResult:
        return PipelineResult(
            request.train.run_dir, plan, prepared, trained, tuple(stages.timings), failure, score, note, advice
        )

    try:
        prepared, plan = _prepare_and_plan(request, stages)
    except PipelineFailed as failed:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        return result(failed.failure)
    try:
        with stages.stage(TRAIN):
            trained = train_run(request.train)
    except PipelineFailed as failed:
        return result(failed.failure)
    failure = training_failure(trained)
    if failure is not None or not request.train.score:
        return result(failure)
    score, note = score_finished_run(request.train.run_dir, stages)
    if request.train.on_saved is not None and score is not None:
        request.train.on_saved(request.train.run_dir)  # the report shows the score too
    advice = None
    if score is not None:
        from kohya_wrap.score.advice import advise

        advice = advise(score, request.train.run_dir)
    return result(None, score, note, advice)


def score_finished_run(run_dir: Path, stages: Stages) -> tuple[ScoreReport | None, str | None]:
    """Score a finished run's checkpoints and record the recommendation in run.json; never fails the run.

    (None, why) when the scorer is not installed or scoring could not run.
    """
    from kohya_wrap.codec import convert, to_builtins
    from kohya_wrap.rundir import SCORE_JSON, ScoreEntry, record_score
    from kohya_wrap.score import score_run, scorer_available

    missing = scorer_available()
    if missing is not None:
        return None, f"not scored: {missing} (`kohya-wrap score RUN_DIR` once it is installed)"
    try:
        with stages.stage(SCORE):
            report = score_run(run_dir)
    except PipelineFailed as failed:
        return None, f"not scored: {failed.failure.message}"
    except KeyboardInterrupt:
        # Ctrl-C after the trainer finished: the run is finished and recorded; only its scoring stops
        return None, "not scored: interrupted (run `kohya-wrap score RUN_DIR` to score it)"
    except Exception as e:  # noqa: BLE001  a finished, verified run never fails because of its score
        return None, f"not scored: {type(e).__name__}: {e} (run `kohya-wrap score RUN_DIR` to see it again)"
    from kohya_wrap.score.advice import advise

    record_score(
        run_dir,
        convert(
            {
                "file": SCORE_JSON,
                "recommended": to_builtins(report.recommended),
                "reason": report.reason,
                "advice": to_builtins(advise(report, run_dir)),
            },
            ScoreEntry,
            source=f"{run_dir / SCORE_JSON}",
        ),
    )
    return report, None


def _prepare_and_plan(request: PipelineRequest, stages: Stages) -> tuple[PrepareResult | None, Plan]:
    """prepare (when the request has photos) and plan, written; without a plan request, the plan the run
    directory holds."""
    from kohya_wrap.rundir import read_plan, write_plan

    prepared: PrepareResult | None = None
    inputs: PlanInputs | None = None
    if request.prepare is not None:
        from kohya_wrap.prepare import prepare_dataset

        with stages.stage(PREPARE):
            if request.plan is not None:
                inputs = check_plan_inputs(request.plan)  # before a single photo is prepared
            prepared = prepare_dataset(request.prepare, on_progress=request.on_prepare_progress)
            if request.after_prepare is not None:
                request.after_prepare(prepared)
    if request.plan is None:
        with stages.stage(TRAIN):
            return prepared, read_plan(request.train.run_dir)
    with stages.stage(PLAN):
        plan = make_plan(request.plan, inputs)
        write_plan(plan)
        if request.after_plan is not None:
            request.after_plan(plan)
    return prepared, plan


@dataclass(frozen=True)
class DryRun:
    """What a dry run found: the exact launch that would run on this machine; nothing was kept or started."""

    launch: PreparedRun
    notes: tuple[str, ...]
    ending: str  # what was (not) written or started
    warnings: tuple[str, ...] = ()  # the new plan's (a planned run's were shown when it was planned)
    prepared: PrepareResult | None = None  # what prepare found, in a temporary folder now deleted (`run`)
    rename: tuple[str, str] | None = None  # (that temporary dataset folder, the one `run` would prepare)


def dry_run(request: PipelineRequest) -> DryRun:
    """The chain up to the launch, with nothing written or started: a planned run directory is checked
    as train would; a new plan is made in memory, from photos prepared into a temporary folder (removed
    again) when the request prepares; after_prepare sees what prepare found."""
    from kohya_wrap.train.runner import prepare_launch

    if request.plan is None:
        return _dry_run_planned(request.train)
    inputs = check_plan_inputs(request.plan)
    scratch = Path(tempfile.mkdtemp(prefix="kohya-wrap-dry-run-")) if request.prepare is not None else None
    try:
        plan_request, prepared = request.plan, None
        if scratch is not None:
            plan_request, prepared = _dry_run_prepare(request, plan_request, scratch / "dataset")
        plan = make_plan(plan_request, inputs)
        launch = prepare_launch(plan, resume=False, fetch_models=False, sd_scripts=request.train.options.sd_scripts)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    ending = f"dry run: nothing written, nothing started ({plan.run_dir} would be the run directory)"
    if request.prepare is None:
        return DryRun(launch, tuple(launch.notes), ending, warnings=tuple(plan.warnings))
    # the configs name the dataset where `run` would prepare it, not the temporary folder
    rename = (str(plan_request.dataset_dir), str(Path(request.prepare.dataset_dir).expanduser().resolve()))
    ending += "; the photos were prepared into a temporary folder, now deleted"
    return DryRun(launch, tuple(launch.notes), ending, tuple(plan.warnings), prepared, rename)


def _dry_run_planned(train: TrainRequest) -> DryRun:
    from kohya_wrap.train.runner import prepare_run

    options = train.options
    launch = prepare_run(
        train.run_dir, resume=options.resume, fetch_models=False, sd_scripts=options.sd_scripts, extend=options.extend
    )
    notes = list(launch.notes)
    if launch.state is not None:
        notes.insert(0, f"resumes from {launch.state.path} at step {launch.state.step}")
    return DryRun(launch, tuple(notes), f"dry run: nothing started; {launch.plan.run_dir} is unchanged")


def _dry_run_prepare(
    request: PipelineRequest, plan_request: PlanRequest, dataset_dir: Path
) -> tuple[PlanRequest, PrepareResult]:
    """The photos prepared into dataset_dir (a temporary folder), and the plan request for it."""
    import dataclasses

    from kohya_wrap.prepare import prepare_dataset

    assert request.prepare is not None
    prepared = prepare_dataset(dataclasses.replace(request.prepare, dataset_dir=dataset_dir))
    if request.after_prepare is not None:
        request.after_prepare(prepared)
    return dataclasses.replace(plan_request, dataset_dir=dataset_dir), prepared
