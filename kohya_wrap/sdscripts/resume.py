"""Resuming train_network.py from a saved state (docs/sd-scripts.md#checkpoint-and-state-names, #resume, #step-counter-after-a-resume).

State folders in output_dir: `NAME-step00000500-state` (every N steps), `NAME-000003-state` (every
N epochs) and `NAME-state` (the end of training); each holds train_state.json
{"current_epoch": e, "current_step": s}. `--resume DIR` alone restarts the step counter at 0 and
trains every step again; `--skip_until_initial_step` skips the steps already done. Past epoch 1
sd-scripts still records a relative step (docs/sd-scripts.md#step-counter-after-a-resume), so a caller that knows the true step of a state
(from its own events) passes it in `known_steps`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.fsutil import load_json

__all__ = [
    "Extension",
    "SavedState",
    "latest_state",
    "plan_extension",
    "resume_problem",
    "saved_states",
    "step_checkpoint_name",
]

STATE_SUFFIX = "-state"
TRAIN_STATE_FILE = "train_state.json"
# train_state.json is written first (a pre-save hook), then accelerate writes these, random states
# last: a folder without them was cut short (Ctrl-C while saving) and cannot be resumed from.
COMPLETE_STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin")
COMPLETE_STATE_LAST = "random_states_*.pkl"
_STEP_STATE = re.compile(r"-step(\d{8})-state$")
_EPOCH_STATE = re.compile(r"-(\d{6})-state$")


@dataclass(frozen=True)
class SavedState:
    path: Path
    step: int  # optimization steps done when it was saved
    epoch: int | None
    is_final: bool  # NAME-state: written at the end of training


def resume_args(state_dir: Path, initial_step: int | None = None) -> list[str]:
    """Arguments that continue a run from state_dir with the step counter right.

    initial_step: the true step when train_state.json holds a relative one (docs/sd-scripts.md#step-counter-after-a-resume); it then
    overrides the state's step (sd-scripts warns "steps from the state is ignored").
    """
    args = ["--resume", str(state_dir), "--skip_until_initial_step"]
    if initial_step is not None:
        args += ["--initial_step", str(initial_step)]
    return args


def resume_problem(state: SavedState, steps_per_epoch: int) -> str | None:
    """Why sd-scripts v0.10.1 would not continue correctly from this state, or None.

    Past the first epoch, --skip_until_initial_step sets global_step to the step *within* the epoch
    (train_network.py: NetworkTrainer.train, where it skips epochs before the loop; docs/sd-scripts.md#step-counter-after-a-resume): the checkpoints after the resume get the names of earlier
    ones and overwrite them, and the LoRA's ss_steps metadata is wrong. Within epoch 1 it is exact.
    """
    if steps_per_epoch <= 0 or state.step < steps_per_epoch:
        return None
    return (
        f"its last state ({state.path.name}, step {state.step}) is past the first epoch ({steps_per_epoch} steps), "
        "where sd-scripts v0.10.1 restarts its step counter inside the epoch: the checkpoints after a resume "
        "would overwrite earlier ones and carry wrong step metadata"
    )


def resume_limit_warning(epochs: int, steps_per_epoch: int) -> str | None:
    """The plan-time warning for a run that saves state over several epochs (see resume_problem)."""
    if epochs <= 1:
        return None
    return (
        f"this run trains {epochs} epochs of {steps_per_epoch} steps; sd-scripts v0.10.1 resumes correctly only "
        f"from a state saved in the first epoch (before step {steps_per_epoch}), so `train --resume` refuses later "
        "states. Without --repeats or max_train_epochs, plan chooses one epoch"
    )


def read_state(path: Path, known_steps: dict[str, int] | None = None) -> SavedState | None:
    """The state saved in path, or None when it is not a complete state folder."""
    if not all((path / name).is_file() for name in COMPLETE_STATE_FILES) or not any(path.glob(COMPLETE_STATE_LAST)):
        return None
    train_state = path / TRAIN_STATE_FILE
    try:
        data = load_json(train_state.read_text(encoding="utf-8"))
        step = int(data["current_step"])
        epoch = int(data["current_epoch"]) if data.get("current_epoch") is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if known_steps and str(path) in known_steps:
        step = known_steps[str(path)]
    final = not _STEP_STATE.search(path.name) and not _EPOCH_STATE.search(path.name)
    return SavedState(path=path, step=step, epoch=epoch, is_final=final)


def saved_states(output_dir: Path, output_name: str, known_steps: dict[str, int] | None = None) -> list[SavedState]:
    """Every usable state of this output name, oldest step first."""
    if not output_dir.is_dir():
        return []
    states = []
    for path in output_dir.iterdir():
        if path.is_dir() and path.name.startswith(output_name) and path.name.endswith(STATE_SUFFIX):
            state = read_state(path, known_steps)
            if state is not None:
                states.append(state)
    return sorted(states, key=lambda s: (s.step, s.path.stat().st_mtime))


def latest_state(output_dir: Path, output_name: str, known_steps: dict[str, int] | None = None) -> SavedState | None:
    states = saved_states(output_dir, output_name, known_steps)
    return states[-1] if states else None


# -- extending a finished or early-stopped run ------------------------------------------------------

STEP_CHECKPOINT = "{name}-step{step:08d}.safetensors"  # train_util.py: get_step_ckpt_name (STEP_FILE_NAME)


def step_checkpoint_name(output_name: str, step: int) -> str:
    """The file name train_network.py gives the LoRA it saves at `step` (save_every_n_steps)."""
    return STEP_CHECKPOINT.format(name=output_name, step=step)


@dataclass(frozen=True)
class Extension:
    """How train_network.py v0.10.1 continues a run past its last saved step, numbering on from it.

    From a state (`--resume`, exact: the optimizer, scheduler and RNG go on) where that state lies
    in the first epoch; otherwise from the LoRA weights (`--network_weights`: a fresh optimizer and
    LR schedule). Either way `--skip_until_initial_step` puts global_step at the old last step, so
    checkpoints, samples and ss_steps carry the true step. Past epoch 1 sd-scripts would restart
    that counter inside the epoch (resume_problem); for weights the dataset's num_repeats are
    multiplied (`repeats_factor`) so that the skipped steps lie inside the first, longer epoch.
    Skipped batches are skipped by accelerate's sampler, not loaded.
    """

    from_step: int
    total_steps: int  # the new max_train_steps
    state: SavedState | None
    weights: Path | None
    repeats_factor: int = 1

    @property
    def source(self) -> Path:
        if self.state is not None:
            return self.state.path
        assert self.weights is not None
        return self.weights


def plan_extension(
    *,
    from_step: int,
    steps: int,
    weights: Path | None,
    states: list[SavedState],
    steps_per_epoch: int,
    grad_accum: int = 1,
) -> Extension:
    """The way to extend a run whose last checkpoint is at from_step (weights: that LoRA file) by `steps`."""
    total = from_step + steps
    state = next((s for s in reversed(states) if s.step == from_step and not s.is_final), None)
    if state is not None and resume_problem(state, steps_per_epoch) is None:
        return Extension(from_step, total, state, None)
    if weights is None:
        raise ValueError(f"no LoRA file at step {from_step} to continue from")
    skipped = from_step * max(1, grad_accum)  # train_network.py multiplies initial_step by the accumulation
    factor = 1 if steps_per_epoch <= 0 or skipped < steps_per_epoch else skipped // steps_per_epoch + 2
    return Extension(from_step, total, None, weights, factor)


def extension_args(extension: Extension, dataset_config: Path | None) -> list[str]:
    """Arguments that continue the run (they override config.toml: docs/sd-scripts.md#config-file-merging).

    dataset_config: where extension_dataset_toml's text was written, when repeats_factor > 1.
    """
    args = ["--max_train_steps", str(extension.total_steps)]
    if extension.state is not None:
        recorded = read_state(extension.state.path)
        args += resume_args(
            extension.state.path,
            initial_step=extension.from_step if recorded is None or recorded.step != extension.from_step else None,
        )
        return args
    args += ["--network_weights", str(extension.weights)]
    args += ["--initial_step", str(extension.from_step), "--skip_until_initial_step"]
    if extension.repeats_factor > 1 and dataset_config is not None:
        args += ["--dataset_config", str(dataset_config)]
    return args


def extension_dataset_toml(text: str, factor: int) -> str:
    """The run's dataset.toml with every subset's num_repeats multiplied by factor (one longer epoch).

    A subset without num_repeats has sd-scripts' default of 1 (config_util.py: BaseSubsetParams).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    import tomli_w

    doc = tomllib.loads(text)
    for dataset in doc.get("datasets", []):
        for subset in dataset.get("subsets", []):
            subset["num_repeats"] = int(subset.get("num_repeats", 1)) * factor
    header = (
        f"# The run's dataset.toml with num_repeats x{factor}: an extension skips its first steps inside one epoch.\n"
    )
    return header + tomli_w.dumps(doc)
