"""Fitting the GPU train finds: the memory a run needs, from measurements, and what train changes so it fits.

The plan says what to train (batch size, gradient checkpointing); train says where. When the GPU here has
less memory than the measured need of the plan's batch and resolution, train turns on gradient checkpointing
or, when that is not enough, halves the batch and doubles the gradient accumulation (each step still learns
from as many images, so the plan's step arithmetic holds). A value the user gave with --set is kept.

The needs come from MEASURED: peak GPU memory of `bench/gpu.py`'s memory runs (its results.json,
"memory_figures": nvidia-smi's memory.used during training, less what was in use before). Between batch
sizes measured at one resolution and precision the need is taken as linear in the batch (the model, its
LoRA and the optimizer states are fixed; the activations grow with each image). Where nothing was measured
for the run's resolution and precision, train keeps the plan's values and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from kohya_wrap.codec import TomlValue
from kohya_wrap.sdscripts.trainer import TrainerSettings, argument_of

# Of a GPU's total memory, what a run may plan to use: the CUDA context and the allocator's fragmentation
# come on top of the measured peak on other cards and drivers.
USABLE_FRACTION = 0.92


@dataclass(frozen=True)
class MemoryFigure:
    """One measured run: the likeness-sd15 preset's values (dim 32, AdamW, SDPA) at this resolution and batch."""

    resolution: int  # the side of the square training images, px
    batch_size: int
    gradient_checkpointing: bool
    mixed_precision: str  # "bf16" or "fp16"
    peak_mib: int  # nvidia-smi's memory.used during training, less what was in use before
    source: str  # the GPU and date of the measurement


# Filled from bench/gpu.py's results.json ("memory_figures") once it has run on a GPU; docs/performance.md
# holds the table they came from. Where a figure is missing, train keeps the plan's values and says so.
MEASURED: tuple[MemoryFigure, ...] = (
    # bench/gpu.py run a (likeness-sd15, 60 steps and its 512 px samples): docs/performance.md
    MemoryFigure(512, 2, False, "bf16", 5765, "NVIDIA H200, 2026-12-04"),
)


@dataclass(frozen=True)
class Need:
    mib: int
    how: str  # where the figure comes from, said to the user


def estimate(
    figures: tuple[MemoryFigure, ...], resolution: int, batch: int, checkpointing: bool, precision: str
) -> Need | None:
    """The memory a run of `batch` images at `resolution` needs, from the figures; None where they do not say."""
    same = [f for f in figures if f.resolution == resolution and f.mixed_precision == precision]
    rows = sorted((f for f in same if f.gradient_checkpointing == checkpointing), key=lambda f: f.batch_size)
    for f in rows:
        if f.batch_size == batch:
            return Need(f.peak_mib, f"measured at batch {batch}, {resolution} px, {precision} ({f.source})")
    line = _line(rows)
    if line is None and checkpointing:
        # one run with checkpointing: the fixed part (model, LoRA, optimizer) is that of the runs without it
        plain = _line(sorted((f for f in same if not f.gradient_checkpointing), key=lambda f: f.batch_size))
        if plain is not None and rows:
            fixed, point = plain[0], rows[-1]
            line = (fixed, (point.peak_mib - fixed) / point.batch_size, f"{point.source}, and without checkpointing")
    if line is None:
        return None
    fixed, per_image, source = line
    batches = "/".join(str(f.batch_size) for f in rows)
    return Need(
        round(fixed + per_image * batch),
        f"{fixed:.0f} MiB + {per_image:.0f} MiB per image, from batches {batches} at {resolution} px, "
        f"{precision}{', gradient checkpointing' if checkpointing else ''} ({source})",
    )


def _line(rows: list[MemoryFigure]) -> tuple[float, float, str] | None:
    """(fixed MiB, MiB per image, source) through the smallest and the largest batch measured."""
    if len(rows) < 2 or rows[0].batch_size == rows[-1].batch_size:
        return None
    low, high = rows[0], rows[-1]
    per_image = (high.peak_mib - low.peak_mib) / (high.batch_size - low.batch_size)
    return low.peak_mib - per_image * low.batch_size, per_image, high.source


@dataclass(frozen=True)
class Change:
    key: str  # the sd-scripts argument (run.json names the change by it)
    old: TomlValue
    new: TomlValue


@dataclass(frozen=True)
class Fit:
    """What train found and did about the GPU's memory; run.json's machine entry records it
    (train/manifest.py memory_fit: rundir.MemoryFit)."""

    gpu_mib: int | None  # the smallest visible GPU's total memory
    need_mib: int | None  # the plan's need, where measured
    how: str | None  # where that need comes from
    changes: tuple[Change, ...] = ()
    note: str | None = None  # said to the user before the trainer starts
    # what train changed: None where it kept the plan's value
    batch_size: int | None = None
    grad_accum: int | None = None
    gradient_checkpointing: bool | None = None


def square_resolution(value: object) -> int | None:
    """512 for "512" or "512,512"; None for a non-square resolution (nothing is measured for those)."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    try:
        sides = {int(p) for p in parts}
    except ValueError:
        return None
    return sides.pop() if len(sides) == 1 else None


# the TrainerSettings fields fit_gpu may change, unless the user set them with --set
_KNOBS = ("batch_size", "grad_accum", "gradient_checkpointing")


def fit_gpu(
    settings: TrainerSettings,
    user_set: frozenset[str],
    precision: str,
    gpu_mib: int | None,
    figures: tuple[MemoryFigure, ...] = MEASURED,
) -> Fit | None:
    """Gradient checkpointing, or a smaller batch with more accumulation, when the plan does not fit the GPU.

    user_set: the TrainerSettings fields the user set with --set (kept as given).
    None on a machine without a CUDA GPU (or one whose memory nvidia-smi did not say).
    """
    if gpu_mib is None or gpu_mib <= 0:
        return None
    resolution = square_resolution(settings.resolution)
    batch, checkpointing = settings.batch_size, settings.gradient_checkpointing
    usable = int(gpu_mib * USABLE_FRACTION)
    need = estimate(figures, resolution, batch, checkpointing, precision) if resolution else None
    if need is None:
        return Fit(
            gpu_mib,
            None,
            None,
            note=f"no measured GPU memory figure for batch {batch} at {settings.resolution} px in {precision}: "
            "the plan's batch size and gradient checkpointing are kept (docs/performance.md#fitting-the-gpu)",
        )
    if need.mib <= usable:
        return Fit(gpu_mib, need.mib, need.how)
    assert resolution is not None
    short = f"needs about {need.mib} MiB ({need.how}); this GPU has {gpu_mib} MiB"
    for new_batch, new_checkpointing in _options(settings, user_set):
        fits = estimate(figures, resolution, new_batch, new_checkpointing, precision)
        if fits is not None and fits.mib <= usable:
            return _changed(settings, gpu_mib, need, (new_batch, new_checkpointing), f"the plan {short}", fits.mib)
    kept = sorted(argument_of(f) for f in user_set & set(_KNOBS))
    why = f"--set {', '.join(kept)} kept as given" if kept else "no measured batch and checkpointing fits"
    return Fit(gpu_mib, need.mib, need.how, note=f"the plan {short}; {why}: it may run out of memory (exit 10)")


def _options(settings: TrainerSettings, user_set: frozenset[str]) -> list[tuple[int, bool]]:
    """(batch, checkpointing) to try, the least change first; what the user set stays."""
    batch, checkpointing = settings.batch_size, settings.gradient_checkpointing
    may_checkpoint = not checkpointing and "gradient_checkpointing" not in user_set
    options: list[tuple[int, bool]] = []
    if may_checkpoint:
        options.append((batch, True))
    if not user_set & {"batch_size", "grad_accum"}:
        for smaller in sorted((b for b in range(1, batch) if batch % b == 0), reverse=True):
            options += [(smaller, checkpointing)]
            if may_checkpoint:
                options.append((smaller, True))
    return options


def _changed(
    settings: TrainerSettings, gpu_mib: int, need: Need, to: tuple[int, bool], short: str, fits_mib: int
) -> Fit:
    new_batch, new_checkpointing = to
    batch, accum, checkpointing = settings.batch_size, settings.grad_accum, settings.gradient_checkpointing
    changes = []
    if new_checkpointing != checkpointing:
        changes.append(Change(argument_of("gradient_checkpointing"), checkpointing, True))
    if new_batch != batch:
        changes.append(Change(argument_of("batch_size"), batch, new_batch))
        changes.append(Change(argument_of("grad_accum"), accum, accum * (batch // new_batch)))
    said = ", ".join(f"{c.key} {c.old} -> {c.new}" for c in changes)
    return Fit(
        gpu_mib,
        need.mib,
        need.how,
        tuple(changes),
        f"{short}: {said} (about {fits_mib} MiB; the same images per step)",
        batch_size=new_batch if new_batch != batch else None,
        grad_accum=accum * (batch // new_batch) if new_batch != batch else None,
        gradient_checkpointing=True if new_checkpointing != checkpointing else None,
    )
