"""RUN_DIR/score.json: its records, its one reader (`read_score`) and its one writer (`write_score`).

The records are frozen codec Records whose fields are score.json's keys, so `codec.to_builtins(report)`
is the file and `score --json` (with the advice added). Every field an older kohya-wrap did not write
has a default, so a score.json of any earlier version reads (the format kept schema 1 and only grew).
Reading one needs neither the identity model nor numpy: status, the report and export use this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from kohya_wrap import codec
from kohya_wrap.codec import Record
from kohya_wrap.faceid import SAME_PERSON_DISTANCE

SCORE_SCHEMA = 1
LIKENESS_SCALE = 2 * SAME_PERSON_DISTANCE  # distance at which likeness reaches 0
LIKENESS_FORMULA = f"clip(1 - median distance / {LIKENESS_SCALE:g}, 0, 1)"
COPY_CORRELATION = 0.81  # mean band-pass correlation from which a sample copies a reference (bench/score_heldout.py)
COPY_SHARE = 0.5  # a checkpoint copies when at least this share of its samples with a face do


class LeftOut(Record, frozen=True):
    """A file score did not use, and why (reported in the result, never silently dropped)."""

    file: str
    kind: Literal["sample", "reference"]
    why: str


class ImageScore(Record, frozen=True):
    file: str
    faces: int
    distance: float | None = None  # median distance to the references
    closest: float | None = None  # distance to the nearest reference
    likeness: float | None = None
    match: bool = False
    copy_of: str | None = None  # the reference photo it reproduces
    copy_correlation: float | None = None  # the highest copy correlation with any reference (band-pass mean)


class CheckpointScore(Record, frozen=True):
    step: int
    samples: int = 0
    faces: int = 0
    likeness: float | None = None
    matches: int = 0
    copies: int = 0
    copying: bool | None = None  # None: decided from copies/faces by the default COPY_SHARE (score_report settles it)
    distance: float | None = None
    variety: float | None = None  # 0: every sample the same picture .. 1: unrelated pictures
    checkpoint: str | None = None  # the LoRA file saved at this step (scoring a run)
    validation_loss: float | None = None  # sd-scripts' loss/validation/step_average at this step
    images: tuple[ImageScore, ...] = ()

    def is_copying(self, share: float = COPY_SHARE) -> bool:
        """A share of the samples with a face copy a photo (one odd sample among three does not)."""
        if self.copying is not None:
            return self.copying
        return self.copies > 0 and self.copies >= share * max(self.faces, 1)


class Recommended(Record, frozen=True):
    """The recommended checkpoint's figures, as score.json repeats them under `recommended`."""

    step: int
    checkpoint: str | None = None
    likeness: float | None = None
    matches: int = 0
    samples: int = 0
    faces: int = 0
    copies: int = 0

    @staticmethod
    def of(c: CheckpointScore | None) -> Recommended | None:
        if c is None:
            return None
        return Recommended(
            step=c.step,
            checkpoint=c.checkpoint,
            likeness=c.likeness,
            matches=c.matches,
            samples=c.samples,
            faces=c.faces,
            copies=c.copies,
        )


class References(Record, frozen=True):
    where: str = ""
    photos: int = 0
    faces: int = 0


class ScoreModel(Record, frozen=True):
    """The identity model and the thresholds the score was judged by."""

    id: str = ""
    same_person_distance: float = SAME_PERSON_DISTANCE
    match_distance: float = SAME_PERSON_DISTANCE  # this person's same-person threshold
    spread: float | None = None  # the reference photos' leave-one-out spread (None: too few)
    likeness: str = LIKENESS_FORMULA
    copy_correlation: float = COPY_CORRELATION
    copy_share: float = COPY_SHARE


class ScoreReport(Record, frozen=True):
    """score.json: every checkpoint's figures, the recommendation, why, and how sure."""

    schema: int = SCORE_SCHEMA
    checkpoints: tuple[CheckpointScore, ...] = ()
    recommended: Recommended | None = None
    reason: str = ""
    confidence: str = ""  # "clear", "close call: ...", "" when nothing is recommended
    close: tuple[int, ...] = ()  # the steps within the noise of the pick (the pick included)
    left_out: tuple[LeftOut, ...] = ()  # files not scored, and why
    references: References = References()
    samples: str = ""  # where the samples came from
    model: ScoreModel = ScoreModel()
    seconds: float = 0.0
    cache: dict[str, int] = msgspec.field(default_factory=dict)  # hits, misses

    @property
    def recommended_step(self) -> int | None:
        return None if self.recommended is None else self.recommended.step

    @property
    def match_distance(self) -> float:
        return self.model.match_distance

    @property
    def spread(self) -> float | None:
        return self.model.spread

    def checkpoint_at(self, step: int) -> CheckpointScore | None:
        return next((c for c in self.checkpoints if c.step == step), None)


def settle(checkpoints: tuple[CheckpointScore, ...] | list[CheckpointScore]) -> tuple[CheckpointScore, ...]:
    """The checkpoints with their copying flag settled by the default share: score.json always says it."""
    return tuple(msgspec.structs.replace(c, copying=c.is_copying()) for c in checkpoints)


_HINT = "score the run again: kohya-wrap score RUN_DIR"


def read_score(run_dir: str | Path) -> ScoreReport:
    """RUN_DIR/score.json; a RecordError naming the file and field when it is missing or not a score."""
    from kohya_wrap import rundir

    return codec.read(rundir.paths(run_dir).score_json, ScoreReport, what="the run's score", hint=_HINT)


def load_score(run_dir: str | Path) -> ScoreReport | None:
    """RUN_DIR/score.json, or None when the run is not scored or its score.json cannot be read (a hand-edited
    or damaged file reads as no score, never as a crash later: status and the report still show the run)."""
    try:
        return read_score(run_dir)
    except codec.RecordError:
        return None


def write_score(run_dir: str | Path, report: ScoreReport) -> Path:
    """The one writer of RUN_DIR/score.json (atomic: a half-written score never looks like one)."""
    from kohya_wrap import rundir

    path = rundir.paths(run_dir).score_json
    codec.write(path, report)
    return path


def recommended_step(report: ScoreReport | None) -> int | None:
    return None if report is None else report.recommended_step


def recommended_line(report: ScoreReport | None) -> str:
    """One line for `status` and `train`'s end: the recommended step and why, or why none."""
    if report is None:
        return "not scored yet (kohya-wrap score RUN_DIR)"
    rec = report.recommended
    if rec is None:
        return f"no checkpoint recommended: {report.reason}"
    name = f" ({rec.checkpoint})" if rec.checkpoint else ""
    copies = rec.copies
    copied = "no copies" if not copies else f"{copies} cop{'y' if copies == 1 else 'ies'} (under the share)"
    sure = f"; {report.confidence}" if report.confidence.startswith("close call") else ""
    return (
        f"recommended: step {rec.step}{name}, likeness {rec.likeness}, "
        f"{rec.matches}/{rec.samples} samples the person, {copied}{sure}"
    )
