"""The records of `sample` sessions and their samples.json: written by kohya_wrap.sample.generate,
read by the report. Each session is a folder RUN_DIR/samples/<YYYYmmdd-HHMMSS>/ holding prompts.txt,
gen.log, one folder of images per LoRA file, and samples.json (what each image is: LoRA, step,
prompt, seed), from which the report draws a grid with one row per checkpoint and one column per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kohya_wrap import codec, rundir
from kohya_wrap.codec import Record

MANIFEST_FILE = "samples.json"
PROMPTS_FILE = "prompts.txt"
LOG_FILE = "gen.log"
SAMPLES_SCHEMA = 1


class SampleEntry(Record, frozen=True, kw_only=True):
    """One image of samples.json: its file (relative to the session folder) and what made it."""

    file: str
    lora_file: str | None = None
    lora_name: str = ""
    step: int | None = None
    prompt_index: int
    image_index: int = 0
    seed: int


class SamplesManifest(Record, frozen=True):
    """A session's samples.json: how it sampled and every image it made (written after each LoRA)."""

    schema: int = SAMPLES_SCHEMA
    created_at: str = ""
    base_model: str = ""
    prompts: tuple[str, ...] = ()
    weight: float = 0.0
    seed: int = 0
    count: int = 1
    width: int = 0
    height: int = 0
    sampler_steps: int = 0
    scale: float | None = None
    sampler: str | None = None
    images: tuple[SampleEntry, ...] = ()


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


def write_samples(folder: Path, manifest: SamplesManifest) -> None:
    """The one writer of a session's samples.json (atomic)."""
    codec.write(folder / MANIFEST_FILE, manifest)


def read_samples(folder: Path) -> SamplesManifest:
    """A session's samples.json; RecordError naming the file and field when it cannot be read."""
    return codec.read(folder / MANIFEST_FILE, SamplesManifest, what="the sample session's record")


def session_of(folder: Path, manifest: SamplesManifest) -> SampleSession:
    """The session in `folder` as samples.json records it, with the images that are still there."""
    images = (
        SampleImage(
            path=folder / item.file,
            lora_file=item.lora_file,
            lora_name=item.lora_name,
            step=item.step,
            prompt_index=item.prompt_index,
            image_index=item.image_index,
            seed=item.seed,
        )
        for item in manifest.images
    )
    return SampleSession(
        folder=folder,
        created_at=manifest.created_at,
        base_model=manifest.base_model,
        prompts=manifest.prompts,
        weight=manifest.weight,
        seed=manifest.seed,
        width=manifest.width,
        height=manifest.height,
        sampler_steps=manifest.sampler_steps,
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
            sessions.append(session_of(manifest.parent, read_samples(manifest.parent)))
        except codec.RecordError:
            continue
    return sessions
