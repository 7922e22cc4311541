"""A planned run directory that trains with the fake trainer (tests/fakes/fake_trainer.py).

plan.json follows the run-directory format (docs/run-directory.md), so the train stage reads it like a
real plan and builds the real launch command; the plan's environment puts a stand-in `accelerate`
(tests/fakes/launcher) on the trainer's PYTHONPATH, which runs the fake trainer with `fake_args`.
The process tier's conftest points $KOHYA_WRAP_SD_SCRIPTS at a stand-in checkout (make_fake_checkout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent
FAKE_TRAINER = FAKES / "fake_trainer.py"
FAKE_LAUNCHER = FAKES / "launcher"


def make_dataset(root: Path, images: int = 4) -> Path:
    """A prepared dataset folder (img/1_ohwx man/ with captions, prepare.json) of small generated images."""
    from PIL import Image

    sub = root / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (64, 64), (i * 40 % 256, 90, 140)).save(sub / f"{i:04d}.png")
        (sub / f"{i:04d}.txt").write_text("photo of ohwx man\n")
    (root / "prepare.json").write_text(json.dumps({"parameters": {"token": "ohwx", "class": "man"}}))
    return root


def make_fake_checkout(folder: Path) -> Path:
    """A folder kohya-wrap takes for an sd-scripts checkout: it holds a train_network.py, which the stand-in
    accelerate (FAKE_LAUNCHER) never runs; it runs the fake trainer in its place."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_network.py").write_text('"""Not sd-scripts: a stand-in checkout of the process tier."""\n')
    return folder


def fake_env(fake_args: tuple[str, ...] | list[str] = (), launcher: bool = True) -> dict[str, str]:
    """The trainer's environment that makes `accelerate launch` run the fake trainer with these options."""
    return {
        "PYTHONPATH": str(FAKE_LAUNCHER),
        "FAKE_TRAINER_ARGS": json.dumps(list(fake_args)),
        "FAKE_LAUNCHER": "1" if launcher else "0",
    }


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
    photos: Path | None = None,
    repeats: int = 1,
    ours: dict | None = None,
) -> Path:
    """A planned run for the fake trainer. photos: a folder of training photos (the run's one subset, with
    `repeats`; the fake trainer's epoch is photos x repeats batches, and score takes them as references)."""
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    output = run_dir / "output"
    if base_model is None:
        # a whole safetensors file, as train's pre-flight checks (the fake trainer never loads it)
        sys.path.insert(0, str(FAKES.parent))
        from sd15_stub import write_sd15_stub

        base_model = write_sd15_stub(root / "base.safetensors")
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
    subsets = []
    steps_per_epoch = 40
    if photos is not None:
        images = len([p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")])
        subsets = [
            {"dir": str(photos), "images": images, "repeats": repeats, "class_tokens": "ohwx man", "is_reg": False}
        ]
        steps_per_epoch = images * repeats
        dataset = (
            '[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = 512\nbatch_size = 1\n'
            f'enable_bucket = true\n\n[[datasets.subsets]]\nimage_dir = "{photos.as_posix()}"\n'
            f'num_repeats = {repeats}\nclass_tokens = "ohwx man"\nis_reg = false\n'
        )
        (run_dir / "dataset.toml").write_text(dataset)
    else:
        (run_dir / "dataset.toml").write_text("[general]\n")
    plan = {
        "schema": 2,
        "kohya_wrap_version": "0.1.0",
        "created_at": "2026-11-25T10:00:00.000Z",
        "preset": {"name": "test-preset", "sha256": "0" * 64, "files": []},
        "dataset": {"dir": str(root / "dataset"), "manifest_sha256": "1" * 64, "subsets": subsets},
        "base_model": {"source": str(base_model), "path": str(base_model), "kind": "file"},
        "tokenizer_cache_dir": str(_tokenizer(root)),
        "values": {k: {"value": v, "source": "preset:test-preset"} for k, v in values.items()},
        "ours": dict(ours or {}),
        "steps": {
            "train_images_x_repeats": 40,
            "reg_images_x_repeats": 0,
            "batch_size": 1,
            "grad_accum": 1,
            "num_processes": 1,
            "steps_per_epoch": steps_per_epoch,
            "epochs": 1,
            "max_train_steps": max_train_steps,
            "arithmetic": "",
        },
        "launch": {
            "gpus": 1,
            "num_machines": 1,
            "machine_rank": 0,
            "main_process_ip": None,
            "main_process_port": 29500,
            "env": {"PYTHONUNBUFFERED": "1", **fake_env(fake_args, launcher), **(env or {})},
        },
        "output": {"dir": str(output), "name": "face", "lora_file": str(output / "face.safetensors")},
        "sd_scripts": {"commit": None, "matches_pin": False},
    }
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    return run_dir


def _tokenizer(root: Path) -> Path:
    """A tokenizer folder in the layout sd-scripts reads (the fake trainer never opens it)."""
    from kohya_wrap.sdscripts.configs import TOKENIZER_REQUIRED_FILES, tokenizer_subdir

    cache = root / "tokenizer"
    sub = tokenizer_subdir(cache)
    sub.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_REQUIRED_FILES:
        (sub / name).write_text("{}\n" if name.endswith(".json") else "")
    return cache


def set_fake_args(run_dir: Path, fake_args: tuple[str, ...] | list[str]) -> None:
    """Change the fake trainer's options in a planned run, as a user would fix a cause before resuming."""
    plan = json.loads((run_dir / "plan.json").read_text())
    plan["launch"]["env"]["FAKE_TRAINER_ARGS"] = json.dumps(list(fake_args))
    (run_dir / "plan.json").write_text(json.dumps(plan))
