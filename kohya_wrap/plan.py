"""plan: a preset and a prepared dataset become a run directory: sd-scripts' configs, validated, plus plan.json.

make_plan() decides everything (values and where each came from, repeats and epochs, the command line)
and returns a frozen Plan; write_plan() writes RUN_DIR atomically; load_plan() reads it back.
The run directory layout and plan.json are specified in notes/CONTRACTS.md ("Run directory").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from kohya_wrap import __version__
from kohya_wrap.dataset import Dataset, scan_dataset
from kohya_wrap.errors import DatasetError, KohyaWrapError, PresetError, RunDirError
from kohya_wrap.fsutil import atomic_write_json, atomic_write_text
from kohya_wrap.models import BaseModel, resolve_base_model, resolve_tokenizer
from kohya_wrap.preset import Preset, Setting, load_preset
from kohya_wrap.sdscripts import PINNED_TAG, arguments, configs, steps
from kohya_wrap.sdscripts import values as sdvalues
from kohya_wrap.sdscripts.checkout import Checkout, locate
from kohya_wrap.sdscripts.command import ACCELERATE_CONFIG, Launch, build_argv, build_env, render_accelerate_config
from kohya_wrap.sdscripts.resume import resume_limit_warning

PLAN_SCHEMA = 1
PLAN_JSON = "plan.json"
CONFIG_TOML = "config.toml"
DATASET_TOML = "dataset.toml"
SAMPLE_PROMPTS = "sample_prompts.txt"
OUTPUT_DIR = "output"
PLAN_FILES = (CONFIG_TOML, DATASET_TOML, SAMPLE_PROMPTS, ACCELERATE_CONFIG, PLAN_JSON)
# Files a started run leaves (CONTRACTS.md): a folder holding any of them is never planned over.
RUN_FILES = ("run.json", "train.log", "events.jsonl")


@dataclass(frozen=True)
class GpuInfo:
    count: int
    bf16: bool  # every visible GPU computes bf16 natively (compute capability 8.0 or later)
    names: tuple[str, ...] = ()


def detect_gpus() -> GpuInfo:
    """CUDA GPUs from nvidia-smi: planning must not import torch (it takes seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return GpuInfo(0, False)
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return GpuInfo(0, False)
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return GpuInfo(0, False)
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    if visible is not None:
        rows = rows[:len([v for v in visible.split(",") if v.strip()])]
    try:
        bf16 = bool(rows) and all(float(r[1]) >= 8.0 for r in rows)
    except (IndexError, ValueError):
        bf16 = False
    return GpuInfo(len(rows), bf16, tuple(r[0] for r in rows))


@dataclass(frozen=True)
class Machines:
    """Several machines training one run together (accelerate's multi-node data parallel launch).

    Every machine runs the same plan with its own rank; rank 0 is the main process at main_ip:main_port.
    """

    count: int = 1
    rank: int = 0
    main_ip: str | None = None
    main_port: int = 29500

    def check(self) -> None:
        if self.count < 1:
            raise KohyaWrapError(f"--num-machines {self.count}: must be at least 1")
        if not 0 <= self.rank < self.count:
            raise KohyaWrapError(f"--machine-rank {self.rank}: must be 0 to {self.count - 1} for {self.count} machine(s)",
                                 "give rank 0 on the main machine and 1, 2, ... on the others")
        if self.count > 1 and not self.main_ip:
            raise KohyaWrapError(f"--num-machines {self.count} needs --main-process-ip",
                                 "give the address of the rank-0 machine, reachable from every machine")
        if not 0 < self.main_port < 65536:
            raise KohyaWrapError(f"--main-process-port {self.main_port}: not a TCP port")


@dataclass(frozen=True)
class PlanSubset:
    dir: str
    images: int
    repeats: int
    class_tokens: str
    is_reg: bool


@dataclass(frozen=True)
class Plan:
    run_dir: Path
    created_at: str
    preset_name: str
    preset_sha256: str
    preset_files: tuple[str, ...]
    dataset_dir: str
    manifest_sha256: str | None
    subsets: tuple[PlanSubset, ...]
    base_model: Mapping[str, str]  # source, path, kind
    tokenizer_cache_dir: str | None
    values: Mapping[str, Any]  # sd-scripts argument -> the value written to config.toml
    sources: Mapping[str, str]  # sd-scripts argument -> "default", "preset:<name>", "--set" or "plan"
    ours: Mapping[str, Any]
    steps: Mapping[str, Any]
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    output_dir: Path
    output_name: str
    lora_file: Path
    sd_scripts: Mapping[str, Any]  # path, commit, matches_pin
    warnings: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # file name in RUN_DIR -> its text

    @property
    def max_train_steps(self) -> int:
        return int(self.steps["max_train_steps"])

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "kohya_wrap_version": __version__,
            "created_at": self.created_at,
            "preset": {"name": self.preset_name, "sha256": self.preset_sha256, "files": list(self.preset_files)},
            "dataset": {"dir": self.dataset_dir, "manifest_sha256": self.manifest_sha256,
                        "subsets": [{"dir": s.dir, "images": s.images, "repeats": s.repeats,
                                     "class_tokens": s.class_tokens, "is_reg": s.is_reg} for s in self.subsets]},
            "base_model": dict(self.base_model),
            "tokenizer_cache_dir": self.tokenizer_cache_dir,
            "values": {k: {"value": v, "source": self.sources[k]} for k, v in self.values.items()},
            "ours": dict(self.ours),
            "steps": dict(self.steps),
            "launch": {"argv": list(self.argv), "env": dict(self.env), "cwd": str(self.cwd)},
            "output": {"dir": str(self.output_dir), "name": self.output_name, "lora_file": str(self.lora_file)},
            "sd_scripts": dict(self.sd_scripts),
            "warnings": list(self.warnings),
        }


def check_run_dir(run_dir: Path) -> None:
    """Refuse a folder that holds a run (finished or started) or anything that is not ours."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a folder", "choose a new run directory with -o")
    started = [name for name in RUN_FILES if (run_dir / name).exists()]
    output = run_dir / OUTPUT_DIR
    if output.is_dir() and any(output.iterdir()):
        started.append(f"{OUTPUT_DIR}/")
    if started:
        raise RunDirError(f"{run_dir} holds a run ({', '.join(started)}); a run directory is never overwritten",
                          "choose a new run directory with -o")
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in PLAN_FILES and p.name != OUTPUT_DIR
                     and not p.name.startswith("."))
    if foreign:
        raise RunDirError(f"{run_dir} is not empty ({', '.join(foreign[:5])}) and is not a kohya-wrap run directory",
                          "choose a new or empty run directory with -o")


_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


def _output_name(dataset: Dataset) -> str:
    word = dataset.token or dataset.train_subsets[0].class_tokens.split(" ")[0]
    name = _NAME_RE.sub("_", word).strip("_") or "lora"
    return name


def _subject_words(dataset: Dataset) -> dict[str, str]:
    subject = dataset.train_subsets[0].class_tokens
    first, _, rest = subject.partition(" ")
    return {"subject": subject, "token": dataset.token or first, "class": dataset.class_word or rest or first}


def _sample_prompts(preset: Preset, dataset: Dataset, shape: sdvalues.Shape) -> list[configs.SamplePrompt]:
    ours = {k: s.value for k, s in preset.ours.items()}
    width, height = (ours["sample_size"], ours["sample_size"]) if ours["sample_size"] else (shape.width, shape.height)
    words = _subject_words(dataset)
    out = []
    for i, template in enumerate(ours["prompts"]):
        try:
            text = template.format(**words)
        except (KeyError, IndexError, ValueError) as e:
            raise PresetError(f"[kohya_wrap] prompts: {template!r} has an unknown placeholder {e}",
                              "use {subject}, {token} or {class}") from None
        out.append(configs.SamplePrompt(text, ours["negative_prompt"], width, height, ours["sample_seed"] + i,
                                        ours["sample_steps"], ours["sample_scale"]))
    return out


def make_plan(
    dataset_dir: str | Path, *, preset: str | Path, base_model: str, run_dir: str | Path,
    overrides: Sequence[str] = (), gpus: int | None = None, tokenizer_cache_dir: str | Path | None = None,
    allow_pickle: bool = False, sd_scripts: str | Path | None = None, gpu_info: GpuInfo | None = None,
    machines: Machines = Machines(),
) -> Plan:
    """Everything a run needs, decided and validated; nothing is written.

    gpus: GPUs of this machine; with several machines every machine has as many, and the step
    arithmetic counts the processes of all of them.
    """
    run = Path(run_dir).expanduser().resolve()
    check_run_dir(run)
    chosen = load_preset(preset, overrides)
    dataset = scan_dataset(dataset_dir)
    checkout: Checkout = locate(sd_scripts)
    model: BaseModel = resolve_base_model(base_model, allow_pickle=allow_pickle)
    tokenizer = resolve_tokenizer(tokenizer_cache_dir)
    hardware = gpu_info if gpu_info is not None else detect_gpus()
    warnings: list[str] = list(model.warnings)

    cuda = hardware.count > 0
    local_gpus = gpus if gpus is not None else 1
    if local_gpus < 1:
        raise KohyaWrapError(f"--gpus {local_gpus}: must be at least 1")
    if cuda and local_gpus > hardware.count:
        raise KohyaWrapError(f"--gpus {local_gpus}: only {hardware.count} CUDA GPU(s) visible",
                             f"use --gpus {hardware.count} or fewer")
    if not cuda and local_gpus > 1:
        raise KohyaWrapError(f"--gpus {local_gpus}: no CUDA GPU found, so training runs on the CPU in one process",
                             "leave out --gpus, or run on a machine with GPUs")
    machines.check()
    if not cuda and machines.count > 1:
        raise KohyaWrapError(f"--num-machines {machines.count}: no CUDA GPU found on this machine",
                             "multi-machine training needs GPUs on every machine")
    num_processes = local_gpus * machines.count

    settings: dict[str, Setting] = dict(chosen.values)
    ours = {k: s.value for k, s in chosen.ours.items()}

    def decide(key: str, value: Any, source: str = "plan") -> None:
        settings[key] = Setting(arguments.convert(key, value), source)

    precision = sdvalues.precision_for(cuda, hardware.bf16) if ours["auto_mixed_precision"] else None
    for key, (value, source) in sdvalues.filled_in(settings, size=ours["size"], precision=precision).items():
        decide(key, value, source)
    shape = sdvalues.read_shape({k: s.value for k, s in settings.items()})
    if not cuda and shape.mixed_precision != "no":
        warnings.append(f"mixed precision {shape.mixed_precision!r} on a machine without a CUDA GPU: "
                        "the CPU run may fail; fp32 (no mixed precision) is what CPUs train in")

    # Steps: repeats and epochs landing in the preset's range (or what the user pinned with --set).
    step_subsets = [steps.StepSubset(s.images, s.repeats, s.is_reg, sdvalues.bucket_key(s.size, shape.enable_bucket))
                    for s in dataset.subsets]
    target = steps.StepTarget(ours["target_steps"], ours["min_steps"], ours["max_steps"],
                              ours["preferred_epochs"], ours["max_repeats"], ours["single_epoch"])
    sp = steps.plan_steps(
        step_subsets, target, batch_size=shape.batch_size, grad_accum=shape.grad_accum, num_processes=num_processes,
        choose_repeats=not dataset.repeats_explicit, fixed_steps=shape.pinned_steps, fixed_epochs=shape.pinned_epochs)
    warnings.extend(sp.warnings)
    if settings.get("save_state") is not None and settings["save_state"].value:
        limit = resume_limit_warning(sp.epochs, sp.count.steps_per_epoch)
        if limit:
            warnings.append(limit)

    prompts = _sample_prompts(chosen, dataset, shape)
    if not prompts and shape.wants_samples:
        warnings.append("the preset asks for samples but has no [kohya_wrap] prompts; no samples will be made")
    out_dir = run / OUTPUT_DIR
    output_name = shape.output_name or _output_name(dataset)
    managed = sdvalues.run_values(
        model=model.path, tokenizer_cache_dir=tokenizer, output_dir=out_dir,
        output_name=None if shape.output_name else output_name, dataset_config=run / DATASET_TOML,
        sample_prompts=run / SAMPLE_PROMPTS if prompts else None,
        max_train_steps=None if shape.pinned_steps is not None else sp.max_train_steps)
    for key, value in managed.items():
        decide(key, value)

    values = {k: s.value for k, s in settings.items()}
    problems = arguments.cross_checks(values)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = errors[0]
        source = settings[first.keys[0]].source if first.keys[0] in settings else "default"
        raise PresetError(f"{first.keys[0]} ({source}): {first.message}", first.hint)
    warnings.extend(p.message for p in problems if p.severity == "warning")
    for s in dataset.subsets:
        if s.size is not None and s.size != (shape.width, shape.height):
            if not shape.resizes_images:
                raise DatasetError(
                    f"{s.dir}: images are {s.size[0]}x{s.size[1]} px but the training resolution is {shape.resolution}, "
                    "and with bucketing and latent caching off sd-scripts refuses images of another size",
                    f"prepare the dataset at {shape.width} px, or --set enable_bucket=true")
            warnings.append(f"{s.dir.name}: images are {s.size[0]}x{s.size[1]} px, trained at {shape.resolution} (resized)")
            break

    subsets = tuple(PlanSubset(str(s.dir), s.images, r, s.class_tokens, s.is_reg) for s, r in zip(dataset.subsets, sp.repeats))
    launch = Launch(num_processes=num_processes, mixed_precision=shape.mixed_precision, cpu=not cuda,
                    num_machines=machines.count, machine_rank=machines.rank, main_process_ip=machines.main_ip,
                    main_process_port=machines.main_port)
    argv = build_argv(checkout.path, run / CONFIG_TOML, run / DATASET_TOML, launch)
    header = (f"Written by kohya-wrap {__version__} `plan` from preset {chosen.name} for sd-scripts {PINNED_TAG}.\n"
              "Regenerate it with `kohya-wrap plan`; edits here are not checked.")
    files = {
        CONFIG_TOML: configs.render_config_toml(values, header=header + "\nsd-scripts reads it with --config_file."),
        DATASET_TOML: configs.render_dataset_toml(
            [configs.DatasetSubset(s.dir, s.repeats, s.class_tokens, s.is_reg) for s in subsets],
            resolution=shape.resolution, batch_size=shape.batch_size, enable_bucket=shape.enable_bucket,
            header=header + "\nsd-scripts reads it with --dataset_config."),
        ACCELERATE_CONFIG: render_accelerate_config(launch),
    }
    if prompts:
        try:
            files[SAMPLE_PROMPTS] = configs.render_sample_prompts(prompts, header=header)
        except ValueError as e:
            raise PresetError(f"[kohya_wrap] prompts: {e}") from None
    count = sp.count
    step_info = {
        "train_images_x_repeats": count.train_images_x_repeats,
        "reg_images_x_repeats": count.reg_images_x_repeats,
        "batch_size": count.batch_size, "grad_accum": count.grad_accum, "num_processes": count.num_processes,
        "steps_per_epoch": count.steps_per_epoch, "epochs": sp.epochs, "max_train_steps": sp.max_train_steps,
        "arithmetic": sp.arithmetic,
    }
    return Plan(
        run_dir=run, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        preset_name=chosen.name, preset_sha256=chosen.sha256, preset_files=tuple(str(f) for f in chosen.files),
        dataset_dir=str(dataset.dir), manifest_sha256=dataset.manifest_sha256, subsets=subsets,
        base_model=MappingProxyType({"source": model.source, "path": str(model.path), "kind": model.kind}),
        tokenizer_cache_dir=str(tokenizer), values=MappingProxyType(values),
        sources=MappingProxyType({k: s.source for k, s in settings.items()}), ours=MappingProxyType(ours),
        steps=MappingProxyType(step_info), argv=tuple(argv), env=MappingProxyType(build_env(offline=True)), cwd=run,
        output_dir=out_dir, output_name=output_name, lora_file=out_dir / f"{output_name}{shape.model_suffix}",
        sd_scripts=MappingProxyType({"path": str(checkout.path), "commit": checkout.commit, "matches_pin": checkout.matches_pin}),
        warnings=tuple(warnings), files=MappingProxyType(files),
    )


def write_plan(plan: Plan) -> Path:
    """Write RUN_DIR: the configs first, plan.json last (its presence means the plan is complete)."""
    check_run_dir(plan.run_dir)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    stale = plan.run_dir / SAMPLE_PROMPTS
    if SAMPLE_PROMPTS not in plan.files and stale.exists():
        stale.unlink()
    for name, text in plan.files.items():
        atomic_write_text(plan.run_dir / name, text)
    atomic_write_json(plan.run_dir / PLAN_JSON, plan.to_json())
    return plan.run_dir / PLAN_JSON


def load_plan(run_dir: str | Path) -> Plan:
    run = Path(run_dir).expanduser().resolve()
    path = run / PLAN_JSON
    if not path.is_file():
        raise RunDirError(f"{run} has no {PLAN_JSON}: it is not a planned run directory",
                          "make one with `kohya-wrap plan DATASET_DIR --preset NAME --base-model MODEL -o RUN_DIR`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not valid JSON: {e}", "plan the run again into a new directory") from None
    if doc.get("schema") != PLAN_SCHEMA:
        raise RunDirError(f"{path} has plan schema {doc.get('schema')!r}; this kohya-wrap reads {PLAN_SCHEMA}",
                          "plan the run again with this kohya-wrap")
    try:
        files = {name: (run / name).read_text(encoding="utf-8") for name in (CONFIG_TOML, DATASET_TOML, SAMPLE_PROMPTS)
                 if (run / name).is_file()}
        return Plan(
            run_dir=run, created_at=doc["created_at"], preset_name=doc["preset"]["name"],
            preset_sha256=doc["preset"]["sha256"], preset_files=tuple(doc["preset"]["files"]),
            dataset_dir=doc["dataset"]["dir"], manifest_sha256=doc["dataset"]["manifest_sha256"],
            subsets=tuple(PlanSubset(**s) for s in doc["dataset"]["subsets"]),
            base_model=MappingProxyType(doc["base_model"]), tokenizer_cache_dir=doc["tokenizer_cache_dir"],
            values=MappingProxyType({k: v["value"] for k, v in doc["values"].items()}),
            sources=MappingProxyType({k: v["source"] for k, v in doc["values"].items()}),
            ours=MappingProxyType(doc["ours"]), steps=MappingProxyType(doc["steps"]),
            argv=tuple(doc["launch"]["argv"]), env=MappingProxyType(doc["launch"]["env"]), cwd=Path(doc["launch"]["cwd"]),
            output_dir=Path(doc["output"]["dir"]), output_name=doc["output"]["name"],
            lora_file=Path(doc["output"]["lora_file"]), sd_scripts=MappingProxyType(doc["sd_scripts"]),
            warnings=tuple(doc.get("warnings", ())), files=MappingProxyType(files),
        )
    except (KeyError, TypeError) as e:
        raise RunDirError(f"{path} is missing {e}", "plan the run again with this kohya-wrap") from None
