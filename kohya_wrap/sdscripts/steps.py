"""sd-scripts' step arithmetic (docs/sd-scripts.md#step-formula) and the search for repeats and epochs that land on a target.

count_steps() reproduces what train_network.py prints in its "running training" summary:
DreamBoothDataset.__init__ (repeats, regularization balancing), BaseDataset.make_buckets (one batch list
per bucket, each rounded up), and NetworkTrainer.train (processes, gradient accumulation, epochs).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class StepSubset:
    images: int
    repeats: int
    is_reg: bool = False
    # The bucket all the subset's images fall in. Prepared images are square at one size, so a subset
    # is one bucket; train and reg images of the same size share it (buckets are per dataset).
    bucket: Hashable = "default"


@dataclass(frozen=True)
class StepCount:
    train_images_x_repeats: int  # "num train images * repeats"
    raw_reg_images_x_repeats: int  # "num reg images": before balancing
    reg_images_x_repeats: int  # after balancing: what an epoch really holds
    bucket_counts: tuple[tuple[Hashable, int], ...]
    batch_size: int
    grad_accum: int
    num_processes: int
    batches_per_epoch: int  # len(train_dataloader) before accelerate splits it across processes
    steps_per_epoch: int  # optimization steps per epoch

    def epochs_for(self, max_train_steps: int) -> int:
        """train_network.py: NetworkTrainer.train: num_train_epochs = ceil(max_train_steps / num_update_steps_per_epoch)."""
        return math.ceil(max_train_steps / self.steps_per_epoch) if self.steps_per_epoch else 0


def balanced_reg_repeats(train_total: int, reg: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Per reg subset, the repeats each of its images ends with (0: never registered).

    reg: (images, repeats) per reg subset, in registration order. DreamBoothDataset.__init__ registers reg
    images one by one until their repeats reach the train total, then raises every image by one repeat
    per pass until they do. Closed form of that loop, so that planning stays fast for large totals.
    """
    flat = [r for images, r in reg for _ in range(images)]
    out = [0] * len(flat)
    if flat and train_total > 0:
        n = 0
        for i, r in enumerate(flat):
            out[i] = r
            n += r
            if n >= train_total:
                break
        else:
            deficit = train_total - n
            full, rest = divmod(deficit, len(flat))
            for i in range(len(flat)):
                out[i] += full + (1 if i < rest else 0)
    per_subset, start = [], 0
    for images, _ in reg:
        per_subset.append(out[start : start + images])
        start += images
    return per_subset


def count_steps(
    subsets: Sequence[StepSubset], *, batch_size: int, grad_accum: int = 1, num_processes: int = 1
) -> StepCount:
    """What sd-scripts computes for one dataset with these subsets."""
    used = [s for s in subsets if s.repeats >= 1 and s.images > 0]  # others are skipped with a warning
    train = [s for s in used if not s.is_reg]
    reg = [s for s in used if s.is_reg]
    train_total = sum(s.images * s.repeats for s in train)
    raw_reg = sum(s.images * s.repeats for s in reg)
    buckets: dict[Hashable, int] = {}
    for s in train:
        buckets[s.bucket] = buckets.get(s.bucket, 0) + s.images * s.repeats
    reg_total = 0
    for s, repeats in zip(reg, balanced_reg_repeats(train_total, [(s.images, s.repeats) for s in reg]), strict=False):
        n = sum(repeats)
        if n:
            buckets[s.bucket] = buckets.get(s.bucket, 0) + n
        reg_total += n
    batches = sum(math.ceil(count / batch_size) for count in buckets.values())
    steps = math.ceil(math.ceil(batches / num_processes) / grad_accum)
    return StepCount(
        train_images_x_repeats=train_total,
        raw_reg_images_x_repeats=raw_reg,
        reg_images_x_repeats=reg_total,
        bucket_counts=tuple(buckets.items()),
        batch_size=batch_size,
        grad_accum=grad_accum,
        num_processes=num_processes,
        batches_per_epoch=batches,
        steps_per_epoch=steps,
    )


@dataclass(frozen=True)
class StepTarget:
    target: int
    min_steps: int
    max_steps: int
    preferred_epochs: int = 10  # tie-break among equally near totals: about this many epochs
    max_repeats: int = 100
    # One epoch holding every step (repeats do the work of epochs), ending exactly at the target:
    # sd-scripts resumes correctly only inside the first epoch (resume.resume_problem).
    single_epoch: bool = False


@dataclass(frozen=True)
class StepPlan:
    repeats: tuple[int, ...]  # final repeats per subset, in the order given
    count: StepCount
    epochs: int
    max_train_steps: int
    whole_epochs: bool  # False: training stops partway through the last epoch
    in_range: bool
    arithmetic: str
    warnings: tuple[str, ...] = field(default=())


def _with_repeats(subsets: Sequence[StepSubset], repeats: int) -> list[StepSubset]:
    return [s if s.is_reg else StepSubset(s.images, repeats, s.is_reg, s.bucket) for s in subsets]


def plan_steps(
    subsets: Sequence[StepSubset],
    target: StepTarget,
    *,
    batch_size: int,
    grad_accum: int = 1,
    num_processes: int = 1,
    choose_repeats: bool = True,
    fixed_steps: int | None = None,
    fixed_epochs: int | None = None,
) -> StepPlan:
    """Repeats (for the train subsets, when choose_repeats) and epochs whose total lands in
    [min_steps, max_steps] nearest the target, in whole epochs so every image is seen equally often.

    fixed_steps / fixed_epochs: the user pinned max_train_steps / max_train_epochs for this run.
    """
    kw = {"batch_size": batch_size, "grad_accum": grad_accum, "num_processes": num_processes}
    if target.single_epoch and choose_repeats and fixed_epochs is None:
        # pinned steps too: one epoch holding them, so the run resumes correctly (not preferred_epochs of them)
        one = _single_epoch(subsets, target if fixed_steps is None else replace(target, target=fixed_steps), kw)
        if one is not None:
            return one if fixed_steps is None else replace(one, in_range=_in_range(target, fixed_steps))
    pinned = _Pinned(fixed_steps, fixed_epochs)
    best = _best_repeats(subsets, target, kw, choose_repeats, pinned)
    if best is None:
        count = count_steps(subsets, **kw)
        return StepPlan(
            tuple(s.repeats for s in subsets),
            count,
            0,
            0,
            False,
            False,
            "no training images: 0 steps",
            ("the dataset has no training images",),
        )
    chosen, count, epochs = best
    return _ending(chosen, count, epochs, target, pinned)


@dataclass(frozen=True)
class _Pinned:
    steps: int | None  # max_train_steps the user set for this run
    epochs: int | None  # max_train_epochs


def _in_range(target: StepTarget, total: int) -> bool:
    return target.min_steps <= total <= target.max_steps


def _best_repeats(
    subsets: Sequence[StepSubset], target: StepTarget, kw: dict[str, int], choose_repeats: bool, pinned: _Pinned
) -> tuple[list[StepSubset], StepCount, int] | None:
    """(the subsets with their repeats, their step count, epochs) nearest the target; None: no training images."""
    repeat_options: Sequence[int | None] = range(1, target.max_repeats + 1) if choose_repeats else [None]
    best: tuple[tuple[bool, int, int, int], list[StepSubset], StepCount, int] | None = None
    for r in repeat_options:
        chosen = list(subsets) if r is None else _with_repeats(subsets, r)
        count = count_steps(chosen, **kw)
        spe = count.steps_per_epoch
        if spe == 0:
            break
        if pinned.steps is not None:
            epochs_options = [count.epochs_for(pinned.steps)]
        elif pinned.epochs is not None:
            epochs_options = [pinned.epochs]
        else:
            epochs_options = sorted({max(1, target.target // spe), max(1, math.ceil(target.target / spe))})
        for e in epochs_options:
            total = pinned.steps if pinned.steps is not None else e * spe
            score = (not _in_range(target, total), abs(total - target.target), abs(e - target.preferred_epochs), r or 0)
            if best is None or score < best[0]:
                best = (score, chosen, count, e)
        if r is not None and spe > target.max_steps and best is not None and not best[0][0]:
            break  # more repeats only make epochs longer
    return None if best is None else best[1:]


def _ending(chosen: list[StepSubset], count: StepCount, epochs: int, target: StepTarget, pinned: _Pinned) -> StepPlan:
    """Where training ends: after whole epochs, or (no whole number fits the range) at the target, partway."""
    warnings: list[str] = []
    spe = count.steps_per_epoch
    if pinned.steps is not None:
        total, whole = pinned.steps, pinned.steps % spe == 0
    else:
        total, whole = epochs * spe, True
        if not _in_range(target, total) and pinned.epochs is None:
            # No whole number of epochs fits the range: stop partway through an epoch, at the target.
            total, whole = target.target, target.target % spe == 0
            epochs = count.epochs_for(total)
            warnings.append(
                f"one epoch is {spe} steps, so no whole number of epochs lands in {target.min_steps}-{target.max_steps} "
                f"steps; training stops at step {total}, in epoch {epochs}"
            )
    in_range = _in_range(target, total)
    if not in_range and pinned.steps is None and pinned.epochs is None:
        warnings.append(f"{total} steps is outside the preset's range {target.min_steps}-{target.max_steps}")
    return StepPlan(
        repeats=tuple(s.repeats for s in chosen),
        count=count,
        epochs=epochs,
        max_train_steps=total,
        whole_epochs=whole,
        in_range=in_range,
        arithmetic=arithmetic(chosen, count, epochs, total, whole),
        warnings=tuple(warnings),
    )


def _single_epoch(subsets: Sequence[StepSubset], target: StepTarget, kw: dict[str, int]) -> StepPlan | None:
    """The fewest repeats whose one epoch holds the target; None when max_repeats cannot reach it."""
    for r in range(1, target.max_repeats + 1):
        chosen = _with_repeats(subsets, r)
        count = count_steps(chosen, **kw)
        if count.steps_per_epoch == 0:
            return None
        if count.steps_per_epoch >= target.target:
            whole = count.steps_per_epoch == target.target
            return StepPlan(
                repeats=tuple(s.repeats for s in chosen),
                count=count,
                epochs=1,
                max_train_steps=target.target,
                whole_epochs=whole,
                in_range=True,
                arithmetic=arithmetic(chosen, count, 1, target.target, whole),
            )
    return None


def arithmetic(subsets: Sequence[StepSubset], count: StepCount, epochs: int, total: int, whole: bool) -> str:
    """The step count as a sentence: images x repeats / batch = steps per epoch; x epochs = total."""
    train = [s for s in subsets if not s.is_reg and s.repeats >= 1 and s.images > 0]
    if len(train) == 1:
        images, repeats = train[0].images, train[0].repeats
        text = f"{images} image{'' if images == 1 else 's'} x {repeats} repeat{'' if repeats == 1 else 's'}"
    else:
        text = (
            "("
            + " + ".join(f"{s.images} x {s.repeats}" for s in train)
            + f") = {count.train_images_x_repeats} images x repeats"
        )
    if count.reg_images_x_repeats:
        text += f" + {count.reg_images_x_repeats} regularization images x repeats"
        if count.reg_images_x_repeats != count.raw_reg_images_x_repeats:
            text += f" (balanced from {count.raw_reg_images_x_repeats})"
    text += f" / batch {count.batch_size}"
    exact = (count.train_images_x_repeats + count.reg_images_x_repeats) / count.batch_size
    if len(count.bucket_counts) > 1 or exact != count.batches_per_epoch:
        text += f" = {count.batches_per_epoch} batches (rounded up per bucket)"
    if count.num_processes > 1:
        text += f" / {count.num_processes} GPUs"
    if count.grad_accum > 1:
        text += f" / {count.grad_accum} accumulation steps"
    text += f" = {count.steps_per_epoch} steps per epoch"
    if whole:
        text += f"; x {epochs} epoch{'s' if epochs != 1 else ''} = {total} steps"
    else:
        text += f"; stops at {total} steps, in epoch {epochs}"
    return text
