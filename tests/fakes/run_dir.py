"""A planned run directory whose launch command is the fake trainer (tests/fakes/fake_trainer.py).

It follows the plan.json contract (CONTRACTS.md) so the train stage reads it like a real plan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAKE_TRAINER = Path(__file__).resolve().parent / "fake_trainer.py"


def make_run_dir(
    root: Path,
    *,
    fake_args: tuple[str, ...] = (),
    launcher: bool = True,
    max_train_steps: int = 4,
    save_every_n_steps: int | None = 2,
    save_state: bool = True,
    sample_every_n_steps: int | None = None,
    network_dim: int = 4,
    network_alpha: float = 1.0,
    base_model: Path | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    output = run_dir / "output"
    if base_model is None:
        base_model = root / "base.safetensors"
        base_model.write_bytes(b"not really a model, but hashable")
    values = {
        "pretrained_model_name_or_path": base_model.as_posix(),
        "output_dir": output.as_posix(),
        "output_name": "face",
        "max_train_steps": max_train_steps,
        "network_module": "networks.lora",
        "network_dim": network_dim,
        "network_alpha": network_alpha,
        "learning_rate": 0.0001,
        "seed": 42,
        "save_state": save_state,
    }
    if save_every_n_steps:
        values["save_every_n_steps"] = save_every_n_steps
    if sample_every_n_steps:
        values["sample_every_n_steps"] = sample_every_n_steps
    lines = ["[training]"]
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    (run_dir / "config.toml").write_text("\n".join(lines) + "\n")
    (run_dir / "dataset.toml").write_text("[general]\n")
    argv = [sys.executable, str(FAKE_TRAINER)] + (["--launcher"] if launcher else []) + list(fake_args)
    argv += ["--config_file", str(run_dir / "config.toml"), "--dataset_config", str(run_dir / "dataset.toml")]
    plan = {
        "schema": 1,
        "kohya_wrap_version": "0.1.0",
        "created_at": "2026-11-25T10:00:00.000Z",
        "preset": {"name": "test-preset", "sha256": "0" * 64, "files": []},
        "dataset": {"dir": str(root / "dataset"), "manifest_sha256": "1" * 64, "subsets": []},
        "base_model": {"source": str(base_model), "path": str(base_model), "kind": "file"},
        "tokenizer_cache_dir": None,
        "values": {k: {"value": v, "source": "preset:test-preset"} for k, v in values.items()},
        "ours": {},
        "steps": {"train_images_x_repeats": 40, "reg_images_x_repeats": 0, "batch_size": 1, "grad_accum": 1,
                  "num_processes": 1, "steps_per_epoch": 40, "epochs": 1, "max_train_steps": max_train_steps,
                  "arithmetic": ""},
        "launch": {"argv": argv, "env": {"PYTHONUNBUFFERED": "1", **(env or {})}, "cwd": str(run_dir)},
        "output": {"dir": str(output), "name": "face", "lora_file": str(output / "face.safetensors")},
        "sd_scripts": {"path": "/nonexistent/sd-scripts", "commit": None, "matches_pin": False},
    }
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    return run_dir
