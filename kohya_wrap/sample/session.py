"""The records of `sample` sessions and their samples.json: written by kohya_wrap.sample.generate,
read by the report. Each session is a folder RUN_DIR/samples/<YYYYmmdd-HHMMSS>/ holding prompts.txt,
gen.log, one folder of images per LoRA file, and samples.json (what each image is: LoRA, step,
prompt, seed), from which the report draws a grid with one row per checkpoint and one column per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohya_wrap import rundir
from kohya_wrap.fsutil import load_json

MANIFEST_FILE = "samples.json"
PROMPTS_FILE = "prompts.txt"
LOG_FILE = "gen.log"


@dataclass(frozen=True)
class SampleImage:
    path: Path
    lora_file: str | None
    lora_name: str  # the LoRA file's name without extension, or "base model"
    step: int | None
    prompt_index: int
    image_index: int
    seed: int


@dataclass(frozen=True)
class SampleSession:
    folder: Path
    created_at: str
    base_model: str
    prompts: tuple[str, ...]
    weight: float
    seed: int
    width: int
    height: int
    sampler_steps: int
    images: tuple[SampleImage, ...]


# -- reading sessions back (the report) -------------------------------------------------------


def session_from_json(folder: Path, data: dict[str, Any]) -> SampleSession:
    images = []
    for item in data.get("images", []):
        images.append(
            SampleImage(
                path=folder / item["file"],
                lora_file=item.get("lora_file"),
                lora_name=item.get("lora_name", ""),
                step=item.get("step"),
                prompt_index=int(item["prompt_index"]),
                image_index=int(item.get("image_index", 0)),
                seed=int(item["seed"]),
            )
        )
    return SampleSession(
        folder=folder,
        created_at=str(data.get("created_at", "")),
        base_model=str(data.get("base_model", "")),
        prompts=tuple(data.get("prompts", [])),
        weight=float(data.get("weight", 0.0)),
        seed=int(data.get("seed", 0)),
        width=int(data.get("width", 0)),
        height=int(data.get("height", 0)),
        sampler_steps=int(data.get("sampler_steps", 0)),
        images=tuple(i for i in images if i.path.is_file()),
    )


def load_sessions(run_dir: Path) -> list[SampleSession]:
    """The sample sessions of a run, oldest first; an unreadable manifest is skipped, not fatal."""
    root = rundir.paths(run_dir).samples_dir
    if not root.is_dir():
        return []
    sessions = []
    for manifest in sorted(root.glob(f"*/{MANIFEST_FILE}")):
        try:
            data = load_json(manifest.read_text(encoding="utf-8"))
            sessions.append(session_from_json(manifest.parent, data))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sessions
