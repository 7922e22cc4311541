"""What train needs from a planned run directory: read from RUN_DIR/plan.json (see CONTRACTS.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohya_wrap.errors import RunDirError

PLAN_FILE = "plan.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
MANIFEST_FILE = "run.json"


@dataclass(frozen=True)
class TrainJob:
    run_dir: Path
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    output_dir: Path
    output_name: str
    lora_file: Path
    max_train_steps: int | None
    values: dict[str, Any]  # sd-scripts argument -> value
    value_sources: dict[str, str]
    preset_name: str | None
    preset_sha256: str | None
    dataset_manifest_sha256: str | None
    base_model_path: Path | None
    sd_scripts_path: str | None
    sd_scripts_commit: str | None
    plan: dict[str, Any]  # the whole plan.json, recorded in run.json

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
    run_dir = Path(run_dir).resolve()
    path = run_dir / PLAN_FILE
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not a planned run: {PLAN_FILE} is missing.",
                          "Plan it first with `kohya-wrap plan`, or let `kohya-wrap train DATASET_DIR ...` plan it.") from None
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} cannot be read: {e}", "Plan the run again with `kohya-wrap plan`.") from None
    try:
        launch = plan["launch"]
        output = plan["output"]
        values_raw = plan.get("values") or {}
        values = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in values_raw.items()}
        sources = {k: v.get("source", "") for k, v in values_raw.items() if isinstance(v, dict)}
        steps = plan.get("steps") or {}
        preset = plan.get("preset") or {}
        base = plan.get("base_model") or {}
        sd = plan.get("sd_scripts") or {}
        base_path = Path(base["path"]) if base.get("path") and base.get("kind", "file") == "file" else None
        return TrainJob(
            run_dir=run_dir,
            argv=tuple(str(a) for a in launch["argv"]),
            env={str(k): str(v) for k, v in (launch.get("env") or {}).items()},
            cwd=Path(launch.get("cwd") or run_dir),
            output_dir=Path(output["dir"]),
            output_name=str(output["name"]),
            lora_file=Path(output["lora_file"]),
            max_train_steps=steps.get("max_train_steps"),
            values=values,
            value_sources=sources,
            preset_name=preset.get("name"),
            preset_sha256=preset.get("sha256"),
            dataset_manifest_sha256=(plan.get("dataset") or {}).get("manifest_sha256"),
            base_model_path=base_path,
            sd_scripts_path=sd.get("path"),
            sd_scripts_commit=sd.get("commit"),
            plan=plan,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise RunDirError(f"{path} is not a plan this kohya-wrap understands (missing {e}).",
                          "Plan the run again with `kohya-wrap plan`.") from None
