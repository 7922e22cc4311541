"""Verify a run's LoRA file against its plan (the checks live in sdscripts.lora_file)."""

from __future__ import annotations

from kohya_wrap.sdscripts.lora_file import LoraReport, expectation_from_values, verify_lora
from kohya_wrap.train.job import TrainJob


def verify_run(job: TrainJob, base_model_sha256: str | None) -> LoraReport:
    expect = expectation_from_values(job.values, job.max_train_steps, base_model_sha256)
    return verify_lora(job.lora_file, expect)
