"""kohya-wrap on one NVIDIA GPU beside the Kohya GUI's SD1.5 LoRA defaults and sd-scripts launched directly.

    python bench/gpu.py --out DIR [--deadline-s 420]     # on a machine with one NVIDIA GPU and a Python with torch
    python bench/gpu.py --dry-run                         # anywhere: checks every input, prints the plan, starts nothing

What it carries comes from `python bench/gpu_carry.py` (.gpu-carry/: wheels, sd-scripts v0.10.1, a tokenizer).
On the GPU machine it installs the carried wheels that machine lacks (or has at versions sd-scripts does not
run with) into a private folder (--work/site, first on PYTHONPATH), unpacks sd-scripts, builds the random
full-size SD1.5 checkpoint `smoke` trains on (speed does not depend on the weights) and a 20-image 512 px
dataset of drawn faces through `kohya-wrap prepare`, then runs, each in a time box, in this order:

  a  `kohya-wrap train` with the likeness preset, N steps (default 60), a sample at the last step;
  b  `kohya-wrap train` with the Kohya GUI's SD1.5 LoRA preset (GUI_PRESET: file and commit below), same steps;
  d  a CUDA out of memory on purpose (train_batch_size 512): `kohya-wrap train` must exit 10 with its advice;
  c  sd-scripts' train_network.py launched directly (`accelerate launch`), the command `train --dry-run`
     prints for the likeness preset: kohya-wrap's own overhead is a minus c.

For each: steady-state it/s (progress events between 1/6 of the steps and the last, by their wall-clock
times), time from the command's start to the first step, peak GPU memory (nvidia-smi polled every 0.5 s,
less what was in use before) and torch's own figure where the log prints one, sample seconds per 512 px
image, and the mixed precision train chose. results.json and results.md are rewritten under --out after
every phase, so a run stopped at any point leaves what it measured; the Markdown table is printed last.
When --deadline-s runs out, the phases not started are marked skipped.

--fake: the same phases with the fake trainer of tests/fakes (replayed sd-scripts output) and a stub
model, on any machine in seconds: tests run it to check the orchestration. --cpu-real PYTHON: phase a
with the real sd-scripts on this machine's CPU at 64 px for 2 steps (a rehearsal of the pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gpu_carry  # noqa: E402  (bench/ is not a package)

SCHEMA = 1
CALL_LIMIT_S = 480  # one device call, installs included
DEFAULT_DEADLINE_S = 420
TOKEN, CLASS_WORD = "ohwx", "man"
LIKENESS = "likeness-sd15"
OOM_BATCH = 512  # SD1.5 at 512 px without checkpointing needs GBs of activations per image: 512 far exceed 141 GB
OOM_EXIT = 10  # kohya_wrap.errors.ExitCode.TRAIN_OOM
OOM_ADVICE = "The GPU ran out of memory."  # the first sentence of kohya_wrap.train.outcome.ADVICE["oom"]
# Everything that comes back from the device (at most 8 files): these four.
RESULTS_JSON, RESULTS_MD, BENCH_LOG, PHASES_LOG = "results.json", "results.md", "bench.log", "phases.log"
INTERRUPT_GRACE_S = 15
LOG_TAIL_BYTES = 2**20  # of each phase's output (kohya-wrap's and the trainer's train.log), its last 1 MiB

# The Kohya GUI's SD1.5 LoRA preset (its only plain-LoRA SD1.5 preset; the others are LoCon, LoHa, LoKr, iA3,
# GLoRA or SDXL), as in bmaltais/kohya_ss at the commit below.
GUI_REPO = "bmaltais/kohya_ss"
GUI_PRESET = "presets/lora/sd15 - EDG_LoraOptiSettings.json"
GUI_COMMIT = (
    "45088f04af78e11cec5407ff4652ea3ed2c14422"  # the snapshot read (2026-07-10); the file last changed in a09d7e3
)


@dataclass(frozen=True)
class GuiSetting:
    gui_key: str
    gui_value: Any
    argument: str | None  # the sd-scripts argument it becomes; None: not passed
    value: Any  # what this bench passes
    note: str = ""


# Every setting of GUI_PRESET that reaches train_network.py for a standard LoRA, and what phase b passes.
GUI_SETTINGS: tuple[GuiSetting, ...] = (
    GuiSetting("LoRA_type", "Standard", "network_module", "networks.lora"),
    GuiSetting("network_dim", 64, "network_dim", 64),
    GuiSetting("network_alpha", 64, "network_alpha", 64.0),
    GuiSetting(
        "optimizer",
        "AdamW8bit",
        "optimizer_type",
        "AdamW",
        "AdamW8bit needs bitsandbytes, whose wheel (~70 MB) cannot travel within 64 MiB: torch's AdamW instead "
        "(more optimizer memory: 2 fp32 states per LoRA weight, a few hundred MB at dim 64)",
    ),
    GuiSetting("learning_rate", "0.0001", "learning_rate", 1e-4),
    GuiSetting("unet_lr", "0.0001", "unet_lr", 1e-4),
    GuiSetting("text_encoder_lr", "5e-05", "text_encoder_lr", [5e-5]),
    GuiSetting("lr_scheduler", "constant", "lr_scheduler", "constant"),
    GuiSetting("lr_warmup", "0", "lr_warmup_steps", 0),
    GuiSetting("train_batch_size", 3, "train_batch_size", 3),
    GuiSetting("mixed_precision", "bf16", "mixed_precision", "bf16"),
    GuiSetting("save_precision", "bf16", "save_precision", "bf16"),
    GuiSetting(
        "max_resolution",
        "512,650",
        "resolution",
        "512",
        "the same 512 px squares as the other runs: without buckets sd-scripts refuses images smaller than "
        "the resolution (library/train_util.py:1647), and 512 px is what is compared",
    ),
    GuiSetting("enable_bucket", False, "enable_bucket", False),
    GuiSetting("cache_latents", True, "cache_latents", True),
    GuiSetting("clip_skip", 2, "clip_skip", 2),
    GuiSetting("noise_offset", "0.05", "noise_offset", 0.05),
    GuiSetting(
        "mem_eff_attn",
        True,
        "mem_eff_attn",
        True,
        "sd-scripts' own memory-efficient attention; it takes precedence over xformers "
        "(replace_unet_modules, library/train_util.py:3362), so the preset's xformers=true changes nothing",
    ),
    GuiSetting("xformers", True, None, None, "mem_eff_attn wins (above), and xformers is not carried"),
    GuiSetting("max_data_loader_n_workers", "1", "max_data_loader_n_workers", 1),
    GuiSetting("persistent_data_loader_workers", False, "persistent_data_loader_workers", False),
    GuiSetting("seed", "1234", "seed", 1234),
    GuiSetting("gradient_checkpointing", False, "gradient_checkpointing", False),
    GuiSetting("gradient_accumulation_steps", 1.0, "gradient_accumulation_steps", 1),
    GuiSetting("full_fp16", False, "full_fp16", False),
    GuiSetting("shuffle_caption", False, "shuffle_caption", False),
    GuiSetting("flip_aug", False, "flip_aug", False),
    GuiSetting("caption_extension", ".txt", None, None, "kohya-wrap's dataset.toml names .txt captions: the same"),
    GuiSetting("epoch", 1, None, None, "the same step count as the other runs (--steps), one epoch"),
    GuiSetting("save_every_n_epochs", 1, None, None, "one epoch: the LoRA is saved once, at the end"),
    GuiSetting("max_token_length", "75", None, None, "75 is sd-scripts' default"),
    GuiSetting("min_snr_gamma", 0, None, None, "0 is off, sd-scripts' default"),
    GuiSetting("num_cpu_threads_per_process", 2, None, None, "accelerate's CPU threads: kohya-wrap's own choice"),
)


def gui_preset_toml(steps: int) -> str:
    """GUI_SETTINGS as a kohya-wrap preset file, for phase b: no samples (the GUI preset has no prompts)."""
    lines = [
        "# The Kohya GUI's SD1.5 LoRA preset, mapped to sd-scripts' arguments by bench/gpu.py (GUI_SETTINGS).",
        f"# {GUI_REPO} {GUI_PRESET} at {GUI_COMMIT}",
        "schema = 1",
        'extends = "base"',
        'description = "Kohya GUI sd15 - EDG_LoraOptiSettings (bench)"',
        "[values]",
    ]
    for setting in GUI_SETTINGS:
        if setting.argument is not None:
            lines.append(f"{setting.argument} = {_toml_value(setting.value)}")
    lines += [
        "[kohya_wrap]",
        f"target_steps = {steps}",
        f"min_steps = {steps}",
        f"max_steps = {steps}",
        "size = 512",
        'crop = "center"',
        "auto_mixed_precision = false",
    ]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


# --- profiles: where and how big ---------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str  # "gpu", "fake" or "cpu-real"
    steps: int
    images: int
    image_size: int  # the drawn photos' side; prepare writes 512 px
    extra_sets: tuple[str, ...]  # --set items for every training run (a smaller resolution for a CPU)
    install: bool  # install the carried wheels
    python: str
    boxes: dict[str, float]  # phase id -> its time box in seconds
    estimates: dict[str, float]  # phase id -> expected seconds on an H200 (the budget arithmetic)
    phases: tuple[str, ...]
    fake_args: dict[str, list[str]] = field(default_factory=dict)  # phase id -> the fake trainer's options


SETUP, MODEL, DATASET = "setup", "base_model", "dataset"
PHASE_LABELS = {
    SETUP: "install the carried wheels, probe the packages",
    MODEL: "build the random full-size SD1.5 checkpoint",
    DATASET: "draw faces and `kohya-wrap prepare` them at 512 px",
    "a": "kohya-wrap train, likeness preset",
    "b": "kohya-wrap train, Kohya GUI SD1.5 LoRA preset",
    "d": f"CUDA out of memory on purpose (batch {OOM_BATCH}): exit {OOM_EXIT} and advice",
    "c": "sd-scripts launched directly, likeness preset's command",
    "e": "memory: likeness preset, batch 1",
    "f": "memory: likeness preset, batch 4",
    "g": "memory: likeness preset, batch 4, gradient checkpointing",
}
# The memory runs: (batch, gradient checkpointing), MEMORY_STEPS steps, no samples, on phase a's dataset (its
# latents are cached already, so the VAE's encoding is not in their peak). Their figures are what
# kohya_wrap/train/memory.py's MEASURED table holds (results.json "memory_figures").
MEMORY_RUNS = {"e": (1, False), "f": (4, False), "g": (4, True)}
MEMORY_STEPS = 20
# the order they run in: what matters most first (the out-of-memory check is short)
TRAIN_PHASES = ("a", "d", "b", "c", "e", "f", "g")
ALL_PHASES = (SETUP, MODEL, DATASET, *TRAIN_PHASES)
MIN_START_S = 40.0  # a training phase is not started with less time than this left

GPU_PROFILE = Profile(
    name="gpu",
    steps=60,
    images=20,
    image_size=576,
    extra_sets=(),
    install=True,
    python=sys.executable,
    boxes={SETUP: 90, MODEL: 150, DATASET: 60, "a": 150, "b": 120, "d": 90, "c": 120, "e": 60, "f": 60, "g": 60},
    # the memory runs come last: when the first call leaves no time for them, `--phases e,f,g` runs them alone
    estimates={SETUP: 25, MODEL: 45, DATASET: 10, "a": 75, "b": 60, "d": 45, "c": 60, "e": 30, "f": 30, "g": 30},
    phases=ALL_PHASES,
)


def fake_profile() -> Profile:
    return replace(
        GPU_PROFILE,
        name="fake",
        steps=6,
        images=6,
        install=False,
        boxes={SETUP: 30, MODEL: 30, DATASET: 60, "a": 60, "b": 60, "d": 60, "c": 60, "e": 60, "f": 60, "g": 60},
        fake_args={
            "a": ["--step-delay", "0.05"],
            "b": ["--step-delay", "0.05"],
            "c": ["--step-delay", "0.05"],
            "d": ["--oom-at", "1"],
            "e": ["--step-delay", "0.01"],
            "f": ["--step-delay", "0.01"],
            "g": ["--step-delay", "0.01"],
        },
    )


def cpu_real_profile(python: str) -> Profile:
    return replace(
        GPU_PROFILE,
        name="cpu-real",
        steps=2,
        images=4,
        # buckets stay on, so the 512 px images are resized; sd-scripts' smallest bucket is 256 by default
        # and two sampling steps: the samples are drawn at the prepared size (512 px), minutes a step on a CPU
        extra_sets=("resolution=64", "min_bucket_reso=64", "sample_steps=2"),
        install=False,
        python=python,
        boxes={
            SETUP: 120,
            MODEL: 900,
            DATASET: 120,
            "a": 900,
            "b": 900,
            "d": 300,
            "c": 900,
            "e": 900,
            "f": 900,
            "g": 900,
        },
        phases=(SETUP, MODEL, DATASET, "a"),
    )


# --- results -------------------------------------------------------------------------------------------


def importable_source(work: Path) -> Path:
    """kohya-wrap's tree as Python imports it when installed: presets/ is the package kohya_wrap.presets
    (pyproject.toml's package-dir), which a plain PYTHONPATH to the checkout does not give."""
    source = work / "kohya-wrap-src"
    if not (source / "kohya_wrap" / "presets").is_dir():
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(ROOT / "kohya_wrap", source / "kohya_wrap", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(
            ROOT / "presets", source / "kohya_wrap" / "presets", ignore=shutil.ignore_patterns("__pycache__")
        )
    return source


@dataclass
class PhaseResult:
    id: str
    label: str
    status: str = "pending"  # ok, failed, timed_out, skipped, pending
    seconds: float | None = None
    note: str = ""
    command: list[str] | None = None
    exit_code: int | None = None
    expected_exit: int | None = None
    batch_size: int | None = None
    resolution: int | None = None
    steps_planned: int | None = None
    steps_reached: int | None = None
    it_per_s: float | None = None
    images_per_s: float | None = None
    it_per_s_tqdm: float | None = None
    time_to_first_step_s: float | None = None
    peak_gpu_mib: int | None = None
    baseline_gpu_mib: int | None = None
    peak_gpu_used_mib: int | None = None  # peak less baseline: this phase's own memory
    torch_peak_mib: float | None = None
    sample_s_per_image: float | None = None
    samples: int | None = None
    mixed_precision: str | None = None
    mixed_precision_source: str | None = None
    outcome: str | None = None
    advice_seen: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Results:
    """results.json, results.md and bench.log under the output folder, rewritten after every phase."""

    def __init__(self, out: Path | None, profile: Profile, deadline_s: float) -> None:
        self.out = out
        self.profile = profile
        self.deadline_s = deadline_s
        self.started = time.monotonic()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.machine: dict[str, Any] = {}
        self.packages: dict[str, Any] = {}
        self.phase_logs: dict[str, bytes] = {}
        self.phases = {p: PhaseResult(p, PHASE_LABELS[p]) for p in ALL_PHASES}
        for p in ALL_PHASES:
            if p not in profile.phases:
                self.phases[p].status = "skipped"
                self.phases[p].note = "not in this profile's phases"
        self._log = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self._log = open(out / BENCH_LOG, "a", encoding="utf-8")  # noqa: SIM115  closed at exit

    def say(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.started:6.1f}s]"
        line = f"{stamp} {text}"
        print(line, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.deadline_s - self.elapsed()

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "seconds": round(self.elapsed(), 1),
            "profile": self.profile.name,
            "steps": self.profile.steps,
            "images": self.profile.images,
            "deadline_s": self.deadline_s,
            "machine": self.machine,
            "packages": self.packages,
            "kohya_gui_preset": {"repo": GUI_REPO, "file": GUI_PRESET, "commit": GUI_COMMIT},
            "phases": [_phase_json(r) for r in self.phases.values()],
            "memory_figures": self.memory_figures(),
        }

    def memory_figures(self) -> list[dict[str, Any]]:
        """The memory runs that finished, as rows for kohya_wrap/train/memory.py's MEASURED table."""
        rows = []
        for pid, (batch, checkpointing) in MEMORY_RUNS.items():
            r = self.phases[pid]
            if r.status != "ok" or r.peak_gpu_used_mib is None:
                continue
            rows.append(
                {
                    "resolution": r.resolution,
                    "batch_size": batch,
                    "gradient_checkpointing": checkpointing,
                    "mixed_precision": r.mixed_precision,
                    "peak_mib": r.peak_gpu_used_mib,
                    "gpu": self.machine.get("gpu_name"),
                }
            )
        return rows

    def write(self) -> None:
        if self.out is None:
            return
        _atomic_write(self.out / RESULTS_JSON, json.dumps(self.to_json(), indent=2) + "\n")
        _atomic_write(self.out / RESULTS_MD, self.markdown())
        if self.phase_logs:
            tmp = self.out / (PHASES_LOG + ".tmp")
            tmp.write_bytes(b"\n\n".join(self.phase_logs[p] for p in ALL_PHASES if p in self.phase_logs))
            os.replace(tmp, self.out / PHASES_LOG)

    def markdown(self) -> str:
        m = self.machine
        gpu = m.get("gpu_name") or "no GPU found"
        lines = [
            f"# kohya-wrap on {gpu}",
            "",
            f"{self.started_at}; profile {self.profile.name}; {self.profile.steps} steps on {self.profile.images} "
            f"drawn faces at 512 px; GPU memory {m.get('gpu_memory_mib', '?')} MiB, driver {m.get('driver', '?')}; "
            f"torch {self.packages.get('torch', '?')}, CUDA {self.packages.get('torch_cuda', '?')}; "
            f"{self.elapsed():.0f} s of a {self.deadline_s:.0f} s deadline.",
            "",
            "| run | status | precision | batch | it/s | images/s | first step (s) | peak GPU (MiB) | sample (s/image) | wall (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for pid in TRAIN_PHASES:
            r = self.phases[pid]
            precision = r.mixed_precision or "?"
            if r.mixed_precision_source:
                precision += f" ({r.mixed_precision_source})"
            lines.append(
                f"| {pid}: {r.label} | {r.status} | {precision} | {_cell(r.batch_size)} | {_cell(r.it_per_s, 2)} "
                f"| {_cell(r.images_per_s, 2)} | {_cell(r.time_to_first_step_s, 1)} | {_cell(r.peak_gpu_used_mib)} "
                f"| {_cell(r.sample_s_per_image, 2)} | {_cell(r.seconds, 0)} |"
            )
        lines += ["", "Steps before the run: " + "; ".join(_brief(self.phases[p]) for p in (SETUP, MODEL, DATASET))]
        oom = self.phases["d"]
        if oom.status != "skipped":
            lines += [
                "",
                f"Out of memory (d): exit {oom.exit_code} (expected {OOM_EXIT}), outcome {oom.outcome}, "
                f"advice {'shown' if oom.advice_seen else 'NOT shown'}: {oom.status}.",
            ]
        figures = self.memory_figures()
        if figures:
            source = f"bench/gpu.py on {self.machine.get('gpu_name')}, {self.started_at[:10]}"
            lines += ["", "For `MEASURED` in kohya_wrap/train/memory.py:", "", "```python"]
            lines += [
                f"    MemoryFigure({f['resolution']}, {f['batch_size']}, {f['gradient_checkpointing']}, "
                f"{f['mixed_precision']!r}, {f['peak_mib']}, {source!r}),"
                for f in figures
            ]
            lines += ["```"]
        notes = [f"- {p}: {self.phases[p].note}" for p in ALL_PHASES if self.phases[p].note]
        if notes:
            lines += ["", "Notes:", *notes]
        lines += [
            "",
            "it/s: steady state, from the progress events between 1/6 of the steps and the last (wall-clock times). "
            "first step: from the command's start. peak GPU: nvidia-smi's memory.used polled every 0.5 s, less "
            "what was in use before the run. Kohya GUI preset: "
            f"{GUI_REPO} `{GUI_PRESET}` at {GUI_COMMIT[:12]}, mapped as bench/gpu.py GUI_SETTINGS says.",
        ]
        return "\n".join(lines) + "\n"


def _brief(r: PhaseResult) -> str:
    took = f" in {r.seconds:.0f} s" if r.seconds is not None else ""
    return f"{r.id} {r.status}{took}"


def _cell(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "—"
    if digits is not None and isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def _phase_json(r: PhaseResult) -> dict[str, Any]:
    doc = dict(r.__dict__)
    for key in ("it_per_s", "images_per_s", "it_per_s_tqdm", "time_to_first_step_s", "sample_s_per_image", "seconds"):
        if isinstance(doc.get(key), float):
            doc[key] = round(doc[key], 3)
    return doc


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- processes --------------------------------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int | None  # None: killed at its time box
    seconds: float
    started: float  # time.time() at the start
    timed_out: bool


def _children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc (kohya-wrap starts its trainer in a process group of its own)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    for target in [pid, *_children(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def run_command(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout_s: float,
    on_output: Callable[[str, bytes, float], None] | None = None,
) -> Ran:
    """Run argv with both streams teed to `log` (and to on_output with the time they were read); kill its
    whole tree at timeout_s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    started, clock = time.time(), time.monotonic()
    with open(log, "ab") as sink:
        sink.write(f"$ {shlex.join(argv)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )

        def pump(stream: Any, name: str) -> None:
            fd = stream.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                now = time.time()
                with lock:
                    sink.write(data)
                    sink.flush()
                    if on_output is not None:
                        on_output(name, data, now)

        threads = [
            threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True),
        ]
        for t in threads:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            # Ctrl-C first: kohya-wrap stops its trainer and writes run.json; then everything is killed
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
            kill_tree(proc.pid)
            proc.wait()
        for t in threads:
            t.join(timeout=5)
        sink.write(f"\n$ exit {proc.returncode}{' (killed at its time box)' if timed_out else ''}\n".encode())
    return Ran(None if timed_out else proc.returncode, time.monotonic() - clock, started, timed_out)


class GpuMemory:
    """nvidia-smi's memory.used of GPU 0 every 0.5 s while a phase runs (one nvidia-smi process that loops)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self.proc: subprocess.Popen[str] | None = None
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return
        self.proc = subprocess.Popen(
            [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0", "-lms", "500"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), int(line.strip().split()[0])))
            except (ValueError, IndexError):
                continue

    def stop(self) -> int | None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return max((mib for _, mib in self.samples), default=None)


def gpu_memory_now() -> int | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_facts() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    if not rows:
        return {}
    name, memory, driver, capability = (rows[0] + ["", "", "", ""])[:4]
    return {
        "gpu_name": name,
        "gpu_memory_mib": int(memory) if memory.isdigit() else memory,
        "driver": driver,
        "compute_capability": capability,
        "gpu_count": len(rows),
    }


# --- the bench ------------------------------------------------------------------------------------------


@dataclass
class Setup:
    work: Path
    carry: Path
    site: Path
    home: Path
    sd_scripts: Path | None = None
    tokenizer: Path | None = None
    model: Path | None = None
    dataset: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


class Bench:
    def __init__(self, profile: Profile, results: Results, setup: Setup) -> None:
        self.profile = profile
        self.results = results
        self.setup = setup
        self.say = results.say

    # -- running phases in their boxes --

    def run(self) -> None:
        steps: dict[str, Callable[[PhaseResult, float], None]] = {
            SETUP: self.phase_setup,
            MODEL: self.phase_model,
            DATASET: self.phase_dataset,
            "a": self.phase_a,
            "b": self.phase_b,
            "d": self.phase_d,
            "c": self.phase_c,
            **{pid: self.phase_memory for pid in MEMORY_RUNS},
        }
        needs = {MODEL: SETUP, DATASET: SETUP, **{pid: MODEL for pid in TRAIN_PHASES}}
        for pid in ALL_PHASES:
            result = self.results.phases[pid]
            if pid not in self.profile.phases:
                continue
            before = needs.get(pid)
            if before is not None and self.results.phases[before].status != "ok":
                result.status, result.note = "skipped", f"{before} did not succeed"
                self.results.write()
                continue
            if pid in TRAIN_PHASES and self.results.phases[DATASET].status != "ok":
                result.status, result.note = "skipped", "dataset did not succeed"
                self.results.write()
                continue
            left = self.results.left()
            if pid in TRAIN_PHASES and left < MIN_START_S:
                result.status, result.note = "skipped", f"deadline: {left:.0f} s left"
                self.say(f"skipping {pid}: {left:.0f} s left before the deadline")
                self.results.write()
                continue
            box = max(min(self.profile.boxes[pid], left - 5), 10.0)
            self.say(f"phase {pid}: {PHASE_LABELS[pid]} (box {box:.0f} s)")
            start = time.monotonic()
            try:
                steps[pid](result, box)
                if result.status == "pending":
                    result.status = "ok"
            except Exception as e:  # noqa: BLE001  one phase's failure is a result, not the end of the bench
                result.status = "failed"
                result.note = (result.note + "; " if result.note else "") + f"{type(e).__name__}: {e}"
            result.seconds = time.monotonic() - start
            if pid in (MODEL, DATASET):
                self.copy_log(pid, None)
            self.say(
                f"phase {pid}: {result.status} in {result.seconds:.1f} s{' - ' + result.note if result.note else ''}"
            )
            self.results.write()

    # -- setup --

    def phase_setup(self, result: PhaseResult, box: float) -> None:
        s = self.setup
        s.work.mkdir(parents=True, exist_ok=True)
        s.home.mkdir(parents=True, exist_ok=True)
        self.results.machine.update(gpu_facts())
        installed: list[str] = []
        if self.profile.install:
            # no kohya-wrap import before the install: it needs tomli-w, which a bare image lacks
            problems = gpu_carry.wheel_problems(s.carry)
            problems += gpu_carry.sd_scripts_problems(s.carry / gpu_carry.SD_SCRIPTS_ARCHIVE)
            if problems:
                raise RuntimeError("the carry folder is not ready: " + "; ".join(problems))
            wanted = wheels_to_install(s.carry)
            installed = [p.distribution for p, _ in wanted]
            if wanted:
                argv = [self.profile.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
                argv += ["--no-cache-dir", "--target", str(s.site), *[str(w) for _, w in wanted]]
                self.say("installing " + ", ".join(f"{p.distribution}=={p.version}" for p, _ in wanted))
                done = subprocess.run(argv, capture_output=True, text=True, timeout=box)
                if done.returncode != 0:
                    raise RuntimeError(f"pip install exited {done.returncode}: {done.stderr[-2000:]}")
            s.sd_scripts = s.work / gpu_carry.SD_SCRIPTS_PREFIX
            if not (s.sd_scripts / "train_network.py").is_file():
                shutil.unpack_archive(str(s.carry / gpu_carry.SD_SCRIPTS_ARCHIVE), str(s.work))
        sys.path[:0] = [p for p in (str(s.site), str(ROOT)) if p not in sys.path]
        carried_tokenizer = s.carry / gpu_carry.TOKENIZER
        if self.profile.install and not gpu_carry.tokenizer_problems(carried_tokenizer):
            s.tokenizer = carried_tokenizer
        result.details["installed"] = installed
        s.env = self.base_env()
        if s.tokenizer is None:
            from kohya_wrap.smoke.tokenizer import write_tokenizer

            s.tokenizer = s.work / "tokenizer"
            write_tokenizer(s.tokenizer)
        probe = subprocess.run(
            [self.profile.python, "-c", PROBE], env=s.env, capture_output=True, text=True, timeout=max(box, 30)
        )
        if probe.returncode != 0:
            raise RuntimeError(f"the package probe failed: {probe.stderr[-3000:]}")
        self.results.packages = json.loads(probe.stdout.strip().splitlines()[-1])
        self.results.packages["installed_from_carry"] = installed
        broken = {k: v for k, v in self.results.packages.get("import_errors", {}).items()}
        if broken:
            result.note = "import errors: " + "; ".join(f"{k}: {v}" for k, v in broken.items())
        self.say("packages: " + json.dumps({k: v for k, v in self.results.packages.items() if k != "import_errors"}))

    def base_env(self) -> dict[str, str]:
        s = self.setup
        env = dict(os.environ)
        source = importable_source(s.work)
        paths = [str(s.site), str(source)] if self.profile.install else [str(source)]
        if self.profile.name == "fake":
            paths.insert(0, str(ROOT / "tests" / "fakes" / "launcher"))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(paths),
                "KOHYA_WRAP_HOME": str(s.home),
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "COLUMNS": "160",
            }
        )
        return env

    # -- base model and dataset --

    def phase_model(self, result: PhaseResult, box: float) -> None:
        s = self.setup
        if self.profile.name == "fake":
            sys.path.insert(0, str(ROOT / "tests"))
            from sd15_stub import write_sd15_stub  # type: ignore[import-not-found]

            s.model = write_sd15_stub(s.work / "models" / "sd15-stub.safetensors")
            return
        code = (
            "import json, sys; from pathlib import Path; from kohya_wrap.smoke.basemodel import ensure_base_model; "
            "m = ensure_base_model(Path(sys.argv[1]), verify_hash=False); "
            "print(json.dumps({'path': str(m.path), 'built': m.built, 'seconds': m.build_seconds, 'bytes': m.size}))"
        )
        models = Path(os.environ.get("KOHYA_WRAP_BENCH_MODELS", s.work / "models"))
        log = self.phase_log(MODEL)
        ran = run_command([self.profile.python, "-c", code, str(models)], env=s.env, cwd=s.work, log=log, timeout_s=box)
        if ran.returncode != 0:
            raise RuntimeError(f"the model build {'timed out' if ran.timed_out else 'failed'}: {_tail(log, 1500)}")
        info = json.loads(_last_json_line(log))
        result.details.update(info)
        s.model = Path(info["path"])

    def phase_dataset(self, result: PhaseResult, box: float) -> None:
        s = self.setup
        from PIL import Image  # noqa: F401  (the image has pillow; kohya-wrap needs it too)

        sys.path[:0] = [str(ROOT)] if str(ROOT) not in sys.path else []
        import random

        from kohya_wrap.smoke.images import draw_face

        photos = s.work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        for index in range(self.profile.images):
            draw_face(self.profile.image_size, self.profile.image_size, rng).save(photos / f"{index + 1:04d}.png")
        s.dataset = s.work / "dataset"
        argv = [self.profile.python, "-m", "kohya_wrap", "prepare", str(photos), "-o", str(s.dataset)]
        argv += ["--token", TOKEN, "--class", CLASS_WORD, "--size", "512", "--crop", "center", "-q"]
        result.command = argv
        ran = run_command(argv, env=s.env, cwd=s.work, log=self.phase_log(DATASET), timeout_s=box)
        result.exit_code = ran.returncode
        if ran.returncode != 0:
            raise RuntimeError(f"prepare exited {ran.returncode}: {_tail(self.phase_log(DATASET), 1500)}")

    # -- the training phases --

    def common_sets(self, steps: int) -> list[str]:
        return [f"target_steps={steps}", f"min_steps={steps}", f"max_steps={steps}", *self.profile.extra_sets]

    def memory_sets(self, pid: str) -> list[str]:
        batch, checkpointing = MEMORY_RUNS[pid]
        # both given with --set: train never changes what the user set to fit the GPU (kohya_wrap/train/memory.py)
        checkpoint = f"gradient_checkpointing={'true' if checkpointing else 'false'}"
        return [*self.common_sets(MEMORY_STEPS), f"train_batch_size={batch}", checkpoint]

    def oom_sets(self) -> list[str]:
        """A batch far beyond the card, for two steps (the first one runs out of memory)."""
        # gradient checkpointing off with --set, so train cannot turn it on to fit (kohya_wrap/train/memory.py)
        sets = ["target_steps=2", "min_steps=1", "max_steps=4", f"train_batch_size={OOM_BATCH}"]
        return [*sets, "gradient_checkpointing=false", *self.profile.extra_sets]

    def train_argv(self, run_dir: Path, dataset: Path, preset: str, sets: list[str]) -> list[str]:
        s = self.setup
        argv = [self.profile.python, "-m", "kohya_wrap", "train", str(dataset), "--preset", preset]
        argv += ["--base-model", str(s.model), "-o", str(run_dir)]
        argv += ["--tokenizer-cache-dir", str(s.tokenizer)]
        if s.sd_scripts is not None:
            argv += ["--sd-scripts", str(s.sd_scripts)]
        for item in sets:
            argv += ["--set", item]
        return argv

    def dataset_copy(self, pid: str) -> Path:
        """Each run its own copy: latents cached to disk by one run must not shorten the next."""
        assert self.setup.dataset is not None
        copy = self.setup.work / f"dataset-{pid}"
        if not copy.exists():
            shutil.copytree(self.setup.dataset, copy)
        return copy

    def phase_env(self, pid: str) -> dict[str, str]:
        env = dict(self.setup.env)
        if self.profile.name == "fake":
            env["FAKE_TRAINER_ARGS"] = json.dumps(self.profile.fake_args.get(pid, []))
        return env

    def phase_log(self, pid: str) -> Path:
        return self.setup.work / "logs" / f"{pid}.log"

    def run_kohya_wrap(self, result: PhaseResult, pid: str, argv: list[str], run_dir: Path, box: float) -> Ran:
        result.command = argv
        baseline = gpu_memory_now()
        memory = GpuMemory()
        try:
            ran = run_command(
                argv, env=self.phase_env(pid), cwd=self.setup.work, log=self.phase_log(pid), timeout_s=box
            )
        finally:
            peak = memory.stop()
        result.exit_code = ran.returncode
        self.record_memory(result, baseline, peak)
        self.read_run_dir(result, run_dir, ran)
        self.copy_log(pid, run_dir)
        return ran

    def record_memory(self, result: PhaseResult, baseline: int | None, peak: int | None) -> None:
        result.baseline_gpu_mib, result.peak_gpu_mib = baseline, peak
        if peak is not None:
            result.peak_gpu_used_mib = peak - (baseline or 0)

    def read_run_dir(self, result: PhaseResult, run_dir: Path, ran: Ran) -> None:
        from kohya_wrap.events import Phase, Progress, read_events
        from kohya_wrap.rundir import paths

        files = paths(run_dir)
        if files.run_json.is_file():
            doc = json.loads(files.run_json.read_text())
            machine = doc.get("machine") or {}
            result.mixed_precision = machine.get("mixed_precision")
            result.mixed_precision_source = machine.get("mixed_precision_source")
            result.outcome = doc.get("outcome")
            self.read_values(result, doc.get("values") or {})
            result.details["errors"] = [e.get("message") for e in doc.get("errors", [])][:5]
            result.details["memory_fit"] = machine.get("memory_fit")
        timed: list[tuple[float, Any]] = []
        if files.events.is_file():
            timed = [(_epoch_seconds(e.t), e) for e in read_events(files.events)]
        self.read_progress(result, ran.started, [(t, e) for t, e in timed if isinstance(e, Progress)])
        phases = [(t, e.phase) for t, e in timed if isinstance(e, Phase)]
        self.read_samples(result, files.output_dir, phases)
        result.torch_peak_mib = torch_peak_from_log(files.train_log)

    def read_values(self, result: PhaseResult, values: dict[str, Any]) -> None:
        """Batch, resolution and steps from run.json's values (plain) or plan.json's ({"value": ..., "source": ...})."""

        def value(key: str) -> Any:
            item = values.get(key)
            return item.get("value") if isinstance(item, dict) else item

        result.batch_size = _int(value("train_batch_size"))
        result.resolution = _int(str(value("resolution") or "").split(",")[0])
        result.steps_planned = _int(value("max_train_steps"))

    def read_progress(self, result: PhaseResult, started: float, progress: list[tuple[float, Any]]) -> None:
        stepped = [(t, e) for t, e in progress if e.step >= 1]
        if not stepped:
            return
        result.time_to_first_step_s = stepped[0][0] - started
        result.steps_reached = max(e.step for _, e in stepped)
        total = stepped[-1][1].total or result.steps_reached
        result.it_per_s = steady_rate([(t, e.step) for t, e in stepped], total)
        last = stepped[-1][1]
        if last.rate is not None:
            result.it_per_s_tqdm = last.rate if last.rate_unit == "it/s" else (1 / last.rate if last.rate else None)
        if result.it_per_s is not None and result.batch_size:
            result.images_per_s = result.it_per_s * result.batch_size

    def read_samples(self, result: PhaseResult, output_dir: Path, phases: list[tuple[float, str]]) -> None:
        from kohya_wrap.sdscripts.samples import find_samples

        found = find_samples(output_dir)
        result.samples = len(found)
        if not found:
            return
        times = sorted(p.stat().st_mtime for p, _ in found)
        began = [t for t, phase in phases if phase == "sampling"]
        if began:
            result.sample_s_per_image = max(times[-1] - began[-1], 0.0) / len(found)
        elif len(times) > 1:
            result.sample_s_per_image = (times[-1] - times[0]) / (len(times) - 1)

    def copy_log(self, pid: str, run_dir: Path | None) -> None:
        """The phase's output (kohya-wrap's, and the trainer's train.log), its last 1 MiB, for OUT/phases.log."""
        parts = [self.phase_log(pid)]
        if run_dir is not None:
            parts.append(run_dir / "train.log")
        chunks = []
        for part in parts:
            if part.is_file():
                chunks.append(f"===== {pid}: {part}\n".encode() + part.read_bytes()[-LOG_TAIL_BYTES:])
        self.results.phase_logs[pid] = b"\n".join(chunks)[-LOG_TAIL_BYTES:]

    def finish_train(self, result: PhaseResult, ran: Ran, expected: int) -> None:
        result.expected_exit = expected
        if ran.timed_out:
            result.status, result.note = "timed_out", "killed at its time box"
        elif ran.returncode != expected:
            result.status = "failed"
            result.note = f"exit {ran.returncode}, expected {expected}: {_tail(self.phase_log(result.id), 600)}"

    def phase_a(self, result: PhaseResult, box: float) -> None:
        steps = self.profile.steps
        run_dir = self.setup.work / "runs" / "a"
        sets = [*self.common_sets(steps), f"sample_every_n_steps={steps}"]
        argv = self.train_argv(run_dir, self.dataset_copy("a"), LIKENESS, sets)
        ran = self.run_kohya_wrap(result, "a", argv, run_dir, box)
        self.finish_train(result, ran, 0)

    def phase_b(self, result: PhaseResult, box: float) -> None:
        steps = self.profile.steps
        preset = self.setup.work / "kohya-gui-sd15-lora.toml"
        preset.write_text(gui_preset_toml(steps))
        run_dir = self.setup.work / "runs" / "b"
        argv = self.train_argv(run_dir, self.dataset_copy("b"), str(preset), list(self.profile.extra_sets))
        ran = self.run_kohya_wrap(result, "b", argv, run_dir, box)
        self.finish_train(result, ran, 0)

    def phase_d(self, result: PhaseResult, box: float) -> None:
        run_dir = self.setup.work / "runs" / "d"
        sets = self.oom_sets()
        argv = self.train_argv(run_dir, self.dataset_copy("d"), LIKENESS, sets)
        ran = self.run_kohya_wrap(result, "d", argv, run_dir, box)
        result.advice_seen = OOM_ADVICE in self.phase_log("d").read_text(errors="replace")
        result.expected_exit = OOM_EXIT
        if ran.timed_out:
            result.status, result.note = "timed_out", "killed at its time box"
        elif ran.returncode != OOM_EXIT or not result.advice_seen or result.outcome != "oom":
            result.status = "failed"
            result.note = (
                f"exit {ran.returncode} (expected {OOM_EXIT}), outcome {result.outcome}, advice "
                f"{'shown' if result.advice_seen else 'not shown'}: {_tail(self.phase_log('d'), 600)}"
            )

    def phase_memory(self, result: PhaseResult, box: float) -> None:
        checkpointing = MEMORY_RUNS[result.id][1]
        run_dir = self.setup.work / "runs" / result.id
        argv = self.train_argv(run_dir, self.dataset_copy("a"), LIKENESS, self.memory_sets(result.id))
        ran = self.run_kohya_wrap(result, result.id, argv, run_dir, box)
        result.details["gradient_checkpointing"] = checkpointing
        self.finish_train(result, ran, 0)

    def phase_c(self, result: PhaseResult, box: float) -> None:
        """plan a run, take the command `train --dry-run --json` would run, and run it without kohya-wrap."""
        from kohya_wrap.events import Phase, Progress
        from kohya_wrap.rundir import ACCELERATE_CONFIG
        from kohya_wrap.sdscripts.output import OutputParser

        steps = self.profile.steps
        s = self.setup
        run_dir = s.work / "runs" / "c"
        sets = [*self.common_sets(steps), f"sample_every_n_steps={steps}"]
        plan = self.train_argv(run_dir, self.dataset_copy("c"), LIKENESS, sets)
        plan[plan.index("train")] = "plan"
        env = self.phase_env("c")
        done = subprocess.run(plan, env=env, cwd=s.work, capture_output=True, text=True, timeout=box)
        if done.returncode != 0:
            raise RuntimeError(f"plan exited {done.returncode}: {done.stderr[-1500:]}")
        dry_argv = [self.profile.python, "-m", "kohya_wrap", "train", str(run_dir), "--dry-run", "--json"]
        if s.sd_scripts is not None:
            dry_argv += ["--sd-scripts", str(s.sd_scripts)]
        dry = subprocess.run(dry_argv, env=env, cwd=s.work, capture_output=True, text=True, timeout=box)
        if dry.returncode != 0:
            raise RuntimeError(f"train --dry-run exited {dry.returncode}: {dry.stderr[-1500:]}")
        launch = json.loads(dry.stdout)
        (run_dir / ACCELERATE_CONFIG).write_text(launch["files"][ACCELERATE_CONFIG])
        (run_dir / "output").mkdir(exist_ok=True)
        argv = [str(a) for a in launch["argv"]]
        result.command = argv
        argv_precision = argv[argv.index("--mixed_precision") + 1] if "--mixed_precision" in argv else None
        result.mixed_precision, result.mixed_precision_source = argv_precision, "train --dry-run"
        self.read_values(result, json.loads((run_dir / "plan.json").read_text()).get("values") or {})
        parser = OutputParser()
        timed: list[tuple[float, Any]] = []

        def on_output(stream: str, data: bytes, now: float) -> None:
            timed.extend((now, e) for e in parser.feed(stream, data))

        trainer_env = {**env, **{k: str(v) for k, v in launch.get("env", {}).items()}}
        baseline = gpu_memory_now()
        memory = GpuMemory()
        try:
            ran = run_command(
                argv,
                env=trainer_env,
                cwd=Path(launch["cwd"]),
                log=self.phase_log("c"),
                timeout_s=box,
                on_output=on_output,
            )
        finally:
            peak = memory.stop()
        timed.extend((time.time(), e) for e in parser.close())
        result.exit_code = ran.returncode
        self.record_memory(result, baseline, peak)
        self.read_progress(result, ran.started, [(t, e) for t, e in timed if isinstance(e, Progress)])
        self.read_samples(result, run_dir / "output", [(t, e.phase) for t, e in timed if isinstance(e, Phase)])
        result.torch_peak_mib = torch_peak_from_log(self.phase_log("c"))
        self.copy_log("c", None)
        self.finish_train(result, ran, 0)


PROBE = r"""
import importlib, importlib.metadata as md, json, sys
names = ["torch", "torchvision", "transformers", "tokenizers", "huggingface_hub", "accelerate", "diffusers",
         "safetensors", "numpy", "voluptuous", "ftfy", "imagesize", "toml", "tomli_w", "opencv-python-headless",
         "pillow", "einops", "sentencepiece", "rich", "click"]
doc = {"python": sys.version.split()[0], "import_errors": {}}
for name in names:
    try:
        doc[name] = md.version(name)
    except md.PackageNotFoundError:
        doc[name] = None
for module in ["transformers", "diffusers", "accelerate", "tokenizers", "huggingface_hub", "voluptuous", "ftfy",
               "imagesize", "toml", "tomli_w", "cv2", "kohya_wrap", "einops", "safetensors"]:
    try:
        importlib.import_module(module)
    except Exception as e:
        doc["import_errors"][module] = f"{type(e).__name__}: {e}"[:300]
try:
    import torch
except Exception as e:
    doc["import_errors"]["torch"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(doc))
    sys.exit(0)
doc["torch_cuda"] = torch.version.cuda
doc["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    doc["cuda_device"] = torch.cuda.get_device_name(0)
    doc["bf16_supported"] = torch.cuda.is_bf16_supported()
print(json.dumps(doc))
"""


# --- figures -------------------------------------------------------------------------------------------


def steady_rate(points: list[tuple[float, int]], total: int) -> float | None:
    """Steps per second between the first progress at or past 1/6 of the steps and the last before the end
    (the last step's display can wait for a sample or a save)."""
    skip = max(1, total // 6)
    window = [(t, step) for t, step in points if skip <= step < total]
    if len({step for _, step in window}) < 2:  # a run of a few steps: up to the last one
        window = [(t, step) for t, step in points if step >= skip]
    if len(window) < 2:
        return None
    (t0, s0), (t1, s1) = window[0], window[-1]
    if t1 <= t0 or s1 <= s0:
        return None
    return (s1 - s0) / (t1 - t0)


_TORCH_PEAK = re.compile(
    r"(?:max(?:imum)?|peak)[ _]memory[ _](?:allocated|reserved)?[^0-9\n]{0,20}([0-9.]+)\s*(GiB|GB|MiB|MB)", re.I
)


def torch_peak_from_log(log: Path) -> float | None:
    """torch's own peak memory, where the trainer's log prints one (sd-scripts v0.10.1's LoRA trainer does not)."""
    if not log.is_file():
        return None
    found = _TORCH_PEAK.findall(log.read_text(errors="replace"))
    if not found:
        return None
    value, unit = found[-1]
    return float(value) * (1024 if unit.upper() in ("GIB", "GB") else 1)


def _epoch_seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tail(path: Path, chars: int) -> str:
    if not path.is_file():
        return ""
    return path.read_text(errors="replace")[-chars:].strip()


def _last_json_line(path: Path) -> str:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return line
    raise RuntimeError(f"no JSON line in {path}")


def wheels_to_install(carry: Path) -> list[tuple[gpu_carry.Carried, Path]]:
    """The carried wheels this Python lacks, or has at a version the carried one's `accepts` refuses."""
    import importlib.metadata as md

    from packaging.specifiers import SpecifierSet

    wanted = []
    for package in gpu_carry.CARRIED:
        wheel = gpu_carry.wheel_for(package, carry / gpu_carry.WHEELS)
        if wheel is None:
            raise RuntimeError(f"no wheel of {package.distribution}=={package.version} in {carry}")
        try:
            have: str | None = md.version(package.distribution)
        except md.PackageNotFoundError:
            have = None
        if have is None or (package.accepts and have not in SpecifierSet(package.accepts)):
            wanted.append((package, wheel))
    return wanted


# --- dry run ---------------------------------------------------------------------------------------------


def dry_run(carry: Path, profile: Profile, deadline_s: float, work: Path) -> int:
    """Check what can be checked here, print the plan of phases, the commands and the budget; start nothing."""
    problems: list[str] = []
    print(f"bench/gpu.py --dry-run: profile {profile.name}, {profile.steps} steps, {profile.images} images")
    if carry.is_dir():
        found, figures = gpu_carry.check(carry)
        problems += found
        print(
            f"carry {carry}: checkout {figures['checkout_bytes'] / 2**20:.2f} MiB + carry "
            f"{figures['carry_bytes'] / 2**20:.2f} MiB = {figures['total_bytes'] / 2**20:.2f} MiB "
            f"(limit {gpu_carry.SIZE_LIMIT / 2**20:.0f} MiB)"
        )
        for package in gpu_carry.CARRIED:
            wheel = gpu_carry.wheel_for(package, carry / gpu_carry.WHEELS)
            accepts = package.accepts or "any version"
            print(
                f"  wheel {package.distribution}=={package.version}: {wheel.name if wheel else 'MISSING'} "
                f"(kept from the image when it has {accepts})"
            )
    else:
        checkout, _ = gpu_carry.tracked_bytes()
        print(
            f"carry {carry}: absent (run `python bench/gpu_carry.py` where PyPI and the sd-scripts mirror are "
            f"reachable); the checkout alone is {checkout / 2**20:.2f} MiB"
        )
    estimate = sum(profile.estimates[p] for p in profile.phases)
    print(
        f"time: phases expected {estimate:.0f} s on an H200 ({', '.join(f'{p} {profile.estimates[p]:.0f}' for p in profile.phases)}); "
        f"deadline {deadline_s:.0f} s; one device call at most {CALL_LIMIT_S} s"
    )
    if estimate > deadline_s:
        problems.append(f"the phases' expected {estimate:.0f} s exceed the deadline {deadline_s:.0f} s")
    if deadline_s > CALL_LIMIT_S - 30:
        problems.append(
            f"--deadline-s {deadline_s:.0f} leaves under 30 s of the {CALL_LIMIT_S} s call for the last writes"
        )
    # the commands, with this machine's paths where the GPU machine's are not known yet
    setup = Setup(work=work, carry=carry, site=work / "site", home=work / "home")
    setup.sd_scripts, setup.tokenizer = work / gpu_carry.SD_SCRIPTS_PREFIX, carry / gpu_carry.TOKENIZER
    setup.model = work / "models" / "sd15-random-fp16.safetensors"
    setup.dataset = work / "dataset"
    bench = Bench(profile, Results(None, profile, deadline_s), setup)
    steps = profile.steps
    print("phases, in order (each in its time box; later ones are skipped when the deadline is near):")
    for pid in profile.phases:
        print(f"  {pid} ({profile.boxes[pid]:.0f} s box): {PHASE_LABELS[pid]}")
    commands = {
        "a": bench.train_argv(
            work / "runs" / "a",
            work / "dataset-a",
            LIKENESS,
            [*bench.common_sets(steps), f"sample_every_n_steps={steps}"],
        ),
        "b": bench.train_argv(work / "runs" / "b", work / "dataset-b", str(work / "kohya-gui-sd15-lora.toml"), []),
        "d": bench.train_argv(
            work / "runs" / "d",
            work / "dataset-d",
            LIKENESS,
            bench.oom_sets(),
        ),
        "c": [profile.python, "-m", "kohya_wrap", "train", str(work / "runs" / "c"), "--dry-run", "--json"],
        **{
            pid: bench.train_argv(work / "runs" / pid, work / "dataset-a", LIKENESS, bench.memory_sets(pid))
            for pid in MEMORY_RUNS
        },
    }
    for pid in TRAIN_PHASES:
        if pid in profile.phases:
            print(f"  {pid}$ {shlex.join(commands[pid])}")
    print("  c runs the argv that command prints (accelerate launch train_network.py ...) in the run directory")
    print(f"Kohya GUI preset: {GUI_REPO} {GUI_PRESET!r} at {GUI_COMMIT}; phase b's preset file:")
    print("    " + gui_preset_toml(steps).replace("\n", "\n    ").rstrip())
    for setting in GUI_SETTINGS:
        if setting.note:
            passed = f"{setting.argument}={setting.value!r}" if setting.argument else "not passed"
            print(f"  {setting.gui_key}={setting.gui_value!r} -> {passed}: {setting.note}")
    problems += check_gui_preset(steps)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("dry run: nothing installed, nothing started" + ("" if not problems else f"; {len(problems)} problem(s)"))
    return 1 if problems else 0


def check_gui_preset(steps: int) -> list[str]:
    """Phase b's preset file loads as a kohya-wrap preset here (every key and value checked as for any preset)."""
    try:
        sys.path[:0] = [str(ROOT)] if str(ROOT) not in sys.path else []
        from kohya_wrap.errors import KohyaWrapError
        from kohya_wrap.preset import load_preset
    except ImportError as e:
        return [f"kohya-wrap cannot be imported here to check the GUI preset: {e}"]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "kohya-gui-sd15-lora.toml"
        path.write_text(gui_preset_toml(steps))
        try:
            load_preset(str(path))
        except KohyaWrapError as e:
            return [f"phase b's preset does not load: {e}"]
    return []


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where results.json, results.md and the logs go (the device's $OUT)")
    parser.add_argument("--carry", type=Path, default=ROOT / gpu_carry.CARRY_DIR, help="what bench/gpu_carry.py made")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S, help="stop starting phases after this")
    parser.add_argument("--steps", type=int, default=None, help="training steps of a, b and c (default 60)")
    parser.add_argument(
        "--phases", default=None, help="comma-separated subset of a,b,c,d (setup, model, dataset run always)"
    )
    parser.add_argument("--dry-run", action="store_true", help="check the inputs and print the plan; start nothing")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fake", action="store_true", help="the fake trainer of tests/fakes and a stub model")
    mode.add_argument(
        "--cpu-real", metavar="PYTHON", help="phase a with the real sd-scripts on the CPU, 64 px, 2 steps"
    )
    parser.add_argument("--sd-scripts", type=Path, default=None, help="with --cpu-real: the sd-scripts checkout")
    args = parser.parse_args(argv)

    profile = fake_profile() if args.fake else cpu_real_profile(args.cpu_real) if args.cpu_real else GPU_PROFILE
    if args.steps is not None:
        profile = replace(profile, steps=args.steps)
    if args.phases:
        chosen = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        unknown = [p for p in chosen if p not in TRAIN_PHASES]
        if unknown:
            parser.error(f"--phases: unknown {unknown}; choose from {','.join(TRAIN_PHASES)}")
        profile = replace(profile, phases=(SETUP, MODEL, DATASET, *[p for p in TRAIN_PHASES if p in chosen]))
    if args.dry_run:
        return dry_run(args.carry, profile, args.deadline_s, args.work or Path("/tmp/kw-gpu"))
    work = args.work or Path(tempfile.mkdtemp(prefix="kohya-wrap-gpu-"))
    if args.out is None:
        parser.error("--out DIR is required (or --dry-run)")
    results = Results(args.out, profile, args.deadline_s)
    setup = Setup(work=work, carry=args.carry, site=work / "site", home=work / "home")
    if args.fake:
        sys.path.insert(0, str(ROOT / "tests" / "fakes"))
        from run_dir import make_fake_checkout  # type: ignore[import-not-found]

        setup.sd_scripts = make_fake_checkout(work / "fake-sd-scripts")
    elif args.cpu_real:
        setup.sd_scripts = args.sd_scripts or ROOT / "third_party" / "sd-scripts"
    results.say(f"bench/gpu.py: profile {profile.name}, work {work}, out {args.out}, deadline {args.deadline_s:.0f} s")
    results.write()
    try:
        Bench(profile, results, setup).run()
    finally:
        results.write()
        print()
        print(results.markdown(), flush=True)
    failed = [p for p in profile.phases if results.phases[p].status not in ("ok",)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
