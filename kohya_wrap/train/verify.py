"""Verify a run's LoRA file against its plan (the checks live in sdscripts.lora)."""

from __future__ import annotations

from pathlib import Path

from kohya_wrap.rundir import Plan
from kohya_wrap.sdscripts.lora import LoraReport, verify_planned_lora


def verify_run(
    plan: Plan, base_model_sha256: str | None, *, lora_file: Path | None = None, steps: int | None = None
) -> LoraReport:
    """The final LoRA (or lora_file, saved at `steps`: a run stopped early ends on a step checkpoint)."""
    return verify_planned_lora(
        lora_file or plan.lora_file, plan.values, steps or plan.max_train_steps, base_model_sha256
    )
