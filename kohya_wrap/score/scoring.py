"""Score each checkpoint's samples against photos of the person; recommend one (docs/score.md).

Per sample with a face (its largest one), against every reference photo with a face:
- distance: the median Euclidean distance of its 128-d descriptor to the references' descriptors;
- likeness: clip(1 - distance / 1.2, 0, 1), so dlib's same-person threshold 0.6 maps to 0.5;
- match: distance under the person's own threshold: dlib's 0.6, tightened to how far the reference
  photos lie from each other (their leave-one-out spread) plus a margin, so look-alikes stop counting;
- copy: the sample reproduces one reference photo (same pose, expression, light, framing): the mean
  of two band-pass correlations of the aligned images (the tight face, and a wider view with hair,
  neck and background; or the sample's mirror image: flip_aug trains on mirrored photos) is at least
  COPY_CORRELATION, and the sample is not clearly somebody else.
A checkpoint's likeness and distance are means over its samples with a face; it copies when a share
of its samples (COPY_SHARE) do, so one odd sample does not veto it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.faceid import SAME_PERSON_DISTANCE, IdentityModel, Observation
from kohya_wrap.score.collect import SampleGroup, SampleSet, ScoreError
from kohya_wrap.score.records import (
    COPY_CORRELATION,
    COPY_SHARE,
    LIKENESS_SCALE,
    CheckpointScore,
    ImageScore,
    LeftOut,
    Recommended,
    References,
    ScoreModel,
    ScoreReport,
    settle,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from kohya_wrap.faceid import GreyImage, Mask, RgbImage
    from kohya_wrap.score.cache import ObservationCache

    Floats = NDArray[np.float64]  # one value per reference (or per row)
    Chips = NDArray[np.float32]  # grey chips, flattened or stacked
    Reals = NDArray[np.float32 | np.float64]  # a band-passed view
    Thumb = NDArray[np.float32]  # a normalised grey variety thumbnail
    Seen = tuple[Path, Observation, "Thumb | None"]  # a sample, what the model sees in it, its thumbnail

# Thresholds measured on ../shared/photos by leaving people out (bench/score_heldout.py, docs/score.md).
# COPY_CORRELATION and COPY_SHARE are score.json's defaults too (score.records).
COPY_IDENTITY_GATE = 0.8  # a copy is not clearly somebody else (painted copies reach 0.65; others start ~0.7+)
IDENTITY_MARGIN = 0.10  # over the photos' own leave-one-out spread: this person's same-person threshold
MIN_MATCH_DISTANCE = 0.45  # the person's threshold never goes below this (near-duplicate photos)
MIN_SPREAD_PHOTOS = 3  # fewer reference faces than this: dlib's 0.6 as it is
LIKENESS_NOISE_FLOOR = 0.02  # two checkpoints' likeness closer than this are within the noise
LIKENESS_NOISE_CAP = 0.05  # ... and further apart than this are not, whatever their samples' spread
MIN_SAMPLES_FOR_SLACK = 3  # with fewer samples a checkpoint, one sample short of the best's share is too many
MIN_OVERLAP = 0.4  # share of the chip both faces must fill for their correlation to count
VARIETY_THUMB = 32
# Band-pass (difference of Gaussians) sigmas in pixels, and how far the mask shrinks (the blur
# smears the chip's filled-in border), for the tight 64 px face and the wide 128 px view.
TIGHT_BAND = (1.0, 3.0, 3)
WIDE_BAND = (3.0, 8.0, 5)
SHIFT_SEARCH_FROM = 0.55  # a mean correlation from which moved and rescaled views are tried too
SHIFT_SEARCH_REFS = 3  # for at most this many references (the most alike): a copy copies one photo
TIGHT_SHIFTS = (-2, -1, 0, 1, 2)  # pixels, in the 64 px tight view
WIDE_SHIFTS = (-4, -2, 0, 2, 4)  # pixels, in the 128 px wide view
# A painted copy's landmarks sit a little off (ink lines and flattened shading move the eye corners
# dlib's 5-point model finds), so its aligned views come out a few percent larger or smaller than the
# photo's: a copy is the same picture at any of these scales (about the views' centre).
COPY_SCALES = (0.92, 0.96, 1.04, 1.08)


@dataclass(frozen=True)
class Judgement:
    """The thresholds of the judgement; bench/score_heldout.py tunes them on some people, reports on others."""

    copy_correlation: float = COPY_CORRELATION
    copy_identity_gate: float = COPY_IDENTITY_GATE
    copy_share: float = COPY_SHARE
    identity_margin: float | None = IDENTITY_MARGIN  # None: dlib's 0.6 for everyone (not calibrated)
    min_match_distance: float = MIN_MATCH_DISTANCE
    likeness_noise_floor: float = LIKENESS_NOISE_FLOOR


DEFAULT_JUDGEMENT = Judgement()


@dataclass(frozen=True)
class Recommendation:
    """The pick, why, and how sure: "clear", or "close call: steps 1000 and 1250 within the noise ..."."""

    checkpoint: CheckpointScore | None
    reason: str
    confidence: str = ""  # "" when nothing is recommended
    close: tuple[int, ...] = ()  # the steps within the noise of the pick (the pick included)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def likeness_of(distance: float) -> float:
    return min(1.0, max(0.0, 1.0 - distance / LIKENESS_SCALE))


@dataclass(frozen=True)
class Reference:
    name: str
    observation: Observation


# -- the person's own threshold ---------------------------------------------------------------------


def person_spread(refs: Sequence[Reference]) -> float | None:
    """How far a photo of this person lies from the person's other photos: the largest leave-one-out median.

    None with fewer than MIN_SPREAD_PHOTOS reference faces (one distance says nothing of a spread).
    """
    import numpy as np

    if len(refs) < MIN_SPREAD_PHOTOS:
        return None
    e = np.stack([r.observation.face_arrays()[0] for r in refs])
    d = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=2)
    n = len(refs)
    loo = [float(np.median(np.delete(d[i], i))) for i in range(n)]
    return max(loo)


def match_distance_for(spread: float | None, judgement: Judgement = DEFAULT_JUDGEMENT) -> float:
    """The distance under which a sample is this person: dlib's 0.6, tightened for a person whose photos agree."""
    if spread is None or judgement.identity_margin is None:
        return SAME_PERSON_DISTANCE
    return min(SAME_PERSON_DISTANCE, max(judgement.min_match_distance, spread + judgement.identity_margin))


# -- copies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowStack:
    """Rows of flattened chips with their masks, multiplied out once so that correlating one chip with all
    of them is five matrix-vector products (float32)."""

    masks: Chips  # (rows, pixels): 1 inside the image
    masked: Chips  # masks * chips
    masked_squares: Chips  # masks * chips**2

    @staticmethod
    def of(chips: Reals, masks: Mask) -> RowStack:
        import numpy as np

        m = np.asarray(masks, dtype=np.float32)
        y = np.asarray(chips, dtype=np.float32)
        return RowStack(m, m * y, m * y * y)


def correlate_rows(rows: RowStack, chip: Reals, mask: Mask) -> Floats:
    import numpy as np

    m = mask.astype(np.float32)
    x = chip.astype(np.float32) * m

    def dot(matrix: Chips, vector: Chips) -> Floats:
        # einsum, not `@`: a threaded BLAS makes these small products several times slower on a busy CPU.
        return np.asarray(np.einsum("ij,j->i", matrix, vector), dtype=np.float64)

    count, sx, sxx = dot(rows.masks, m), dot(rows.masks, x), dot(rows.masks, x * chip)
    sy, syy, sxy = dot(rows.masked, m), dot(rows.masked_squares, m), dot(rows.masked, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sy / count
        var = (sxx - sx * sx / count) * (syy - sy * sy / count)
        r = cov / np.sqrt(var)
    return np.where((count >= MIN_OVERLAP * chip.size) & (var > 1e-6), r, -1.0)


def band_pass(chip: GreyImage, mask: Mask, band: tuple[float, float, int]) -> tuple[Reals, Mask]:
    """Difference of Gaussians: the edges and shapes of a picture, without its overall light and colour.

    Blurred by normalised convolution (the blur of the pixels inside the image over the blur of the
    mask), so the filled-in part of a chip cut by the frame does not leak an edge into it.
    """
    import cv2
    import numpy as np

    low, high, shrink = band
    inside = mask.astype(np.float32)
    grey = chip.astype(np.float32) * inside

    def blur(sigma: float) -> Reals:
        weight = cv2.GaussianBlur(inside, (0, 0), sigma)
        return cv2.GaussianBlur(grey, (0, 0), sigma) / np.maximum(weight, 1e-3)

    kept = cv2.erode(mask.astype(np.uint8), np.ones((shrink, shrink), np.uint8)).astype(bool)
    return blur(low) - blur(high), kept


@dataclass(frozen=True)
class CopyView:
    """An observation's band-passed tight face and wide view (and their masks), flattened."""

    tight: Reals
    tight_mask: Mask
    wide: Reals
    wide_mask: Mask

    @staticmethod
    def of(seen: Observation, *, mirror: bool = False, scale: float = 1.0) -> CopyView:
        import numpy as np

        _, chip, mask = seen.face_arrays()
        tight, tight_mask = band_pass(*_rescaled(*_mirrored(chip, mask, mirror), scale), TIGHT_BAND)
        if seen.wide is not None and seen.wide_mask is not None:
            wide, wide_mask = band_pass(*_rescaled(*_mirrored(seen.wide, seen.wide_mask, mirror), scale), WIDE_BAND)
        else:
            wide, wide_mask = np.zeros((1, 1), np.float32), np.zeros((1, 1), bool)
        return CopyView(tight.ravel(), tight_mask.ravel(), wide.ravel(), wide_mask.ravel())


def _mirrored(grey: GreyImage, mask: Mask, mirror: bool) -> tuple[GreyImage, Mask]:
    return (grey[:, ::-1], mask[:, ::-1]) if mirror else (grey, mask)


def _rescaled(grey: GreyImage, mask: Mask, scale: float) -> tuple[GreyImage, Mask]:
    """The view enlarged (scale > 1) or shrunk about its centre; what comes from outside it is outside the mask."""
    if scale == 1.0:
        return grey, mask
    import cv2
    import numpy as np

    side = grey.shape[1]
    centre = (side - 1) / 2
    warp = np.array([[scale, 0.0, centre * (1 - scale)], [0.0, scale, centre * (1 - scale)]], np.float32)
    size = (side, grey.shape[0])
    moved = cv2.warpAffine(np.ascontiguousarray(grey, np.float32), warp, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ascontiguousarray(mask, np.uint8), warp, size, flags=cv2.INTER_NEAREST)
    return np.asarray(moved, np.float32), np.asarray(inside, bool)


@dataclass(frozen=True)
class ReferenceSet:
    """The references stacked for scoring: descriptors, copy views, this person's threshold."""

    refs: tuple[Reference, ...]
    embeddings: Floats  # (references, 128)
    tight: RowStack | None
    wide: RowStack | None
    spread: float | None
    match_distance: float

    @staticmethod
    def of(refs: Sequence[Reference], judgement: Judgement = DEFAULT_JUDGEMENT) -> ReferenceSet:
        import numpy as np

        views = [CopyView.of(r.observation) for r in refs]
        spread = person_spread(refs)
        return ReferenceSet(
            refs=tuple(refs),
            embeddings=np.stack([r.observation.face_arrays()[0] for r in refs]) if refs else np.zeros((0, 128)),
            tight=RowStack.of(np.stack([v.tight for v in views]), np.stack([v.tight_mask for v in views]))
            if refs
            else None,
            wide=RowStack.of(np.stack([v.wide for v in views]), np.stack([v.wide_mask for v in views]))
            if refs
            else None,
            spread=spread,
            match_distance=match_distance_for(spread, judgement),
        )

    def copy_correlation(self, seen: Observation) -> Floats:
        """Per reference: the mean of the tight and wide band-pass correlations (the one that exists when a
        view lacks the overlap), the better of the sample and its mirror image.

        Where that mean is already high (SHIFT_SEARCH_FROM, the few most alike references), the sample's views
        are also tried moved by a pixel or two (four in the wide view): a face cut by the frame, stretched or
        painted gets its landmarks, and so its aligned views, a little off, and a copy then correlates less
        than it is alike. A copy copies one photo, mirrored or not: the reference and side that match best
        moved are also tried rescaled (COPY_SCALES), and moved again at each scale.
        """
        import numpy as np

        best = np.full(len(self.refs), -1.0)
        if self.tight is None or self.wide is None:
            return best
        has_wide = False
        closest: tuple[float, int, bool] | None = None  # the best moved mean, its reference, mirrored
        for mirror in (False, True):
            view = CopyView.of(seen, mirror=mirror)
            tight = correlate_rows(self.tight, view.tight, view.tight_mask)
            has_wide = self.wide.masks.shape[1] == view.wide.size
            wide = correlate_rows(self.wide, view.wide, view.wide_mask) if has_wide else np.full(len(self.refs), -1.0)
            both = _mean_of_views(tight, wide)
            for i in [int(i) for i in np.argsort(-both)[:SHIFT_SEARCH_REFS] if both[i] >= SHIFT_SEARCH_FROM]:
                both[i] = max(both[i], self._moved_correlation(i, view, has_wide))
                if closest is None or both[i] > closest[0]:
                    closest = (float(both[i]), i, mirror)
            best = np.maximum(best, both)
        if closest is not None:
            _, i, mirror = closest
            for scale in COPY_SCALES:
                rescaled = CopyView.of(seen, mirror=mirror, scale=scale)
                best[i] = max(best[i], self._moved_correlation(i, rescaled, has_wide))
        return best

    def _moved_correlation(self, i: int, view: CopyView, has_wide: bool) -> float:
        """Reference i's mean correlation with the view moved by each of the shifts, at the best shift per view."""
        import numpy as np

        assert self.tight is not None and self.wide is not None
        tight = _best_shift(self.tight, i, view.tight, view.tight_mask, TIGHT_SHIFTS)
        wide = _best_shift(self.wide, i, view.wide, view.wide_mask, WIDE_SHIFTS) if has_wide else -1.0
        return float(_mean_of_views(np.array([tight]), np.array([wide]))[0])


def _mean_of_views(tight: Floats, wide: Floats) -> Floats:
    import numpy as np

    return np.where(wide > -1.0, np.where(tight > -1.0, (tight + wide) / 2, wide), tight)


def _best_shift(rows: RowStack, i: int, chip: Reals, mask: Mask, shifts: Sequence[int]) -> float:
    """The highest correlation of row i with the flattened square chip moved by each (dx, dy) in shifts x shifts.

    Each of the correlation's six sums, at every shift at once, is one cross-correlation of the chip (and its
    mask) with row i padded by the largest shift: the same figures as correlate_rows on each moved chip.
    """
    import cv2
    import numpy as np

    side = int(round(math.sqrt(chip.size)))
    reach = max(abs(s) for s in shifts)

    def square(row: Chips) -> Chips:
        return np.pad(np.asarray(row, np.float32).reshape(side, side), reach)

    def cross(padded: Chips, template: Chips) -> Floats:
        return np.asarray(cv2.matchTemplate(padded, template, cv2.TM_CCORR), dtype=np.float64)

    m = mask.reshape(side, side).astype(np.float32)
    x = chip.reshape(side, side).astype(np.float32) * m
    xx = x * chip.reshape(side, side).astype(np.float32)
    ref_m, ref_y, ref_yy = square(rows.masks[i]), square(rows.masked[i]), square(rows.masked_squares[i])
    count, sx, sxx = cross(ref_m, m), cross(ref_m, x), cross(ref_m, xx)
    sy, syy, sxy = cross(ref_y, m), cross(ref_yy, m), cross(ref_y, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (sxx - sx * sx / count) * (syy - sy * sy / count)
        r = (sxy - sx * sy / count) / np.sqrt(var)
    r = np.where((count >= MIN_OVERLAP * chip.size) & (var > 1e-6), r, -1.0)
    at = [reach + s for s in shifts]
    return float(np.max(r[np.ix_(at, at)]))


def score_image(
    name: str,
    seen: Observation,
    refs: Sequence[Reference] | ReferenceSet,
    judgement: Judgement = DEFAULT_JUDGEMENT,
) -> ImageScore:
    import numpy as np

    if not seen.has_face:
        return ImageScore(file=name, faces=seen.faces)
    ref_set = refs if isinstance(refs, ReferenceSet) else ReferenceSet.of(refs, judgement)
    embedding, _, _ = seen.face_arrays()
    distances = np.linalg.norm(ref_set.embeddings - embedding, axis=1)
    correlation = ref_set.copy_correlation(seen)
    median = float(np.median(distances))
    over = (distances < judgement.copy_identity_gate) & (correlation >= judgement.copy_correlation)
    best = int(np.argmax(np.where(over, correlation, -np.inf)))
    is_copy = bool(over[best])
    return ImageScore(
        file=name,
        faces=seen.faces,
        distance=_r(median),
        closest=_r(float(distances.min())),
        likeness=_r(likeness_of(median)),
        match=median < ref_set.match_distance,
        copy_of=ref_set.refs[best].name if is_copy else None,
        copy_correlation=_r(float(correlation.max())),
    )


def variety_of(thumbs: Sequence[Thumb]) -> float | None:
    """1 - the mean correlation of the samples' grey 32 px thumbnails, pair by pair (clipped to 0..1)."""
    if len(thumbs) < 2:
        return None
    values = [min(1.0, max(0.0, 1.0 - float((a * b).sum()))) for i, a in enumerate(thumbs) for b in thumbs[i + 1 :]]
    return _r(statistics.fmean(values))


def score_checkpoint(
    group: SampleGroup,
    observations: Sequence[Seen],
    refs: Sequence[Reference] | ReferenceSet,
    validation_loss: float | None = None,
    judgement: Judgement = DEFAULT_JUDGEMENT,
) -> CheckpointScore:
    ref_set = refs if isinstance(refs, ReferenceSet) else ReferenceSet.of(refs, judgement)
    scores = tuple(score_image(path.name, seen, ref_set, judgement) for path, seen, _ in observations)
    with_face = [s for s in scores if s.distance is not None]
    copies = sum(s.copy_of is not None for s in scores)
    return CheckpointScore(
        step=group.step,
        samples=len(scores),
        faces=len(with_face),
        likeness=_r(statistics.fmean(s.likeness for s in with_face if s.likeness is not None)) if with_face else None,
        matches=sum(s.match for s in scores),
        copies=copies,
        distance=_r(statistics.fmean(s.distance for s in with_face if s.distance is not None)) if with_face else None,
        variety=variety_of([thumb for _, _, thumb in observations if thumb is not None]),  # samples have one
        checkpoint=group.checkpoint.name if group.checkpoint is not None else None,
        validation_loss=_r(validation_loss, 6),
        images=scores,
        copying=copies > 0 and copies >= judgement.copy_share * max(len(with_face), 1),
    )


# -- the recommendation -----------------------------------------------------------------------------


def _steps(scores: Sequence[CheckpointScore]) -> str:
    steps = [str(s.step) for s in scores]
    return ", ".join(steps[:6]) + (f" and {len(steps) - 6} more" if len(steps) > 6 else "")


def _likeness_error(c: CheckpointScore) -> float:
    """The standard error of a checkpoint's mean likeness (0 when its samples do not say)."""
    values = [i.likeness for i in c.images if i.likeness is not None]
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else 0.0


def _within_noise(a: CheckpointScore, b: CheckpointScore, judgement: Judgement) -> bool:
    # Capped: a checkpoint whose samples mix the person and somebody else spreads widely, and that is a
    # difference, not noise.
    error = min(LIKENESS_NOISE_CAP, math.hypot(_likeness_error(a), _likeness_error(b)))
    noise = max(judgement.likeness_noise_floor, error)
    return abs((a.likeness or 0.0) - (b.likeness or 0.0)) <= noise + 1e-9


def copying_onset(checkpoints: Sequence[CheckpointScore], share: float = COPY_SHARE) -> int | None:
    """The step copying sets in: the first copying checkpoint from which at least half of those with faces copy,
    moved back over the checkpoints right before it that already show a copy (copying grows sample by sample:
    a copy there is the start of it, not an odd sample)."""
    with_faces = [c for c in checkpoints if c.faces > 0]
    for i, c in enumerate(with_faces):
        if c.is_copying(share):
            rest = with_faces[i:]
            if sum(r.is_copying(share) for r in rest) * 2 >= len(rest):
                while i > 0 and with_faces[i - 1].copies > 0:
                    i -= 1
                return with_faces[i].step
    return None


def judge(
    checkpoints: Sequence[CheckpointScore],
    *,
    need_file: bool,
    judgement: Judgement = DEFAULT_JUDGEMENT,
    match_distance: float = SAME_PERSON_DISTANCE,
) -> Recommendation:
    """The earliest checkpoint at (or within the noise of) the best likeness among those whose samples are the
    person, before copying sets in.

    The best is the one with the largest share of samples that are the person, then the highest likeness;
    a checkpoint one sample short of that share (with 3 or more samples), whose likeness is within the noise
    of the best (the standard error of the two means, between LIKENESS_NOISE_FLOOR and LIKENESS_NOISE_CAP),
    is as good, and the earliest of them wins (less trained, less rigid). need_file: only steps a LoRA file
    was saved at can be recommended (a run's step-0 samples show the base model).
    """
    total, faces = sum(c.samples for c in checkpoints), sum(c.faces for c in checkpoints)
    if faces == 0:
        return Recommendation(
            None,
            f"no face in any of the {total} samples: the model draws no faces yet "
            "(a random-weight smoke model draws none)",
        )
    candidates = [c for c in checkpoints if not need_file or c.checkpoint is not None]
    matching = [c for c in candidates if c.matches > 0]
    if not matching:
        best = max((c for c in checkpoints if c.likeness is not None), key=lambda c: (c.likeness or 0.0, -c.step))
        return Recommendation(
            None,
            f"faces in {faces} of {total} samples, but none is the person (identity distance under "
            f"{match_distance:.2f} to the photos); the most alike is step {best.step} at likeness "
            f"{best.likeness:.2f}: train longer, or check that the photos show one person",
        )
    share = judgement.copy_share
    clean, onset, late = _before_copying(checkpoints, matching, share)
    if not clean:
        return Recommendation(
            None,
            f"every checkpoint whose samples are the person copies a training photo (steps "
            f"{_steps(matching)}): the model reproduces the photos; train fewer steps or at a lower "
            "learning rate, or use more varied photos",
        )
    pick, near = _earliest_as_good(clean, judgement)
    reason = _pick_reason(pick, match_distance, share)
    if late:
        reason += f"; copying sets in at step {onset}, but no earlier checkpoint is the person"
    if copying := [c for c in matching if c.is_copying(share)]:
        reason += f"; passed over because they copy a training photo: step {_steps(copying)}"
    close = tuple(c.step for c in near) if len(near) > 1 else ()
    return Recommendation(pick, reason, _confidence(pick, near) if close else "clear", close)


def _before_copying(
    checkpoints: Sequence[CheckpointScore], matching: Sequence[CheckpointScore], share: float
) -> tuple[list[CheckpointScore], int | None, bool]:
    """The matching checkpoints that do not copy and come before copying sets in; the step it sets in; and
    whether, none coming before it, those that do not copy after it were taken instead (late)."""
    onset = copying_onset(checkpoints, share)
    clean = [c for c in matching if not c.is_copying(share) and (onset is None or c.step < onset)]
    if clean:
        return clean, onset, False
    clean = [c for c in matching if not c.is_copying(share)]
    return clean, onset, bool(clean)


def _share_of(c: CheckpointScore) -> float:
    return c.matches / max(c.samples, 1)


def _earliest_as_good(
    clean: Sequence[CheckpointScore], judgement: Judgement
) -> tuple[CheckpointScore, list[CheckpointScore]]:
    """The pick among checkpoints that neither copy nor come after copying set in, and those within its noise."""
    best = max(clean, key=lambda c: (_share_of(c), c.likeness or 0.0, -c.step))
    one_sample = 1 / best.samples if best.samples >= MIN_SAMPLES_FOR_SLACK else 0.0
    near = sorted(
        (
            c
            for c in clean
            if _share_of(c) >= _share_of(best) - one_sample - 1e-9
            and ((c.likeness or 0.0) >= (best.likeness or 0.0) or _within_noise(c, best, judgement))
        ),
        key=lambda c: c.step,
    )
    return (near[0] if near else best), near


def _confidence(pick: CheckpointScore, near: Sequence[CheckpointScore]) -> str:
    others = [c for c in near if c is not pick]
    steps = [str(c.step) for c in near]
    return (
        f"close call: steps {', '.join(steps[:-1])} and {steps[-1]} within the noise (likeness "
        f"{pick.likeness:.2f} at step {pick.step}, {', '.join(f'{c.likeness:.2f}' for c in others)} after)"
    )


def _pick_reason(pick: CheckpointScore, match_distance: float, share: float) -> str:
    threshold = (
        "at dlib's threshold"
        if match_distance >= SAME_PERSON_DISTANCE
        else f"at this person's threshold {match_distance:.2f}"
    )
    reason = f"step {pick.step}: {pick.matches} of {pick.samples} samples are the person {threshold} (likeness {pick.likeness:.2f})"
    if pick.copies == 0:
        return reason + " and none copies a training photo"
    return reason + (
        f"; {pick.copies} of {pick.faces} copies a training photo, under the share of "
        f"{share:.0%} that marks a copying checkpoint"
    )


def recommend(
    checkpoints: Sequence[CheckpointScore], *, need_file: bool, judgement: Judgement = DEFAULT_JUDGEMENT
) -> tuple[CheckpointScore | None, str]:
    """judge()'s pick and reason."""
    found = judge(checkpoints, need_file=need_file, judgement=judgement)
    return found.checkpoint, found.reason


# -- running the model over the files ---------------------------------------------------------------


def _thumb(rgb: RgbImage) -> Thumb:
    import numpy as np
    from PIL import Image

    from kohya_wrap.faceid import normalise_chip

    grey = Image.fromarray(rgb).convert("L").resize((VARIETY_THUMB, VARIETY_THUMB), Image.Resampling.BILINEAR)
    return normalise_chip(np.asarray(grey, dtype=np.float32))


class UnreadableFile(ScoreError):
    """A photo or sample that cannot be read; `why` says it without the file's name (left_out names it)."""

    def __init__(self, what: str, path: Path, why: str, hint: str) -> None:
        super().__init__(f"{what} {path} {why}", hint)
        self.why = why


def _read(path: Path, what: str) -> RgbImage:
    from kohya_wrap.faceid import load_rgb

    try:
        return load_rgb(path)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for broken files
        raise UnreadableFile(
            what, path, f"cannot be read as an image: {e}", "remove or replace the file, then score again"
        ) from None


def _look(model: IdentityModel, path: Path, cache: ObservationCache, what: str) -> tuple[Observation, Thumb | None]:
    """What the model sees in one file, and its variety thumbnail; from the cache when it was seen before.

    Raises UnreadableFile when the file cannot be read.
    """
    from kohya_wrap.fsutil import sha256_file

    try:
        key = sha256_file(path)
    except OSError as e:
        raise UnreadableFile(what, path, f"cannot be read: {e}", "check the file's permissions") from None
    entry = cache.get_entry(key)
    seen, thumb = entry if entry is not None else (None, None)
    if seen is None or (what == "sample" and thumb is None):
        rgb = _read(path, what)
        seen = seen if seen is not None else model.observe(rgb)
        thumb = _thumb(rgb)
        cache.put(key, seen, thumb)
    return seen, thumb


def observe_references(
    model: IdentityModel,
    photos: Sequence[Path],
    cache: ObservationCache,
    where: str,
    *,
    need_face: bool = True,
    left_out: list[LeftOut] | None = None,
) -> list[Reference]:
    """The reference photos with a face. An unreadable photo is left out (and said, in left_out); none left is
    an error."""
    if not photos:
        raise ScoreError(
            f"no reference photos in {where}", "give a folder of photos of the person with --reference DIR"
        )
    refs = []
    unreadable = 0
    for path in photos:
        try:
            seen, _ = _look(model, path, cache, "reference photo")
        except UnreadableFile as e:
            unreadable += 1
            if left_out is None:
                raise
            left_out.append(LeftOut(file=str(path), kind="reference", why=e.why))
            continue
        if seen.has_face:
            refs.append(Reference(path.name, seen))
    if unreadable == len(photos):
        raise ScoreError(
            f"none of the {len(photos)} reference photos in {where} can be read as an image",
            "give a folder of photos of the person with --reference DIR",
        )
    if not refs and need_face:
        raise ScoreError(
            f"none of the {len(photos)} reference photos in {where} shows a face the identity model finds",
            "give photos where the face is visible, frontal and at least ~80 px wide",
        )
    return refs


def judge_observed(
    groups: Sequence[SampleGroup],
    seen_by_group: Sequence[Sequence[Seen]],
    refs: Sequence[Reference],
    *,
    need_file: bool,
    validation: dict[int, float] | None = None,
    judgement: Judgement = DEFAULT_JUDGEMENT,
) -> tuple[list[CheckpointScore], Recommendation, ReferenceSet]:
    """Score observed samples against observed references and recommend (no file is read: bench and tests)."""
    ref_set = ReferenceSet.of(refs, judgement)
    checkpoints = [
        score_checkpoint(group, seen, ref_set, (validation or {}).get(group.step), judgement)
        for group, seen in zip(groups, seen_by_group, strict=True)
    ]
    found = judge(checkpoints, need_file=need_file, judgement=judgement, match_distance=ref_set.match_distance)
    return checkpoints, found, ref_set


@dataclass(frozen=True)
class ScoreOptions:
    """How score_groups looks: where observations are cached (None: kohya-wrap's cache folder; use_cache=False:
    none), the identity model (None: dlib's, loaded here), progress lines, and the judgement's thresholds."""

    cache_dir: Path | None = None
    use_cache: bool = True
    model: IdentityModel | None = None
    progress: Callable[[str], None] | None = None
    judgement: Judgement = DEFAULT_JUDGEMENT


def score_groups(
    samples: SampleSet,
    photos: Sequence[Path],
    *,
    references_where: str,
    need_file: bool,
    validation: dict[int, float] | None = None,
    options: ScoreOptions = ScoreOptions(),
) -> ScoreReport:
    from kohya_wrap.faceid import IdentityModel
    from kohya_wrap.score.cache import ObservationCache, default_cache_dir

    started = time.monotonic()
    if not samples.groups or not any(g.images for g in samples.groups):
        raise ScoreError(f"no samples to score in {samples.where}", "draw samples first (`kohya-wrap sample`)")
    model = options.model or IdentityModel()
    folder = None if not options.use_cache else options.cache_dir or default_cache_dir()
    cache = ObservationCache(folder, model.model_id)
    skipped = list(samples.left_out)
    # Samples first: where none shows a face (an untrained model), that is the finding, and the
    # references need no face (the smoke preset's 64 px drawings have none).
    kept_groups, seen_by_group = _observe_samples(model, samples.groups, cache, skipped, options.progress)
    if not kept_groups:
        raise ScoreError(
            f"none of the samples in {samples.where} can be read as an image",
            "remove or replace the broken files, then score again",
        )
    any_face = any(o.has_face for seen in seen_by_group for _, o, _ in seen)
    if options.progress:
        options.progress(f"looking at {len(photos)} reference photos")
    refs = observe_references(model, photos, cache, references_where, need_face=any_face, left_out=skipped)
    checkpoints, found, ref_set = judge_observed(
        kept_groups, seen_by_group, refs, need_file=need_file, validation=validation, judgement=options.judgement
    )
    return ScoreReport(
        checkpoints=settle(checkpoints),
        recommended=Recommended.of(found.checkpoint),
        reason=found.reason + ("" if refs else f" (nor in any of the {len(photos)} reference photos)"),
        confidence=found.confidence,
        close=found.close,
        left_out=tuple(skipped),
        references=References(where=references_where, photos=len(photos), faces=len(refs)),
        samples=samples.where,
        model=_score_model(model.model_id, ref_set, options.judgement),
        seconds=round(time.monotonic() - started, 2),
        cache={"hits": cache.hits, "misses": cache.misses},
    )


def _score_model(model_id: str, ref_set: ReferenceSet, judgement: Judgement) -> ScoreModel:
    return ScoreModel(
        id=model_id,
        match_distance=round(ref_set.match_distance, 4),
        spread=_r(ref_set.spread),
        copy_correlation=judgement.copy_correlation,
        copy_share=judgement.copy_share,
    )


def _observe_samples(
    model: IdentityModel,
    groups: Sequence[SampleGroup],
    cache: ObservationCache,
    skipped: list[LeftOut],
    progress: Callable[[str], None] | None,
) -> tuple[list[SampleGroup], list[list[Seen]]]:
    """Each group's readable samples as the model sees them; an unreadable one goes to skipped."""
    kept_groups, seen_by_group = [], []
    for group in groups:
        if progress:
            progress(f"step {group.step}: {len(group.images)} samples")
        seen = []
        for path in group.images:
            try:
                observation, thumb = _look(model, path, cache, "sample")
            except UnreadableFile as e:
                skipped.append(LeftOut(file=str(path), kind="sample", why=e.why))
                continue
            seen.append((path, observation, thumb))
        if seen:
            kept_groups.append(replace(group, images=tuple(p for p, _, _ in seen)))
            seen_by_group.append(seen)
    return kept_groups, seen_by_group
