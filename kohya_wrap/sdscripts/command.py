"""The command line that starts train_network.py: `accelerate launch` with every flag explicit
(docs/sd-scripts.md#launching).

Without --num_processes accelerate uses every visible GPU, and missing flags print a warning of
defaults; so all are passed. The launcher's --mixed_precision does not change training precision
(sd-scripts passes its own), but is kept equal to the script's to avoid confusion. Everything here
is resolved for the machine that trains, at launch; nothing of it is in plan.json.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.codec import TomlValue
from kohya_wrap.sdscripts import TRAIN_SCRIPT
from kohya_wrap.sdscripts.configs import relocate_dataset_toml, with_batch_size
from kohya_wrap.sdscripts.resume import (
    Extension,
    SavedState,
    extension_args,
    extension_dataset_toml,
    read_state,
    resume_args,
)

__all__ = [
    "CommandFiles",
    "CommandRequest",
    "Fitted",
    "Launch",
    "TrainerCommand",
    "default_cpu_threads",
    "trainer_command",
]

ACCELERATE_MODULE = "accelerate.commands.launch"


@dataclass(frozen=True)
class Launch:
    num_processes: int = 1
    mixed_precision: str = "no"
    cpu: bool = False  # no CUDA device: accelerate --cpu
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    cpu_threads: int | None = None  # OMP_NUM_THREADS of the trainer; None: chosen from the core count


def default_cpu_threads(num_processes: int, cpu: bool, num_machines: int = 1) -> int:
    """A CPU run computes with OpenMP threads, so it gets every core; GPU processes share the cores,
    which the data loader workers also need."""
    cores = os.cpu_count() or 1
    if cpu:
        return cores
    local = max(1, num_processes // max(1, num_machines))
    return max(1, min(4, cores // local))


def render_accelerate_config(launch: Launch) -> str:
    """accelerate's own config file for this run.

    Without --config_file, `accelerate launch` reads the user's saved default config
    (~/.cache/huggingface/accelerate/default_config.yaml) and takes from it whatever the command
    line does not say, such as DeepSpeed or FSDP. Our own file, passed explicitly, shuts that out.
    """
    if launch.cpu:
        distributed = "NO"
    elif launch.num_processes > 1 or launch.num_machines > 1:
        distributed = "MULTI_GPU"
    else:
        distributed = "NO"
    lines = [
        "# Written by kohya-wrap: accelerate reads this instead of any saved default config.",
        "compute_environment: LOCAL_MACHINE",
        f"distributed_type: '{distributed}'",
        f"num_processes: {launch.num_processes}",
        f"num_machines: {launch.num_machines}",
        f"machine_rank: {launch.machine_rank}",
        *(
            [f"main_process_ip: {launch.main_process_ip}", f"main_process_port: {launch.main_process_port}"]
            if launch.num_machines > 1
            else []
        ),
        f"mixed_precision: '{launch.mixed_precision}'",
        f"use_cpu: {'true' if launch.cpu else 'false'}",
    ]
    return "\n".join(lines) + "\n"


def build_argv(
    checkout: Path,
    config_toml: Path,
    dataset_toml: Path,
    accelerate_config: Path,
    launch: Launch,
    python: str | None = None,
) -> list[str]:
    """The argv (never a shell string) that trains with these configs.

    accelerate_config: where render_accelerate_config's text is written before the launch.
    """
    argv = _accelerate_args(launch, accelerate_config, python)
    argv += [
        str(Path(checkout) / TRAIN_SCRIPT),
        "--config_file",
        str(config_toml),
        "--dataset_config",
        str(dataset_toml),
    ]
    return argv


def _accelerate_args(launch: Launch, accelerate_config: Path, python: str | None) -> list[str]:
    """`accelerate launch` and its flags, every one explicit."""
    threads = launch.cpu_threads or default_cpu_threads(launch.num_processes, launch.cpu, launch.num_machines)
    argv = [
        python or sys.executable,
        "-m",
        ACCELERATE_MODULE,
        "--config_file",
        str(accelerate_config),
        "--num_processes",
        str(launch.num_processes),
        "--num_machines",
        str(launch.num_machines),
        "--mixed_precision",
        launch.mixed_precision,
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        str(threads),
    ]
    if launch.cpu:
        argv.append("--cpu")
    elif launch.num_processes > 1 or launch.num_machines > 1:
        argv.append("--multi_gpu")
    if launch.num_machines > 1:
        if not launch.main_process_ip or not launch.main_process_port:
            raise ValueError("a multi-machine launch needs main_process_ip and main_process_port")
        argv += [
            "--machine_rank",
            str(launch.machine_rank),
            "--main_process_ip",
            launch.main_process_ip,
            "--main_process_port",
            str(launch.main_process_port),
        ]
    return argv


def base_model_args(path: Path) -> list[str]:
    """Arguments that point the trainer at the base model file on this machine; sd-scripts lets the
    command line override --config_file values (docs/sd-scripts.md#config-file-merging)."""
    return ["--pretrained_model_name_or_path", str(path)]


# config.toml values plan points into the run directory (sdscripts.values.run_values); dataset_config is
# on build_argv's command line already.
RUN_DIR_PATH_KEYS = ("output_dir", "logging_dir", "sample_prompts")


def relocated_args(values: Mapping[str, TomlValue], planned_at: Path, run_dir: Path) -> list[str]:
    """For a run directory planned at `planned_at` and now at `run_dir` (copied or moved): the
    command-line options that point each run-directory path of config.toml at `run_dir` (the
    command line beats the file: docs/sd-scripts.md#config-file-merging). Paths outside the old run
    directory (a --set logging_dir of the user's own) are left as planned."""
    args: list[str] = []
    for key in RUN_DIR_PATH_KEYS:
        value = values.get(key)
        if not isinstance(value, str):
            continue
        path = Path(value)
        if path == planned_at or planned_at in path.parents:
            args += [f"--{key}", str(run_dir / path.relative_to(planned_at))]
    return args


def tokenizer_args(cache_dir: Path) -> list[str]:
    """The tokenizer folder on this machine (the plan left kohya-wrap's own cache to train)."""
    return ["--tokenizer_cache_dir", str(cache_dir)]


def precision_args(mixed_precision: str) -> list[str]:
    """The precision train chose for the GPUs it found (the plan left it open)."""
    return ["--mixed_precision", mixed_precision]


def memory_args(
    *,
    gradient_checkpointing: bool = False,
    batch_size: int | None = None,
    gradient_accumulation_steps: int | None = None,
) -> list[str]:
    """What train changes to fit the GPU it found. train_network.py parses its command line over the values
    of --config_file (read_config_from_file: parse_args(namespace=config_args)), so these win. The dataset's
    own batch_size wins over --train_batch_size, so a smaller batch also needs its dataset file
    (configs.with_batch_size) as --dataset_config."""
    args = ["--gradient_checkpointing"] if gradient_checkpointing else []
    if batch_size is not None:
        args += ["--train_batch_size", str(batch_size)]
    if gradient_accumulation_steps is not None:
        args += ["--gradient_accumulation_steps", str(gradient_accumulation_steps)]
    return args


def build_env(*, offline: bool) -> dict[str, str]:
    """Only the variables we set; the caller adds them to its own environment.

    offline: the model and tokenizer are local files, so the run must never wait on the Hub.
    """
    env = {
        # stdout is block-buffered through a pipe; the progress we parse must arrive live.
        "PYTHONUNBUFFERED": "1",
        # rich wraps every log record at 80 columns when stderr is not a terminal.
        "COLUMNS": "1000",
        # sd-scripts logs English/Japanese text; a non-UTF-8 locale would make print() raise.
        "PYTHONIOENCODING": "utf-8",
    }
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@dataclass(frozen=True)
class CommandFiles:
    """Where the run's files are on the machine that trains (rundir.paths names them)."""

    config_toml: Path
    dataset_toml: Path
    gpu_dataset_toml: Path  # dataset.toml with the batch that fits the GPU, where train changed it
    extend_dataset_toml: Path  # dataset.toml with more repeats, for `train --extend` from LoRA weights
    accelerate_config: Path


@dataclass(frozen=True)
class Fitted:
    """What train changed to fit the GPU it found; None: the plan's value stands."""

    batch_size: int | None = None
    grad_accum: int | None = None
    gradient_checkpointing: bool | None = None


@dataclass(frozen=True)
class CommandRequest:
    """A planned run on the machine that trains it."""

    checkout: Path
    python: str
    launch: Launch
    files: CommandFiles
    values: Mapping[str, TomlValue]  # the plan's resolved values
    planned_dataset_toml: str | None  # dataset.toml as plan rendered it (None: the run directory has none)
    written_dataset_toml: str | None  # dataset.toml as it is in the run directory (None: absent)
    choose_precision: bool  # the plan left mixed precision to train: launch.mixed_precision goes on the command
    fitted: Fitted | None = None
    resume_from: SavedState | None = None
    extension: Extension | None = None
    base_model: Path | None = None  # the model fetched again on this machine, where config.toml's path is stale
    tokenizer_cache_dir: Path | None = None  # kohya-wrap's own cache, where the plan left the tokenizer to train
    planned_at: Path | None = None  # where the run directory was planned, when it was copied or moved since
    run_dir: Path | None = None  # where it is now


@dataclass(frozen=True)
class TrainerCommand:
    argv: tuple[str, ...]  # never a shell string
    accelerate_config: str  # written to files.accelerate_config before the launch
    dataset_toml: str | None  # dataset.toml rewritten for a moved run directory; None: it stands
    gpu_dataset_toml: str | None  # written to files.gpu_dataset_toml; None: the plan's batch stands
    extend_dataset_toml: str | None  # written to files.extend_dataset_toml; None: not extended that way


def trainer_command(request: CommandRequest) -> TrainerCommand:
    """The exact command that trains the planned run on this machine, and the files it reads besides the plan's."""
    files = request.files
    moved = request.planned_at is not None and request.run_dir is not None
    relocated = None
    if moved and request.written_dataset_toml is not None:
        assert request.planned_at is not None and request.run_dir is not None
        relocated = relocate_dataset_toml(request.written_dataset_toml, request.planned_at, request.run_dir)
    gpu_toml = _gpu_dataset_toml(request, relocated)
    argv = build_argv(
        request.checkout,
        files.config_toml,
        files.dataset_toml if gpu_toml is None else files.gpu_dataset_toml,
        files.accelerate_config,
        request.launch,
        request.python,
    )
    argv += _machine_args(request)
    extend_toml = None
    if request.extension is not None:
        argv += extension_args(request.extension, files.extend_dataset_toml)
        if request.extension.repeats_factor > 1:
            # on top of what this machine trains from: the moved folders, the batch that fits the GPU
            base = gpu_toml or relocated or request.written_dataset_toml
            if base is None:
                raise FileNotFoundError(
                    f"{files.dataset_toml} is missing: the extension's repeats go into a copy of it"
                )
            extend_toml = extension_dataset_toml(base, request.extension.repeats_factor)
    argv += _model_args(request)
    return TrainerCommand(
        argv=tuple(argv),
        accelerate_config=render_accelerate_config(request.launch),
        dataset_toml=relocated,
        gpu_dataset_toml=gpu_toml,
        extend_dataset_toml=extend_toml,
    )


def _gpu_dataset_toml(request: CommandRequest, relocated: str | None) -> str | None:
    """dataset.toml with the batch train chose to fit the GPU (sd-scripts reads the batch from it); None: the plan's.

    Built on the relocated dataset.toml where the run directory moved, else on the plan's."""
    batch = request.fitted.batch_size if request.fitted is not None else None
    planned = relocated or request.planned_dataset_toml
    if batch is None or planned is None:
        return None
    return with_batch_size(
        planned,
        batch,
        f"Written by kohya-wrap train: {request.files.dataset_toml.name} with batch {batch} to fit the GPU it found "
        "(run.json machine.memory_fit says why).",
    )


def _machine_args(request: CommandRequest) -> list[str]:
    """Precision and memory chosen for this machine, and the state a resume continues from."""
    args = precision_args(request.launch.mixed_precision) if request.choose_precision else []
    fitted = request.fitted
    if fitted is not None and (fitted.batch_size, fitted.grad_accum, fitted.gradient_checkpointing) != (None,) * 3:
        args += memory_args(
            gradient_checkpointing=bool(fitted.gradient_checkpointing),
            batch_size=fitted.batch_size,
            gradient_accumulation_steps=fitted.grad_accum,
        )
    state = request.resume_from
    if state is not None:
        # the step sd-scripts' own train_state.json holds can lag ours (docs/sd-scripts.md#step-counter-after-a-resume)
        recorded = read_state(state.path)
        argv_step = state.step if (recorded.step if recorded else None) != state.step else None
        args += resume_args(state.path, initial_step=argv_step)
    return args


def _model_args(request: CommandRequest) -> list[str]:
    """The model and tokenizer on this machine, and the run directory's paths where it moved."""
    args = [] if request.base_model is None else base_model_args(request.base_model)
    if request.tokenizer_cache_dir is not None:
        args += tokenizer_args(request.tokenizer_cache_dir)
    if request.planned_at is not None and request.run_dir is not None:
        # a copied or moved run directory trains where it is, as it trains on the machine it finds
        args += relocated_args(request.values, request.planned_at, request.run_dir)
    return args
