"""Verify a run's LoRA file against its plan (the checks live in sdscripts.lora_file)."""

from __future__ import annotations

from kohya_wrap.rundir import Plan
from kohya_wrap.sdscripts import LoraReport, expectation_from_values, verify_lora


def verify_run(plan: Plan, base_model_sha256: str | None) -> LoraReport:
    expect = expectation_from_values(dict(plan.values), plan.max_train_steps, base_model_sha256)
    return verify_lora(plan.lora_file, expect)
