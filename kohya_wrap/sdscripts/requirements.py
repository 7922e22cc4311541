"""What sd-scripts v0.10.1 needs in the Python environment that runs train_network.py.

From its requirements.txt (pins) and its imports (torchvision is imported but not listed).
Keep in step with the [train] extra in pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    distribution: str  # as pip names it
    module: str  # as Python imports it
    pinned: str | None  # sd-scripts' pin, None where it pins nothing
    alternatives: tuple[str, ...] = ()  # other distributions providing the same module


TRAIN_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("accelerate", "accelerate", "1.6.0"),
    Requirement("transformers", "transformers", "4.54.1"),
    Requirement("diffusers", "diffusers", "0.32.1"),
    Requirement("safetensors", "safetensors", "0.4.5"),
    Requirement("huggingface-hub", "huggingface_hub", "0.34.3"),
    Requirement("voluptuous", "voluptuous", "0.15.2"),
    Requirement("toml", "toml", "0.10.2"),
    Requirement("ftfy", "ftfy", "6.3.1"),
    Requirement("einops", "einops", "0.7.0"),
    Requirement("opencv-python-headless", "cv2", "4.10.0.84", alternatives=("opencv-python",)),
    Requirement("imagesize", "imagesize", "1.4.1"),
    Requirement("sentencepiece", "sentencepiece", "0.2.1"),
    Requirement("rich", "rich", "14.1.0"),
)

# torch is the user's choice of build; sd-scripts' README installs 2.6.0, and --fp8_base needs >= 2.1.
TORCH_MINIMUM = "2.1"
TORCH_SUGGESTED = "2.6.0"

# The modules train_network.py imports first: without any of them it cannot start (smoke checks them
# before it builds a model; run.json records their versions).
TRAIN_MODULES = ("torch", "torchvision", "accelerate", "diffusers", "transformers", "safetensors")


@dataclass(frozen=True)
class TrainerNeeds:
    """What the Python that runs the trainer must hold: doctor checks it, smoke and run.json read it."""

    packages: tuple[Requirement, ...]  # sd-scripts' requirements.txt
    modules: tuple[str, ...]  # what train_network.py imports first
    torch_minimum: str
    torch_suggested: str


TRAINER_NEEDS = TrainerNeeds(TRAIN_REQUIREMENTS, TRAIN_MODULES, TORCH_MINIMUM, TORCH_SUGGESTED)
