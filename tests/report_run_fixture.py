"""A finished run directory for the report tests, built from a recorded sd-scripts run.

events.jsonl is what the train stage's parser makes of the recorded console output of a real
train_network.py run (tests/data/transcripts), plan.json and run.json follow the contracts, and
the sample PNGs are named the way sd-scripts names them (small solid colours stand in for images).
"""

from __future__ import annotations

import json
from pathlib import Path

from kohya_wrap.events import EventWriter, Finished, Progress, read_events
from kohya_wrap.sdscripts.output import STDERR, STDOUT, OutputParser

TRANSCRIPTS = Path(__file__).parent / "data" / "transcripts"
PROMPTS = ("a photo of ohwx man", 'ohwx man <on> a beach & "sunset"')
# a complete safetensors file with no tensors: a stand-in LoRA that passes the completeness check
STAND_IN_LORA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
OUTPUT_NAME = "tinylora"


def recorded_events(transcript: str) -> list:  # list[Event]
    parser = OutputParser()
    events = []
    stderr = (TRANSCRIPTS / f"{transcript}.pipe.stderr.txt").read_bytes()
    for start in range(0, len(stderr), 4096):  # in pipe-sized reads, as the runner gets them
        events += parser.feed(STDERR, stderr[start : start + 4096])
    events += parser.feed(STDOUT, (TRANSCRIPTS / f"{transcript}.pipe.stdout.txt").read_bytes())
    events += parser.close()
    events.append(Finished(outcome="finished", exit_code=0, returncode=0))
    return events


def make_run(
    root: Path,
    *,
    transcript: str = "A_cli",
    sample_steps: tuple[int, ...] = (2, 4),
    prompts: tuple[str, ...] = PROMPTS,
    with_run_json: bool = True,
    with_lora: bool = True,
    name: str = "run",
) -> Path:
    from PIL import Image

    from kohya_wrap.sdscripts.configs import TOKENIZER_REQUIRED_FILES, tokenizer_subdir

    run_dir = root / name
    output = run_dir / "output"
    (output / "sample").mkdir(parents=True)
    dataset = root / "dataset"
    # the tokenizer folder the plan names, in the layout sd-scripts reads (`sample` checks it is there)
    tokenizer = tokenizer_subdir(root / "tokenizer")
    tokenizer.mkdir(parents=True, exist_ok=True)
    for file_name in TOKENIZER_REQUIRED_FILES:
        (tokenizer / file_name).write_text("{}\n" if file_name.endswith(".json") else "")
    plan = {
        "schema": 1,
        "kohya_wrap_version": "0.1.0",
        "created_at": "2026-11-25T09:14:38.901Z",
        "preset": {"name": "smoke", "sha256": "5a0c" * 16, "files": ["smoke.toml"]},
        "dataset": {
            "dir": str(dataset),
            "manifest_sha256": None,
            "subsets": [
                {
                    "dir": str(dataset / "img" / "10_ohwx man"),
                    "images": 4,
                    "repeats": 10,
                    "class_tokens": "ohwx man",
                    "is_reg": False,
                }
            ],
        },
        "base_model": {
            "source": str(root / "sd15.safetensors"),
            "path": str(root / "sd15.safetensors"),
            "kind": "file",
        },
        "tokenizer_cache_dir": str(root / "tokenizer"),
        "values": {
            "max_train_steps": {"value": 4, "source": "plan"},
            "network_dim": {"value": 4, "source": "preset:smoke"},
            "learning_rate": {"value": 0.0001, "source": "default"},
            "noise_offset": {"value": 0.0, "source": "preset:smoke"},
        },
        "ours": {"target_steps": 4, "min_steps": 2, "max_steps": 4},
        "steps": {
            "train_images_x_repeats": 40,
            "reg_images_x_repeats": 0,
            "batch_size": 1,
            "grad_accum": 1,
            "num_processes": 1,
            "steps_per_epoch": 40,
            "epochs": 1,
            "max_train_steps": 4,
            "arithmetic": "4 images x 10 repeats / batch 1 = 40 steps per epoch; x 1 epoch, capped at 4 steps",
        },
        "launch": {
            "argv": ["python", "-m", "accelerate.commands.launch", "train_network.py"],
            "env": {"COLUMNS": "1000"},
            "cwd": str(run_dir),
        },
        "output": {"dir": str(output), "name": OUTPUT_NAME, "lora_file": str(output / f"{OUTPUT_NAME}.safetensors")},
        "sd_scripts": {
            "path": "/opt/sdscripts",
            "commit": "ae72efb92babe89ff8e70f057e42db68440e8d61",
            "matches_pin": True,
        },
    }
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2), encoding="utf-8")
    (run_dir / "sample_prompts.txt").write_text(
        "# sample prompts of preset smoke\n" + "".join(f"{p} --w 64 --h 64 --d 42 --s 4 --l 7.5\n" for p in prompts),
        encoding="utf-8",
    )
    with EventWriter(run_dir / "events.jsonl") as writer:
        for event in recorded_events(transcript):
            writer.write(event)
    for step in sample_steps:
        for index in range(len(prompts)):
            Image.new("RGB", (64, 64), (40 * step % 256, 80 * index % 256, 160)).save(
                output / "sample" / f"{OUTPUT_NAME}_{step:06d}_{index:02d}_20261125091531_42.png"
            )
    for stem in (f"{OUTPUT_NAME}-step00000002", OUTPUT_NAME) if with_lora else ():
        (output / f"{stem}.safetensors").write_bytes(STAND_IN_LORA)
    if with_run_json:
        (run_dir / "run.json").write_text(
            json.dumps(
                {
                    "schema": 1,
                    "kohya_wrap_version": "0.1.0",
                    "run_dir": str(run_dir),
                    "outcome": "finished",
                    "exit_code": 0,
                    "started_at": "2026-11-25T09:14:39.000+00:00",
                    "ended_at": "2026-11-25T09:15:52.500+00:00",
                    "base_model": {"path": str(root / "sd15.safetensors"), "sha256": "05f13d67" * 8},
                    "environment": {"python": "3.11.9", "torch": "2.14.1", "cuda": None, "gpu": []},
                    "steps": {"planned": 4, "reached": 4, "trainer_total": 4},
                }
            ),
            encoding="utf-8",
        )
    return run_dir


def loss_event_count(run_dir: Path) -> int:
    return sum(1 for e in read_events(run_dir / "events.jsonl") if isinstance(e, Progress) and e.avr_loss is not None)
