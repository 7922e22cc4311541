"""Everything kohya-wrap knows about kohya-ss sd-scripts lives in this package.

Script and argument names, the dataset folder convention, the TOML formats it reads, the command
lines that start it, the log lines it prints and the files it writes (docs/sd-scripts.md says what
of it kohya-wrap relies on). An sd-scripts upgrade touches this package and nothing else.

The rest of kohya-wrap uses a few operations, each in a module of its own, and imports only the names in
that module's `__all__` (tests/unit/test_sdscripts_surface.py holds it to that):

- trainer: resolve_trainer_config (a preset's values and a dataset -> TrainerConfig), render_trainer_files
  (config.toml, dataset.toml, sample_prompts.txt), TrainerSettings (the values read in kohya-wrap's terms)
- command: the launch command for a machine (accelerate's config, the trainer's argv)
- output: OutputParser (the trainer's output -> events)
- lora: verify_planned_lora, verify_found_lora, read_metadata/interpret (a LoRA file and its metadata)
- samples, resume, gen_command: the samples and checkpoints a run saved, its saved states, the generator
- checkout, layout, arguments, base_model: the checkout and its packages, the dataset folder convention,
  checking a preset's keys, an SD1.5 checkpoint and its tokenizer

Each module is imported where it is first used, so `kohya-wrap --help` imports none of them.
"""

from __future__ import annotations

REPOSITORY_URL = "https://github.com/kohya-ss/sd-scripts.git"
PINNED_TAG = "v0.10.1"
PINNED_COMMIT = "ae72efb92babe89ff8e70f057e42db68440e8d61"
TRAIN_SCRIPT = "train_network.py"
# Relative to the kohya-wrap source tree (a git submodule).
SUBMODULE_PATH = "third_party/sd-scripts"
ENV_VAR = "KOHYA_WRAP_SD_SCRIPTS"

# The modules code outside this package may import from (each only the names in its __all__).
SURFACE = (
    "trainer",
    "command",
    "output",
    "lora",
    "samples",
    "resume",
    "gen_command",
    "checkout",
    "layout",
    "arguments",
    "base_model",
)

__all__ = ["PINNED_COMMIT", "PINNED_TAG", "REPOSITORY_URL", "SURFACE"]
