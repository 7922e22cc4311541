"""run_smoke: the whole chain, offline, on generated data: a verdict with the time each stage took.

base model (the cached random SD1.5, built once) -> images (drawn faces) -> prepare -> plan (the
`smoke` preset) -> train (the real sd-scripts) -> verify (the LoRA against the plan).

Everything that can be checked cheaply (the sd-scripts checkout, the [train] packages, the --keep
folder) is checked before the 2 GB base model is built. A stage that fails ends the run with a
failed result naming the stage; only bugs and Ctrl-C propagate as exceptions.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.codec import Record
from kohya_wrap.errors import ExitCode, KohyaWrapError, RunDirError, TrainerNotFound
from kohya_wrap.events import Event
from kohya_wrap.sdscripts.checkout import TRAINER_NEEDS
from kohya_wrap.smoke.basemodel import SmokeModel

if TYPE_CHECKING:
    from kohya_wrap.pipeline import PipelineRequest, PipelineResult, StageFailure, Stages
    from kohya_wrap.rundir import Plan
    from kohya_wrap.sdscripts.checkout import Checkout
    from kohya_wrap.train.runner import TrainResult

PRESET = "smoke"
TOKEN = "ohwx"
CLASS_WORD = "man"
IMAGE_COUNT = 6
INSTALL_TRAIN = "pip install -e '.[train]'"

# Stage ids, in order; also the keys of `smoke --json`'s "stages" (SmokeReport.stages).
SETUP, BASE_MODEL, IMAGES, PREPARE, PLAN, TRAIN, VERIFY = (
    "setup",
    "base_model",
    "images",
    "prepare",
    "plan",
    "train",
    "verify",
)
STAGES = (BASE_MODEL, IMAGES, PREPARE, PLAN, TRAIN, VERIFY)
STAGE_LABELS = {
    SETUP: "setup",
    BASE_MODEL: "base model",
    IMAGES: "images",
    PREPARE: "prepare",
    PLAN: "plan",
    TRAIN: "train",
    VERIFY: "verify",
}


@dataclass(frozen=True)
class LoraSummary:
    path: Path
    ok: bool
    unet_modules: int
    text_encoder_modules: int
    steps: int | None  # the steps the plan asked for and the file's metadata was checked against
    checks: tuple[tuple[str, bool, str], ...]  # (name, ok, detail)

    @property
    def modules(self) -> int:
        return self.unet_modules + self.text_encoder_modules


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    exit_code: int
    seconds: float  # wall time of the whole run, the base model build included
    stage_seconds: tuple[tuple[str, float], ...]  # (stage id, seconds) for each stage that ran, in order
    base_model: SmokeModel | None
    work_dir: Path | None  # None: the run stopped before it had one
    kept: bool  # False: work_dir was a temporary folder and is gone
    run_dir: Path | None
    lora: LoraSummary | None
    device: str | None  # "cpu" or "cuda": what the plan trains on
    failed_stage: str | None = None
    message: str | None = None
    hint: str | None = None
    trainer_tail: tuple[str, ...] = ()  # the trainer's last output lines when training failed
    warnings: tuple[str, ...] = ()  # the plan's

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "failed"

    @property
    def build_seconds(self) -> float:
        """Time spent building the base model: outside smoke's time budget."""
        if self.base_model is None or not self.base_model.built:
            return 0.0
        return self.base_model.build_seconds or 0.0

    @property
    def budget_seconds(self) -> float:
        return self.seconds - self.build_seconds

    def report(self) -> SmokeReport:
        """What `smoke --json` prints (codec.to_builtins of it)."""
        model, lora = self.base_model, self.lora
        return SmokeReport(
            verdict=self.verdict,
            exit_code=self.exit_code,
            seconds=round(self.seconds, 2),
            seconds_without_model_build=round(self.budget_seconds, 2),
            stages={name: round(seconds, 2) for name, seconds in self.stage_seconds},
            base_model=None
            if model is None
            else ModelReport(
                path=model.path,
                sha256=model.sha256,
                bytes=model.size,
                built=model.built,
                build_reason=model.build_reason,
                build_seconds=None if model.build_seconds is None else round(model.build_seconds, 2),
                check_seconds=round(model.check_seconds, 2),
            ),
            device=self.device,
            lora=None
            if lora is None
            else LoraReport(
                path=lora.path,
                verified=lora.ok,
                modules=lora.modules,
                unet_modules=lora.unet_modules,
                text_encoder_modules=lora.text_encoder_modules,
                steps=lora.steps,
                checks=tuple(CheckReport(name=name, ok=ok, detail=detail) for name, ok, detail in lora.checks),
            ),
            work_dir=self.work_dir,
            kept=self.kept,
            run_dir=self.run_dir,
            warnings=self.warnings,
            failure=None
            if self.ok
            else FailureReport(
                stage=self.failed_stage, message=self.message, hint=self.hint, trainer_tail=self.trainer_tail
            ),
        )


# `smoke --json`, field by field in the order it is printed.
class ModelReport(Record, frozen=True):
    path: Path
    sha256: str
    bytes: int
    built: bool
    build_reason: str | None
    build_seconds: float | None
    check_seconds: float


class CheckReport(Record, frozen=True):
    name: str
    ok: bool
    detail: str


class LoraReport(Record, frozen=True):
    path: Path
    verified: bool
    modules: int
    unet_modules: int
    text_encoder_modules: int
    steps: int | None
    checks: tuple[CheckReport, ...]


class FailureReport(Record, frozen=True):
    stage: str | None
    message: str | None
    hint: str | None
    trainer_tail: tuple[str, ...]


class SmokeReport(Record, frozen=True):
    verdict: str
    exit_code: int
    seconds: float
    seconds_without_model_build: float
    stages: dict[str, float]  # stage id -> seconds, in the order they ran
    base_model: ModelReport | None
    device: str | None
    lora: LoraReport | None
    work_dir: Path | None
    kept: bool
    run_dir: Path | None
    warnings: tuple[str, ...]
    failure: FailureReport | None


def check_train_packages() -> None:
    """TrainerNotFound naming the install command when the [train] extra (or torch) is missing."""
    missing = [name for name in TRAINER_NEEDS.modules if importlib.util.find_spec(name) is None]
    if not missing:
        return
    # torch and torchvision are the user's to choose for the platform: the [train] extra does not hold them
    platform = [name for name in missing if name in ("torch", "torchvision")]
    extra = [name for name in missing if name not in platform]
    said = []
    if platform:
        said.append(f"{' and '.join(platform)} (install torch and torchvision for your platform, see README)")
    if extra:
        said.append(f"the [train] extra's {', '.join(extra)} ({INSTALL_TRAIN} in your kohya-wrap clone)")
    raise TrainerNotFound(
        f"smoke trains with the real sd-scripts; missing here: {'; '.join(said)}.",
        f"Install torch and torchvision for your platform, then the training extra: {INSTALL_TRAIN}.",
    )


def _work_dir(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="kohya-wrap-smoke-"))
    folder = Path(os.path.abspath(keep))
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RunDirError(
            f"--keep {folder} exists and is not an empty folder; smoke never writes over files",
            "give a new or empty folder to --keep",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_smoke(
    steps: int | None = None,
    keep: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
    *,
    sd_scripts: str | os.PathLike[str] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_signal: Callable[[int, int], None] | None = None,
) -> SmokeResult:
    """Run the chain once. `steps`: train this many steps instead of the preset's; `keep`: a new or
    empty folder that keeps everything (else a temporary folder, removed at the end).

    on_event gets the training events (for a live view), on_stage each stage id as it starts,
    on_signal the trainer's stop requests (as for `train`).
    """
    from kohya_wrap.pipeline import PipelineFailed, Stages, run_pipeline

    run = _SmokeRun(keep, Stages(on_stage))
    try:
        checkout, run.work = _setup(steps, keep, sd_scripts)
        run.model = _base_model(run.stages)
        _draw_inputs(run.stages, run.work)
        request, run.device = _smoke_request(run.work, run.model.path, checkout, steps, on_event, on_signal)
        run.run_dir = request.train.run_dir
        done = run_pipeline(request, run.stages)
        if done.plan is not None:
            run.warnings = done.plan.warnings
        failure = _chain_failure(done, keep)
        if failure is not None:
            return run.result(failure)
        assert done.trained is not None and done.plan is not None
        with run.stages.stage(VERIFY):
            run.lora = _lora_summary(done.trained, done.plan, keep)
            _check_verified(run.lora)
        return run.result()
    except PipelineFailed as failed:
        return run.result(failed.failure)
    finally:
        if keep is None and run.work is not None:
            shutil.rmtree(run.work, ignore_errors=True)


@dataclass
class _SmokeRun:
    """What one smoke run has found so far, shaped into its SmokeResult however it ends."""

    keep: Path | None
    stages: Stages
    started: float = field(default_factory=time.monotonic)
    work: Path | None = None
    model: SmokeModel | None = None
    run_dir: Path | None = None
    device: str | None = None  # "cpu" or "cuda": what the plan trains on
    lora: LoraSummary | None = None
    warnings: tuple[str, ...] = ()

    def result(self, failure: StageFailure | None = None) -> SmokeResult:
        return SmokeResult(
            ok=failure is None,
            exit_code=ExitCode.OK if failure is None else failure.exit_code,
            seconds=time.monotonic() - self.started,
            stage_seconds=tuple(self.stages.timings),
            base_model=self.model,
            work_dir=self.work,
            kept=self.keep is not None and self.work is not None,
            run_dir=self.run_dir,
            lora=self.lora,
            device=self.device,
            failed_stage=failure.stage if failure else None,
            message=failure.message if failure else None,
            hint=failure.hint if failure else None,
            trainer_tail=failure.tail if failure else (),
            warnings=self.warnings,
        )


def _setup(steps: int | None, keep: Path | None, sd_scripts: str | os.PathLike[str] | None) -> tuple[Checkout, Path]:
    """The cheap checks, before the 2 GB base model is built: the checkout, the [train] packages, --keep."""
    from kohya_wrap.pipeline import PipelineFailed, StageFailure
    from kohya_wrap.sdscripts.checkout import locate

    try:
        if steps is not None and steps < 1:
            raise KohyaWrapError(f"--steps {steps}: must be at least 1")
        checkout = locate(sd_scripts)
        check_train_packages()
        return checkout, _work_dir(keep)
    except KohyaWrapError as e:
        raise PipelineFailed(StageFailure(SETUP, e.message, e.hint, int(e.exit_code))) from e


def _base_model(stages: Stages) -> SmokeModel:
    from kohya_wrap.smoke.basemodel import ensure_base_model

    with stages.stage(BASE_MODEL):
        return ensure_base_model()


def _draw_inputs(stages: Stages, work: Path) -> None:
    """The faces to prepare (work/photos) and the CLIP tokenizer the plan names (work/tokenizer)."""
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    with stages.stage(IMAGES):
        write_face_images(work / "photos", count=IMAGE_COUNT)
        write_tokenizer(work / "tokenizer")


def _smoke_request(
    work: Path,
    model_path: Path,
    checkout: Checkout,
    steps: int | None,
    on_event: Callable[[Event], None] | None,
    on_signal: Callable[[int, int], None] | None,
) -> tuple[PipelineRequest, str]:
    """prepare -> plan (the smoke preset) -> train for the drawn faces, and the device it trains on."""
    from kohya_wrap.pipeline import PipelineRequest, PlanRequest, TrainRequest
    from kohya_wrap.prepare import PrepareOptions
    from kohya_wrap.preset import load_preset
    from kohya_wrap.train.machine import detect_gpus
    from kohya_wrap.train.runner import TrainOptions

    ours = load_preset(PRESET).settings
    run_dir = work / "run"
    overrides = [] if steps is None else [f"{key}={steps}" for key in ("target_steps", "min_steps", "max_steps")]
    gpus = detect_gpus()
    request = PipelineRequest(
        # One process: the images are tiny, and forking after the model build imported torch is unsafe.
        prepare=PrepareOptions(
            src_dir=work / "photos",
            dataset_dir=work / "dataset",
            token=TOKEN,
            class_word=CLASS_WORD,
            size=ours.size,
            crop=ours.crop,
            jobs=1,
        ),
        plan=PlanRequest(
            work / "dataset",
            PRESET,
            str(model_path),
            run_dir,
            tuple(overrides),
            tokenizer_cache_dir=work / "tokenizer",
            sd_scripts=str(checkout.path),
        ),
        # the runner verifies the LoRA (and records it in run.json); the verify stage reports it
        train=TrainRequest(
            run_dir,
            TrainOptions(verify=True, sd_scripts=str(checkout.path), gpu_info=gpus),
            on_event=on_event,
            on_signal=on_signal,
        ),
    )
    return request, "cuda" if gpus.count else "cpu"


def _chain_failure(done: PipelineResult, keep: Path | None) -> StageFailure | None:
    """How the chain failed before verify (a training failure without the log's path, which smoke may
    delete, and with the --keep hint); None when it trained (a LoRA that failed verification included:
    the verify stage reports it)."""
    from kohya_wrap.pipeline import StageFailure

    trained = done.trained
    if done.failure is None or (trained is not None and trained.outcome == "verify_failed"):
        return None
    failure = done.failure
    if failure.stage != TRAIN:
        return failure
    return StageFailure(
        TRAIN,
        failure.message.split("; full output:")[0],
        _with_keep_hint(failure.hint or "", keep),
        failure.exit_code,
        failure.tail,
    )


def _lora_summary(trained: TrainResult, plan: Plan, keep: Path | None) -> LoraSummary:
    """The LoRA file as the runner verified it against the plan; PipelineFailed when the trainer wrote none."""
    from kohya_wrap.pipeline import PipelineFailed, StageFailure

    report = trained.verification
    lora_file = trained.lora_file or plan.lora_file
    if report is None:
        raise PipelineFailed(
            StageFailure(
                VERIFY,
                f"the trainer wrote no LoRA file ({lora_file})",
                _with_keep_hint("", keep),
                ExitCode.TRAIN_VERIFY_FAILED,
            )
        )
    return LoraSummary(
        path=lora_file,
        ok=report.ok,
        unet_modules=report.unet_modules,
        text_encoder_modules=report.text_encoder_modules,
        steps=trained.total_steps,
        checks=tuple((c.name, c.ok, c.detail) for c in report.checks),
    )


def _check_verified(lora: LoraSummary) -> None:
    """PipelineFailed naming the failed checks when the LoRA failed verification."""
    from kohya_wrap.pipeline import PipelineFailed, StageFailure

    if lora.ok:
        return
    failed = "; ".join(f"{name}: {detail}" for name, ok, detail in lora.checks if not ok)
    raise PipelineFailed(
        StageFailure(
            VERIFY,
            f"the LoRA {lora.path} failed verification: {failed}",
            "This points at a change in sd-scripts or its packages; compare with `kohya-wrap doctor`.",
            ExitCode.TRAIN_VERIFY_FAILED,
        )
    )


def _with_keep_hint(advice: str, keep: Path | None) -> str:
    if keep is not None:
        return advice
    return (advice + " " if advice else "") + "Run again with --keep DIR to keep the trainer's full log (train.log)."


class SmokeFailed(KohyaWrapError):
    """Raised by the CLI after a failed smoke run; carries the failed stage's exit code."""

    def __init__(self, result: SmokeResult) -> None:
        stage = STAGE_LABELS.get(result.failed_stage or "", result.failed_stage)
        super().__init__(f"smoke failed at {stage}: {result.message}", result.hint)
        self.exit_code = result.exit_code
