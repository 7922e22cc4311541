"""The three files train_network.py reads: --config_file, --dataset_config and --sample_prompts.

config.toml: sd-scripts flattens its sections (names are for readers) and applies no type conversion
(docs/sd-scripts.md#no-type-conversion-of-config-values), so every value is written with the exact type argparse would have produced; None is never
written (argparse's default stands), and nothing falsy is dropped: `0.0` is a value.
dataset.toml: voluptuous-checked (library/config_util.py: ConfigSanitizer; docs/sd-scripts.md#dataset-config-schema): resolution is an int (or [W, H]), bools are bools; repeats and
class tokens are explicit because folder names mean nothing in config mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from kohya_wrap.codec import TomlValue, as_table

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from kohya_wrap.sdscripts.arguments import sample_prompt_problem, table
from kohya_wrap.sdscripts.layout import CAPTION_EXTENSION

# arguments table category -> config.toml section
_SECTIONS = {
    "model": "model_arguments",
    "precision": "training_arguments",
    "dataset": "dataset_arguments",
    "caching": "dataset_arguments",
    "network": "network_arguments",
    "optimizer": "optimizer_arguments",
    "scheduler": "optimizer_arguments",
    "steps/epochs": "training_arguments",
    "seed": "training_arguments",
    "performance": "training_arguments",
    "noise/loss": "training_arguments",
    "saving": "saving_arguments",
    "resume/state": "saving_arguments",
    "sampling": "sample_prompt_arguments",
    "logging": "logging_arguments",
    "metadata": "metadata_arguments",
    "validation": "training_arguments",
}
_SECTION_ORDER = (
    "model_arguments",
    "dataset_arguments",
    "network_arguments",
    "optimizer_arguments",
    "training_arguments",
    "saving_arguments",
    "sample_prompt_arguments",
    "logging_arguments",
    "metadata_arguments",
    "other_arguments",
)


def render_config_toml(values: Mapping[str, TomlValue | None], header: str = "") -> str:
    """config.toml for --config_file: `values` are already converted (sdscripts.arguments.convert)."""
    args = table()
    sections: dict[str, dict[str, TomlValue]] = {}
    for key, value in values.items():
        if value is None:
            continue  # argparse's own default stands; TOML has no null
        section = _SECTIONS.get(args[key].category, "other_arguments") if key in args else "other_arguments"
        sections.setdefault(section, {})[key] = value
    ordered = {name: dict(sorted(sections[name].items())) for name in _SECTION_ORDER if name in sections}
    return _comment(header) + tomli_w.dumps(ordered)


@dataclass(frozen=True)
class DatasetSubset:
    image_dir: str
    num_repeats: int
    class_tokens: str
    is_reg: bool


def resolution_for_dataset(resolution: str) -> int | list[int]:
    """config.toml's "512" or "512,768" as dataset.toml needs it: 512 or [512, 768]."""
    parts = [int(p) for p in resolution.split(",")]
    return parts[0] if len(parts) == 1 else parts


def render_dataset_toml(
    subsets: Sequence[DatasetSubset], *, resolution: str, batch_size: int, enable_bucket: bool, header: str = ""
) -> str:
    doc = {
        "general": {"caption_extension": CAPTION_EXTENSION},
        "datasets": [
            {
                "resolution": resolution_for_dataset(resolution),
                "batch_size": batch_size,
                "enable_bucket": enable_bucket,
                "subsets": [
                    {
                        "image_dir": s.image_dir,
                        "num_repeats": s.num_repeats,
                        "class_tokens": s.class_tokens,
                        "is_reg": s.is_reg,
                    }
                    for s in subsets
                ],
            }
        ],
    }
    return _comment(header) + tomli_w.dumps(doc)


def with_batch_size(dataset_toml: str, batch_size: int, header: str = "") -> str:
    """A dataset.toml (render_dataset_toml's) whose datasets take `batch_size` images per step."""
    doc = tomllib.loads(dataset_toml)
    for dataset in doc.get("datasets", []):
        dataset["batch_size"] = batch_size
    return _comment(header) + tomli_w.dumps(doc)


def relocate_dataset_toml(text: str, planned_at: Path, run_dir: Path) -> str | None:
    """dataset.toml of a run directory planned at `planned_at` and now at `run_dir`: each subset's
    image_dir inside the old run directory (the dataset `run` prepares there) moved to the new one.
    None when nothing moves (the dataset lives elsewhere, or the text is not ours to read)."""
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    moved = False
    for dataset in _tables(doc.get("datasets")):
        for subset in _tables(dataset.get("subsets")):
            image_dir = subset.get("image_dir")
            if isinstance(image_dir, str) and (planned_at == Path(image_dir) or planned_at in Path(image_dir).parents):
                subset["image_dir"] = str(run_dir / Path(image_dir).relative_to(planned_at))
                moved = True
    if not moved:
        return None
    header = [line for line in text.splitlines() if line.startswith("#")]
    header.append(f"# Its image folders were moved by train from {planned_at} (the run directory was copied or moved).")
    return "\n".join(header) + "\n\n" + tomli_w.dumps(doc)


def _tables(value: object) -> list[dict[str, object]]:
    """The tables of a TOML array of tables (the same objects, so a change to one changes the document);
    nothing for any other value."""
    items = value if isinstance(value, list) else []
    return [item for item in items if as_table(item) is not None]


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative: str
    width: int
    height: int
    seed: int
    steps: int
    scale: float


def render_sample_prompts(prompts: Sequence[SamplePrompt], header: str = "") -> str:
    """sample_prompts.txt: one prompt per line with ` --x value` options (docs/sd-scripts.md#sample-prompt-syntax); `#` lines are comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for p in prompts:
        for text, negative in ((p.prompt, False), (p.negative, True)):
            problem = sample_prompt_problem(text, negative=negative)
            if problem:
                raise ValueError(problem)
        line = p.prompt
        if p.negative:
            line += f" --n {p.negative}"
        line += f" --w {p.width} --h {p.height} --d {p.seed} --s {p.steps} --l {p.scale}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _comment(header: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + ("\n" if header else "")


# The CLIP tokenizer train_network.py loads for SD 1.x (library/strategy_sd.py TOKENIZER_ID). With
# --tokenizer_cache_dir it first looks for <dir>/<repo id with "/" as "_"> (strategy_base._load_tokenizer),
# a folder written by CLIPTokenizer.save_pretrained, and only then asks the Hub.
TOKENIZER_REPO = "openai/clip-vit-large-patch14"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_REQUIRED_FILES = ("vocab.json", "merges.txt")


def tokenizer_subdir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / TOKENIZER_REPO.replace("/", "_")
