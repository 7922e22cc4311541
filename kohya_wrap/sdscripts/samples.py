"""Sample images sd-scripts writes while training: where they go and what their names mean.

train_util.sample_image_inference (v0.10.1) saves each image as
`<output_dir>/sample/[<output_name>_]<num>_<i:02d>_<YYYYmmddHHMMSS>[_<seed>].png`, where <num> is
`e<epoch:06d>` for epoch-triggered samples (`e000000` for --sample_at_first) or `<step:06d>` for
step-triggered ones, and <i> is the prompt's index in the prompt file (docs/sd-scripts.md#sample-images-during-training).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.sdscripts.tensorboard import validation_losses

__all__ = [
    "SampleName",
    "checkpoint_files",
    "checkpoint_step",
    "checkpoint_steps",
    "find_samples",
    "parse_sample_name",
    "read_prompt_texts",
    "sample_dir",
    "sample_step",
    "validation_losses",
]

SAMPLE_DIR_NAME = "sample"

# Fixed-width fields are matched from the end, so an output_name containing "_" stays intact.
_SAMPLE_NAME = re.compile(
    r"^(?:(?P<name>.+)_)?(?P<num>e\d{6}|\d{6})_(?P<index>\d{2,})_(?P<stamp>\d{14})(?:_(?P<seed>\d+))?\.png$"
)


@dataclass(frozen=True)
class SampleName:
    """What a training sample's file name says."""

    output_name: str | None
    step: int | None  # None for epoch-triggered samples
    epoch: int | None  # None for step-triggered samples
    prompt_index: int
    timestamp: str  # YYYYmmddHHMMSS, local time of the trainer
    seed: int | None


def parse_sample_name(file_name: str) -> SampleName | None:
    """The meaning of a sample file name, or None when sd-scripts did not name it."""
    m = _SAMPLE_NAME.match(file_name)
    if m is None:
        return None
    num = m["num"]
    return SampleName(
        output_name=m["name"],
        step=None if num.startswith("e") else int(num),
        epoch=int(num[1:]) if num.startswith("e") else None,
        prompt_index=int(m["index"]),
        timestamp=m["stamp"],
        seed=int(m["seed"]) if m["seed"] is not None else None,
    )


def sample_dir(output_dir: Path) -> Path:
    return Path(output_dir) / SAMPLE_DIR_NAME


def find_samples(output_dir: Path, output_name: str | None = None) -> list[tuple[Path, SampleName]]:
    """The training samples in an output folder, oldest name first; other PNGs there are ignored."""
    folder = sample_dir(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.png")):
        parsed = parse_sample_name(path.name)
        if parsed is None:
            continue
        if output_name is not None and parsed.output_name not in (output_name, None):
            continue
        found.append((path, parsed))
    return found


def read_prompt_texts(prompt_file: Path) -> list[str]:
    """The prompt of each entry of a .txt prompt file, in the order that gives its sample index.

    sd-scripts skips empty lines and lines starting with `#`, and cuts options at ` --` (library/train_util.py: sample_images_common, line_to_prompt_dict; docs/sd-scripts.md#sample-prompt-syntax).
    """
    path = Path(prompt_file)
    if not path.is_file():
        return []
    texts = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        texts.append(line.split(" --", 1)[0].strip())
    return texts


def checkpoint_files(output_dir: Path, output_name: str | None) -> list[Path]:
    """The LoRA files a run saved (library/train_util.py: get_step_ckpt_name, get_epoch_ckpt_name, get_last_ckpt_name; docs/sd-scripts.md#checkpoint-and-state-names): `<name>-step<8 digits>`, `<name>-<6 digits>` (epochs)
    and the final `<name>`, all `.safetensors`; other files of the folder are left out."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    if output_name is None:
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    pattern = re.compile(rf"^{re.escape(output_name)}(?:-step\d{{8}}|-\d{{6}})?\.safetensors$")
    return sorted(p for p in folder.iterdir() if p.is_file() and pattern.match(p.name))


def sample_step(name: SampleName, steps_per_epoch: int | None, max_train_steps: int | None) -> int | None:
    """The global step a sample was drawn at: its step, or for an epoch-named one (`e000003`) the
    step that epoch ended at (train_network.py samples after the epoch's last step), capped at the
    run's length; `e000000` is --sample_at_first, step 0."""
    if name.step is not None:
        return name.step
    if name.epoch is None or steps_per_epoch is None:
        return None
    step = name.epoch * steps_per_epoch
    return min(step, max_train_steps) if max_train_steps is not None else step


def _saved_step(path: Path) -> int | None:
    """`ss_steps` of a LoRA file's metadata; None when the file is not a readable safetensors file."""
    from kohya_wrap.safetensors_header import metadata_text, read_header
    from kohya_wrap.sdscripts.lora_metadata import training_step

    try:
        header, _ = read_header(path)
        return training_step(metadata_text(header))
    except (OSError, ValueError):  # HeaderError is a ValueError
        return None


def checkpoint_step(path: Path) -> int | None:
    """The global step a LoRA file was saved at: `ss_steps` in its metadata, else the `-step<8 digits>` in its name."""
    from kohya_wrap.sdscripts.output import step_from_file_name

    step = _saved_step(path)
    return step if step is not None else step_from_file_name(path.name)


def checkpoint_steps(output_dir: Path, output_name: str | None, final_step: int | None) -> dict[int, Path]:
    """Each saved LoRA file by the global step it holds: `ss_steps` in its metadata, else the
    `-step<8 digits>` in its name, else (the final `<name>.safetensors`) the run's last step."""
    from kohya_wrap.sdscripts.output import step_from_file_name

    found: dict[int, Path] = {}
    for path in checkpoint_files(output_dir, output_name):
        step = _saved_step(path)
        if step is None:
            step = step_from_file_name(path.name)
        if step is None and output_name is not None and path.stem == output_name:
            step = final_step
        if step is not None:
            found.setdefault(step, path)
    return found
