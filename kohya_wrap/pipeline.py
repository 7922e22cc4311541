"""The one chain of stages: prepare -> plan -> train (-> score). `train`, `run`, `smoke` and `sweep` call it.

Each function takes a typed request and returns the stage's own record; failures are the stages'
KohyaWrapErrors, shaped once by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from kohya_wrap.events import Event
    from kohya_wrap.plan import Machines, Plan
    from kohya_wrap.train.runner import TrainResult


@dataclass(frozen=True)
class PlanRequest:
    """What to train: everything `plan` needs besides the machine."""

    dataset_dir: Path
    preset: str
    base_model: str
    run_dir: Path
    overrides: Sequence[str] = ()
    gpus: int | None = None
    tokenizer_cache_dir: Path | None = None
    sd_scripts: str | None = None
    allow_pickle: bool = False
    machines: Machines | None = None


@dataclass(frozen=True)
class TrainRequest:
    """How to train a planned run directory on this machine."""

    run_dir: Path
    resume: bool = False
    allow_nan: bool = False
    sd_scripts: str | None = None
    on_event: Callable[[Event], None] | None = field(default=None, compare=False)
    on_signal: Callable[[int, int], None] | None = field(default=None, compare=False)
    on_saved: Callable[[Path], None] | None = field(default=None, compare=False)


def make_plan(request: PlanRequest) -> Plan:
    """Decide and validate a plan; nothing is written."""
    from kohya_wrap.plan import Machines
    from kohya_wrap.plan import make_plan as _make_plan

    return _make_plan(
        request.dataset_dir, preset=request.preset, base_model=request.base_model, run_dir=request.run_dir,
        overrides=request.overrides, gpus=request.gpus, tokenizer_cache_dir=request.tokenizer_cache_dir,
        allow_pickle=request.allow_pickle, sd_scripts=request.sd_scripts,
        machines=request.machines or Machines(),
    )


def plan_run(request: PlanRequest) -> Plan:
    """Plan and write the run directory."""
    from kohya_wrap.plan import write_plan

    plan = make_plan(request)
    write_plan(plan)
    return plan


def train_run(request: TrainRequest) -> TrainResult:
    """Train a planned run directory (or resume it) and return how it ended."""
    from kohya_wrap.train.runner import TrainOptions, run_training

    return run_training(request.run_dir, TrainOptions(allow_nan=request.allow_nan, resume=request.resume),
                        on_event=request.on_event, on_signal=request.on_signal, on_saved=request.on_saved)
