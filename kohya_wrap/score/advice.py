"""What to do next with a run, from its score: the advice at the end of `train`, `score` and `status`,
and the rule that stops a training early (`train --stop-early`).

Both read score.json's records (score.records), so they work on a score written by any kohya-wrap and
on a live score of the checkpoints so far. A checkpoint *copies* when most of its samples reproduce a
training photo (its `copying` flag, where the score gives one), not when one sample does.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kohya_wrap.codec import Record
from kohya_wrap.score.records import CheckpointScore, Recommended, ScoreReport

EXTEND_STEPS = 1000  # what "not learnt yet" suggests: four checkpoints more of the likeness presets
STOP_PATIENCE = 3  # checkpoints past the preset's minimum without a better likeness before stopping
LIKENESS_GAIN = 0.01  # a likeness this much higher counts as better (the score rounds to 4 digits)

RECOMMENDED, NOT_LEARNT, COPIES, NOT_SCORED = "recommended", "not_learnt", "copies", "not_scored"
AdviceKind = Literal["recommended", "not_learnt", "copies", "not_scored"]


class Advice(Record, frozen=True):
    kind: AdviceKind
    text: str  # the advice in words, one line
    step: int | None = None  # the checkpoint to export, when there is one
    command: str | None = None  # the command to run next, when there is one


def is_copying(checkpoint: CheckpointScore) -> bool:
    """Most of the checkpoint's samples copy a training photo."""
    if checkpoint.copying is not None:
        return checkpoint.copying
    return checkpoint.samples > 0 and checkpoint.copies * 2 > checkpoint.samples


def _scored(checkpoints: Sequence[CheckpointScore]) -> list[CheckpointScore]:
    return sorted((c for c in checkpoints if c.samples > 0), key=lambda c: c.step)


def _figures(c: CheckpointScore | Recommended) -> str:
    copies = c.copies
    return (
        (f"likeness {c.likeness:.2f}, " if c.likeness is not None else "")
        + f"{c.matches} of {c.samples} samples the person, "
        + ("no copies" if copies == 0 else f"{copies} cop{'y' if copies == 1 else 'ies'}")
    )


def advise(report: ScoreReport | None, run_dir: str | Path | None = None) -> Advice:
    """The advice for a run (or any scored samples, run_dir=None) from its score."""
    where = shlex.quote(str(run_dir)) if run_dir is not None else "RUN_DIR"
    if report is None:
        return Advice(
            kind="not_scored", text=f"not scored yet: `kohya-wrap score {where}`", command=f"kohya-wrap score {where}"
        )
    checkpoints = _scored(report.checkpoints)
    first_copy = next((c for c in checkpoints if is_copying(c)), None)
    rec = report.recommended
    if rec is not None:
        picked = next((c for c in checkpoints if c.step == rec.step), rec)
        export = f"kohya-wrap export {where} --step {rec.step} -o OUT.safetensors"
        if first_copy is not None and first_copy.step > rec.step:
            return Advice(
                kind="copies",
                text=f"copies from step {first_copy.step}: export step {rec.step} ({_figures(picked)}); "
                "next time fewer steps or a lower learning rate",
                step=rec.step,
                command=export,
            )
        return Advice(
            kind="recommended", text=f"recommended step {rec.step} ({_figures(picked)})", step=rec.step, command=export
        )
    if first_copy is not None:
        return Advice(
            kind="copies",
            text=f"copies from step {first_copy.step}, and no earlier checkpoint is the person: "
            "next time fewer steps or a lower learning rate, or more varied photos",
        )
    return _not_learnt(checkpoints, where if run_dir is not None else None)


def _not_learnt(checkpoints: Sequence[CheckpointScore], where: str | None) -> Advice:
    command = f"kohya-wrap train --extend {EXTEND_STEPS} {where}" if where is not None else None
    faces = sum(c.faces for c in checkpoints)
    best = max((c for c in checkpoints if c.likeness is not None), key=lambda c: c.likeness or 0.0, default=None)
    seen = (
        f"the most alike is step {best.step} at likeness {best.likeness or 0.0:.2f}"
        if best is not None
        else "no sample shows a face yet"
        if faces == 0
        else "no sample is the person"
    )
    text = f"not learnt yet ({seen}): " + (f"`{command}`" if command else "train longer")
    return Advice(kind="not_learnt", text=text, command=command)


@dataclass(frozen=True)
class StopDecision:
    step: int  # the last checkpoint scored when it was decided
    reason: str


def stop_decision(
    checkpoints: Sequence[CheckpointScore],
    *,
    min_steps: int | None,
    after_step: int | None = None,
    patience: int = STOP_PATIENCE,
) -> StopDecision | None:
    """Whether more training can only make it worse, from the checkpoints scored so far.

    - copies persist: most samples of the last two checkpoints copy a training photo (at any step);
    - the likeness has not improved for `patience` checkpoints at or past the preset's min_steps.
    Never stops before min_steps unless samples copy. after_step (`train --extend`): only checkpoints
    past it count as evidence, so that an extension is not stopped by what made the run end before.
    """
    scored = _scored(checkpoints)
    if not scored:
        return None
    last = scored[-1]
    start = after_step if after_step is not None else -1
    if last.step <= start:
        return None
    new = [c for c in scored if c.step > start]
    if len(new) >= 2 and is_copying(scored[-2]) and is_copying(last):
        run = len(scored) - 1
        while run > 0 and is_copying(scored[run - 1]):
            run -= 1
        return StopDecision(
            last.step,
            f"copies persist: most samples of steps {scored[-2].step} and {last.step} reproduce a training "
            f"photo (copies from step {scored[run].step})",
        )
    alike = [(c, c.likeness) for c in scored if c.likeness is not None]
    if not alike:
        return None
    best, best_likeness = alike[0]
    for c, likeness in alike[1:]:
        if likeness > best_likeness + LIKENESS_GAIN:
            best, best_likeness = c, likeness
    floor = min_steps or 0
    since = [c for c, _ in alike if c.step > max(best.step, start) and c.step >= floor]
    if len(since) >= patience:
        return StopDecision(
            last.step,
            f"likeness has not improved since step {best.step} ({best_likeness:.2f}) in the "
            f"{len(since)} checkpoints since, past the preset's minimum of {floor} steps",
        )
    return None
