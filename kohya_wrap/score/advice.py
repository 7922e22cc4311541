"""What to do next with a run, from its score: the advice at the end of `train`, `score` and `status`,
and the rule that stops a training early (`train --stop-early`).

Both read the score's JSON shape (score.json: `checkpoints` with step, samples, faces, likeness,
matches, copies; `recommended`), so they work on a score written by any kohya-wrap and on a live
score of the checkpoints so far. A checkpoint *copies* when most of its samples reproduce a
training photo (its `copying` flag, where the score gives one), not when one sample does.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTEND_STEPS = 1000  # what "not learnt yet" suggests: four checkpoints more of the likeness presets
STOP_PATIENCE = 3  # checkpoints past the preset's minimum without a better likeness before stopping
LIKENESS_GAIN = 0.01  # a likeness this much higher counts as better (the score rounds to 4 digits)

RECOMMENDED, NOT_LEARNT, COPIES, NOT_SCORED = "recommended", "not_learnt", "copies", "not_scored"


@dataclass(frozen=True)
class Advice:
    kind: str  # recommended | not_learnt | copies | not_scored
    text: str  # the advice in words, one line
    step: int | None = None  # the checkpoint to export, when there is one
    command: str | None = None  # the command to run next, when there is one

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "step": self.step, "command": self.command}


def is_copying(checkpoint: Mapping[str, Any]) -> bool:
    """Most of the checkpoint's samples copy a training photo."""
    flag = checkpoint.get("copying")
    if isinstance(flag, bool):
        return flag
    samples = int(checkpoint.get("samples") or 0)
    return samples > 0 and int(checkpoint.get("copies") or 0) * 2 > samples


def _scored(checkpoints: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((c for c in checkpoints if int(c.get("samples") or 0) > 0), key=lambda c: int(c["step"]))


def _figures(c: Mapping[str, Any]) -> str:
    likeness = c.get("likeness")
    copies = int(c.get("copies") or 0)
    return (
        (f"likeness {likeness:.2f}, " if isinstance(likeness, (int, float)) else "")
        + f"{c.get('matches')} of {c.get('samples')} samples the person, "
        + ("no copies" if copies == 0 else f"{copies} cop{'y' if copies == 1 else 'ies'}")
    )


def advise(doc: Mapping[str, Any] | None, run_dir: str | Path | None = None) -> Advice:
    """The advice for a run (or any scored samples, run_dir=None) from its score."""
    where = shlex.quote(str(run_dir)) if run_dir is not None else "RUN_DIR"
    if doc is None:
        return Advice(NOT_SCORED, f"not scored yet: `kohya-wrap score {where}`", command=f"kohya-wrap score {where}")
    checkpoints = _scored(doc.get("checkpoints") or [])
    rec = doc.get("recommended") if isinstance(doc.get("recommended"), Mapping) else None
    rec_step = rec.get("step") if rec is not None and isinstance(rec.get("step"), int) else None
    first_copy = next((c for c in checkpoints if is_copying(c)), None)
    if rec is not None and rec_step is not None:
        picked = next((c for c in checkpoints if c.get("step") == rec_step), rec)
        export = f"kohya-wrap export {where} --step {rec_step} -o OUT.safetensors"
        if first_copy is not None and int(first_copy["step"]) > rec_step:
            return Advice(
                COPIES,
                f"copies from step {first_copy['step']}: export step {rec_step} ({_figures(picked)}); "
                "next time fewer steps or a lower learning rate",
                step=rec_step,
                command=export,
            )
        return Advice(RECOMMENDED, f"recommended step {rec_step} ({_figures(picked)})", step=rec_step, command=export)
    if first_copy is not None:
        return Advice(
            COPIES,
            f"copies from step {first_copy['step']}, and no earlier checkpoint is the person: "
            "next time fewer steps or a lower learning rate, or more varied photos",
        )
    command = f"kohya-wrap train --extend {EXTEND_STEPS} {where}" if run_dir is not None else None
    faces = sum(int(c.get("faces") or 0) for c in checkpoints)
    best = max(
        (c for c in checkpoints if isinstance(c.get("likeness"), (int, float))),
        key=lambda c: float(c["likeness"]),
        default=None,
    )
    seen = (
        f"the most alike is step {best['step']} at likeness {float(best['likeness']):.2f}"
        if best is not None
        else "no sample shows a face yet"
        if faces == 0
        else "no sample is the person"
    )
    text = f"not learnt yet ({seen}): " + (f"`{command}`" if command else "train longer")
    return Advice(NOT_LEARNT, text, command=command)


@dataclass(frozen=True)
class StopDecision:
    step: int  # the last checkpoint scored when it was decided
    reason: str


def stop_decision(
    checkpoints: Sequence[Mapping[str, Any]],
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
    if int(last["step"]) <= start:
        return None
    new = [c for c in scored if int(c["step"]) > start]
    if len(new) >= 2 and is_copying(scored[-2]) and is_copying(last):
        run = len(scored) - 1
        while run > 0 and is_copying(scored[run - 1]):
            run -= 1
        return StopDecision(
            int(last["step"]),
            f"copies persist: most samples of steps {scored[-2]['step']} and {last['step']} reproduce a training "
            f"photo (copies from step {scored[run]['step']})",
        )
    alike = [c for c in scored if isinstance(c.get("likeness"), (int, float))]
    if not alike:
        return None
    best = alike[0]
    for c in alike[1:]:
        if float(c["likeness"]) > float(best["likeness"]) + LIKENESS_GAIN:
            best = c
    floor = min_steps or 0
    since = [c for c in alike if int(c["step"]) > max(int(best["step"]), start) and int(c["step"]) >= floor]
    if len(since) >= patience:
        return StopDecision(
            int(last["step"]),
            f"likeness has not improved since step {best['step']} ({float(best['likeness']):.2f}) in the "
            f"{len(since)} checkpoints since, past the preset's minimum of {floor} steps",
        )
    return None
