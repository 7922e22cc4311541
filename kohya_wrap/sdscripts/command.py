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
from typing import Any

from kohya_wrap.sdscripts import TRAIN_SCRIPT

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
    argv += [
        str(Path(checkout) / TRAIN_SCRIPT),
        "--config_file",
        str(config_toml),
        "--dataset_config",
        str(dataset_toml),
    ]
    return argv


def base_model_args(path: Path) -> list[str]:
    """Arguments that point the trainer at the base model file on this machine; sd-scripts lets the
    command line override --config_file values (docs/sd-scripts.md#config-file-merging)."""
    return ["--pretrained_model_name_or_path", str(path)]


# config.toml values plan points into the run directory (sdscripts.values.run_values); dataset_config is
# on build_argv's command line already.
RUN_DIR_PATH_KEYS = ("output_dir", "logging_dir", "sample_prompts")


def relocated_args(values: Mapping[str, Any], planned_at: Path, run_dir: Path) -> list[str]:
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
