"""The run directory's file names and paths: the one module that spells them (docs/run-directory.md).

RUN_DIR is made by `plan` and filled by `train`, `sample`, `score` and `report`; every other module
asks here for a path instead of spelling a file name, so a renamed file is renamed in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# What `plan` writes; plan.json last, so its presence means the plan is complete.
CONFIG_TOML = "config.toml"
DATASET_TOML = "dataset.toml"
SAMPLE_PROMPTS = "sample_prompts.txt"
PLAN_JSON = "plan.json"
PLAN_FILES = (CONFIG_TOML, DATASET_TOML, SAMPLE_PROMPTS, PLAN_JSON)
# What `train` writes: accelerate.yaml is resolved for the machine at each launch.
ACCELERATE_CONFIG = "accelerate.yaml"
# dataset.toml with the batch train chose to fit the GPU it found (kohya_wrap/train/memory.py), when it chose one
GPU_DATASET_TOML = "dataset.gpu.toml"
# `train --extend` from LoRA weights: dataset.toml with more repeats (sdscripts.Extension says why).
EXTEND_DATASET_TOML = "dataset-extend.toml"
TRAIN_LOG = "train.log"
EVENTS_JSONL = "events.jsonl"
RUN_JSON = "run.json"
OUTPUT_DIR = "output"  # the trainer's output_dir: checkpoints, states, output/sample/
TENSORBOARD_DIR = "logs"  # the trainer's logging_dir
# Files a started run leaves: a folder holding any of them is never planned over.
RUN_FILES = (RUN_JSON, TRAIN_LOG, EVENTS_JSONL)
DATASET_DIR = "dataset"  # the dataset `kohya-wrap run` prepares for this run
# What the later stages write.
REPORT_HTML = "report.html"
SAMPLES_DIR = "samples"  # one folder per `kohya-wrap sample` session
SCORE_JSON = "score.json"
LOCK_FILE = ".lock"
# Space train sets aside while the trainer runs, given back to write run.json when the disk filled up.
RUN_JSON_RESERVE = ".run.json.reserve"


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run directory lives."""

    run_dir: Path

    @property
    def plan_json(self) -> Path:
        return self.run_dir / PLAN_JSON

    @property
    def config_toml(self) -> Path:
        return self.run_dir / CONFIG_TOML

    @property
    def dataset_toml(self) -> Path:
        return self.run_dir / DATASET_TOML

    @property
    def sample_prompts(self) -> Path:
        return self.run_dir / SAMPLE_PROMPTS

    @property
    def accelerate_config(self) -> Path:
        return self.run_dir / ACCELERATE_CONFIG

    @property
    def gpu_dataset_toml(self) -> Path:
        return self.run_dir / GPU_DATASET_TOML

    @property
    def extend_dataset_toml(self) -> Path:
        return self.run_dir / EXTEND_DATASET_TOML

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / DATASET_DIR

    @property
    def train_log(self) -> Path:
        return self.run_dir / TRAIN_LOG

    @property
    def events(self) -> Path:
        return self.run_dir / EVENTS_JSONL

    @property
    def run_json(self) -> Path:
        return self.run_dir / RUN_JSON

    @property
    def output_dir(self) -> Path:
        return self.run_dir / OUTPUT_DIR

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / TENSORBOARD_DIR

    @property
    def report_html(self) -> Path:
        return self.run_dir / REPORT_HTML

    @property
    def samples_dir(self) -> Path:
        return self.run_dir / SAMPLES_DIR

    @property
    def score_json(self) -> Path:
        return self.run_dir / SCORE_JSON

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_FILE

    @property
    def run_json_reserve(self) -> Path:
        return self.run_dir / RUN_JSON_RESERVE


def paths(run_dir: str | os.PathLike[str]) -> RunPaths:
    return RunPaths(Path(run_dir))


def is_planned(run_dir: str | os.PathLike[str]) -> bool:
    return (Path(run_dir) / PLAN_JSON).is_file()
