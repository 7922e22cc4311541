"""What a sweep needs to plan real run directories and train them with the fake trainer.

Datasets of generated photos, a tiny base model file, a CLIP tokenizer, an sd-scripts checkout holding
an empty train_network.py, and tests/fakes/launcher (a stand-in accelerate) first on PYTHONPATH, so that each planned
`python -m accelerate.commands.launch ... train_network.py` runs tests/fakes/fake_trainer.py.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

FAKES = Path(__file__).resolve().parent
ROOT = FAKES.parents[1]
FAKE_ACCELERATE = FAKES / "launcher"


@dataclass(frozen=True)
class SweepEnv:
    root: Path
    datasets: tuple[Path, ...]
    model: Path
    tokenizer: Path
    checkout: Path

    def args(self, *datasets: Path, preset: str = "smoke") -> list[str]:
        """The sweep command's arguments up to the grid."""
        return [
            *(str(d) for d in (datasets or self.datasets)),
            "--preset",
            preset,
            "--base-model",
            str(self.model),
            "--tokenizer-cache-dir",
            str(self.tokenizer),
            "--sd-scripts",
            str(self.checkout),
        ]


def make_sweep_env(root: Path, datasets: tuple[str, ...] = ("ohwx",)) -> SweepEnv:
    sys.path.insert(0, str(FAKES.parent))
    from sd15_stub import write_sd15_stub

    from kohya_wrap.sdscripts.layout import TRAIN_DIR, subset_dir_name
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    made = []
    for name in datasets:
        dataset = root / "data" / name
        for image in write_face_images(dataset / TRAIN_DIR / subset_dir_name(1, f"{name} man"), count=4):
            image.with_suffix(".txt").write_text(f"a photo of {name} man\n")
        made.append(dataset)
    model = write_sd15_stub(root / "model.safetensors")
    tokenizer = root / "tok"
    write_tokenizer(tokenizer)
    checkout = root / "sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")
    return SweepEnv(root, tuple(made), model, tokenizer, checkout)


def sweep_process_env(rules: dict[str, list[str]] | None = None) -> dict[str, str]:
    """The environment of a `kohya-wrap sweep` subprocess (and so of its workers and trainers)."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "KW_FAKE_TRAINER_RULES": json.dumps(rules or {}),
        "PYTHONPATH": os.pathsep.join([str(FAKE_ACCELERATE), str(ROOT)]),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def kohya_wrap_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "kohya_wrap", *args]
