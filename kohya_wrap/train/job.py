"""What train needs from a planned run directory: the Plan that `plan` wrote, plus where train writes.

The plan is read with kohya_wrap.plan.load_plan, so plan.json has one reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kohya_wrap.plan import Plan, load_plan

EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
MANIFEST_FILE = "run.json"


@dataclass(frozen=True)
class TrainJob:
    plan: Plan

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir

    @property
    def argv(self) -> tuple[str, ...]:
        return self.plan.argv

    @property
    def env(self) -> Mapping[str, str]:
        return self.plan.env

    @property
    def cwd(self) -> Path:
        return self.plan.cwd

    @property
    def output_dir(self) -> Path:
        return self.plan.output_dir

    @property
    def output_name(self) -> str:
        return self.plan.output_name

    @property
    def lora_file(self) -> Path:
        return self.plan.lora_file

    @property
    def max_train_steps(self) -> int | None:
        return self.plan.steps.get("max_train_steps")

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.plan.values)

    @property
    def value_sources(self) -> dict[str, str]:
        return dict(self.plan.sources)

    @property
    def base_model_path(self) -> Path | None:
        """What sd-scripts loads: a file, a diffusers folder, or a hub model's cached file (plan resolved it)."""
        path = self.plan.base_model.get("path")
        return Path(path) if path else None

    @property
    def events_path(self) -> Path:
        return self.run_dir / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / MANIFEST_FILE


def load_job(run_dir: Path) -> TrainJob:
    return TrainJob(load_plan(run_dir))
