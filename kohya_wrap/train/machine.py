"""Where a run trains: the machine train finds at launch, mapped from what the plan asks.

plan.json says what to train and on how many GPUs per machine; this module finds the interpreter,
the sd-scripts checkout, the GPUs and their precision on the machine that trains, so a run
directory planned elsewhere (a laptop, another virtualenv) trains here. run.json records the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.rundir import Plan
from kohya_wrap.sdscripts.checkout import Checkout, locate
from kohya_wrap.sdscripts.command import Launch, default_cpu_threads
from kohya_wrap.sdscripts.trainer import precision_for, set_by, trainer_settings
from kohya_wrap.train.memory import Fit, fit_gpu


@dataclass(frozen=True)
class GpuInfo:
    count: int
    bf16: bool  # every visible GPU computes bf16 natively (compute capability 8.0 or later)
    names: tuple[str, ...] = ()
    memory_mib: int | None = None  # the smallest visible GPU's total memory; None where nvidia-smi did not say


@dataclass(frozen=True)
class Gpu:
    device: str  # how CUDA_VISIBLE_DEVICES names it (nvidia-smi's index unless the variable names it otherwise)
    name: str
    compute_capability: float | None
    memory_mib: int | None = None  # total


def cuda_visible_devices() -> list[str] | None:
    """The devices CUDA_VISIBLE_DEVICES names, in its order; None when it is not set ("" or "-1": none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else [v.strip() for v in visible.split(",") if v.strip() not in ("", "-1")]


def visible_gpus() -> list[Gpu]:
    """The CUDA GPUs a process started here sees, from nvidia-smi: kohya-wrap never imports torch (seconds).

    CUDA_VISIBLE_DEVICES, when set, chooses and orders them ("" or "-1": none); nvidia-smi itself ignores it.
    """
    chosen = cuda_visible_devices()
    if chosen == []:
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = [_gpu_row(line) for line in out.splitlines() if line.strip()]
    if chosen is None:
        return gpus
    by_index = {g.device: g for g in gpus}
    # a device named by its index is that row; one named otherwise (a UUID) is taken in order
    return [
        by_index.get(c) or Gpu(c, gpus[n].name, gpus[n].compute_capability, gpus[n].memory_mib)
        for n, c in enumerate(chosen)
        if c in by_index or n < len(gpus)
    ]


def _gpu_row(line: str) -> Gpu:
    cells = [c.strip() for c in line.split(",")]
    try:
        capability: float | None = float(cells[2])
    except (IndexError, ValueError):
        capability = None
    try:
        memory: int | None = int(cells[3].split()[0])  # "81559 MiB"
    except (IndexError, ValueError):
        memory = None
    return Gpu(cells[0], cells[1] if len(cells) > 1 else "", capability, memory)


def detect_gpus() -> GpuInfo:
    """How many CUDA GPUs train here and whether all of them compute bf16 natively."""
    gpus = visible_gpus()
    bf16 = bool(gpus) and all(g.compute_capability is not None and g.compute_capability >= 8.0 for g in gpus)
    sizes = [g.memory_mib for g in gpus if g.memory_mib is not None]
    memory = min(sizes) if sizes and len(sizes) == len(gpus) else None
    return GpuInfo(len(gpus), bf16, tuple(g.name for g in gpus), memory)


@dataclass(frozen=True)
class Machine:
    python: str  # the interpreter that runs accelerate and the trainer: the one running kohya-wrap
    checkout: Checkout
    gpus: GpuInfo
    launch: Launch
    precision_source: str  # "auto" (chosen from the GPUs found) or "plan" (the preset or --set chose it)
    notes: tuple[str, ...] = ()
    fit: Fit | None = None  # the GPU memory the plan needs, and what train changed to fit it (None on a CPU)

    @property
    def device(self) -> str:
        return "cpu" if self.launch.cpu else "cuda"


def resolve_machine(
    plan: Plan, *, sd_scripts: str | Path | None = None, gpu_info: GpuInfo | None = None, python: str | None = None
) -> Machine:
    """This machine, checked against what the plan asks; KohyaWrapError before anything starts."""
    checkout = locate(sd_scripts)
    hardware = gpu_info if gpu_info is not None else detect_gpus()
    cuda = hardware.count > 0
    request = plan.launch
    machines = request.machines
    _check_gpus(request.gpus, machines.count, hardware)
    notes: list[str] = []
    settings = trainer_settings(plan.values)
    if plan.auto_mixed_precision:
        precision, source = precision_for(cuda, hardware.bf16), "auto"
    else:
        precision, source = settings.mixed_precision, "plan"
        if not cuda and precision != "no":
            notes.append(
                f"mixed precision {precision!r} on a machine without a CUDA GPU: the CPU run may fail; "
                "fp32 (no mixed precision) is what CPUs train in"
            )
    launch = Launch(
        num_processes=request.num_processes,
        mixed_precision=precision,
        cpu=not cuda,
        num_machines=machines.count,
        machine_rank=machines.rank,
        main_process_ip=machines.main_ip,
        main_process_port=machines.main_port,
    )
    launch = replace(launch, cpu_threads=default_cpu_threads(launch.num_processes, launch.cpu, launch.num_machines))
    fit = fit_gpu(settings, set_by(plan.sources, "--set"), precision, hardware.memory_mib) if cuda else None
    if fit is not None and fit.note:
        notes.append(fit.note)
    return Machine(
        python=python or sys.executable,
        checkout=checkout,
        gpus=hardware,
        launch=launch,
        precision_source=source,
        notes=tuple(notes),
        fit=fit,
    )


def _check_gpus(gpus: int, machine_count: int, hardware: GpuInfo) -> None:
    """The GPUs the plan asks for, against what this machine has."""
    cuda = hardware.count > 0
    if cuda and gpus > hardware.count:
        raise KohyaWrapError(
            f"--gpus {gpus}: only {hardware.count} CUDA GPU(s) visible",
            f"use --gpus {hardware.count} or fewer (plan the run again)",
        )
    if not cuda and gpus > 1:
        raise KohyaWrapError(
            f"--gpus {gpus}: no CUDA GPU found, so training runs on the CPU in one process",
            "leave out --gpus, or run on a machine with GPUs",
        )
    if not cuda and machine_count > 1:
        raise KohyaWrapError(
            f"--num-machines {machine_count}: no CUDA GPU found on this machine",
            "multi-machine training needs GPUs on every machine",
        )
