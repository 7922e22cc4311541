"""Score each checkpoint's samples against photos of the person; recommend one (docs/score.md).

Per sample with a face (its largest one), against every reference photo with a face:
- distance: the median Euclidean distance of its 128-d descriptor to the references' descriptors;
- likeness: clip(1 - distance / 1.2, 0, 1), so dlib's same-person threshold 0.6 maps to 0.5;
- match: distance < 0.6;
- copy: some reference's aligned 64 px grey face correlates with the sample's (or its mirror
  image's: flip_aug trains on mirrored photos) at >= COPY_CORRELATION, and is the same person
  (distance < 0.6) - a reproduced photo, not just a good likeness.
A checkpoint's likeness and distance are means over its samples with a face.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kohya_wrap.faceid import SAME_PERSON_DISTANCE, Observation
from kohya_wrap.score.collect import SampleGroup, ScoreError

LIKENESS_SCALE = 2 * SAME_PERSON_DISTANCE  # distance at which likeness reaches 0
COPY_CORRELATION = 0.65  # measured: other photos <= 0.40; copies, crops, mirror images 0.70-1.0 (docs/score.md)
MIN_OVERLAP = 0.4  # share of the chip both faces must fill for their correlation to count
VARIETY_THUMB = 32
SCORE_SCHEMA = 1


@dataclass(frozen=True)
class ImageScore:
    file: str
    faces: int
    distance: float | None = None  # median distance to the references
    closest: float | None = None  # distance to the nearest reference
    likeness: float | None = None
    match: bool = False
    copy_of: str | None = None  # the reference photo it reproduces
    copy_correlation: float | None = None  # the highest face correlation with any reference

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "faces": self.faces,
            "distance": self.distance,
            "closest": self.closest,
            "likeness": self.likeness,
            "match": self.match,
            "copy_of": self.copy_of,
            "copy_correlation": self.copy_correlation,
        }


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    samples: int
    faces: int
    likeness: float | None
    matches: int
    copies: int
    distance: float | None = None
    variety: float | None = None  # 0: every sample the same picture .. 1: unrelated pictures
    checkpoint: str | None = None  # the LoRA file saved at this step (scoring a run)
    validation_loss: float | None = None  # sd-scripts' loss/validation/step_average at this step
    images: tuple[ImageScore, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "samples": self.samples,
            "faces": self.faces,
            "likeness": self.likeness,
            "matches": self.matches,
            "copies": self.copies,
            "distance": self.distance,
            "variety": self.variety,
            "checkpoint": self.checkpoint,
            "validation_loss": self.validation_loss,
            "images": [i.to_json() for i in self.images],
        }


@dataclass(frozen=True)
class ScoreReport:
    checkpoints: tuple[CheckpointScore, ...]
    recommended: CheckpointScore | None
    reason: str
    references: dict[str, Any] = field(default_factory=dict)
    samples_source: str = ""
    model: str = ""
    seconds: float = 0.0
    cache: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        rec = None
        if self.recommended is not None:
            r = self.recommended
            rec = {
                "step": r.step,
                "checkpoint": r.checkpoint,
                "likeness": r.likeness,
                "matches": r.matches,
                "samples": r.samples,
                "faces": r.faces,
                "copies": r.copies,
            }
        return {
            "schema": SCORE_SCHEMA,
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "recommended": rec,
            "reason": self.reason,
            "references": dict(self.references),
            "samples": self.samples_source,
            "model": {
                "id": self.model,
                "same_person_distance": SAME_PERSON_DISTANCE,
                "likeness": f"clip(1 - median distance / {LIKENESS_SCALE:g}, 0, 1)",
                "copy_correlation": COPY_CORRELATION,
            },
            "seconds": round(self.seconds, 2),
            "cache": dict(self.cache),
        }


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def likeness_of(distance: float) -> float:
    return min(1.0, max(0.0, 1.0 - distance / LIKENESS_SCALE))


@dataclass(frozen=True)
class Reference:
    name: str
    observation: Observation


def masked_correlation(chips: Any, masks: Any, chip: Any, mask: Any) -> Any:
    """Pearson correlation of one chip with each row of chips, over the pixels both have (-1 if too few)."""
    import numpy as np

    joint = (masks & mask).astype(np.float64)
    count = joint.sum(axis=1)
    x, y = chip.astype(np.float64), chips.astype(np.float64)
    sx, sy = joint @ x, (joint * y).sum(axis=1)
    sxx, syy, sxy = joint @ (x * x), (joint * y * y).sum(axis=1), (joint * y) @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sy / count
        var = (sxx - sx * sx / count) * (syy - sy * sy / count)
        r = cov / np.sqrt(var)
    return np.where((count >= MIN_OVERLAP * chip.size) & (var > 1e-6), r, -1.0)


def score_image(name: str, seen: Observation, refs: Sequence[Reference]) -> ImageScore:
    import numpy as np

    if not seen.has_face:
        return ImageScore(file=name, faces=seen.faces)
    embeddings = np.stack([r.observation.embedding for r in refs])
    distances = np.linalg.norm(embeddings - seen.embedding, axis=1)
    chips = np.stack([r.observation.chip.ravel() for r in refs])
    masks = np.stack([r.observation.mask.ravel() for r in refs])
    correlation = np.maximum(
        masked_correlation(chips, masks, seen.chip.ravel(), seen.mask.ravel()),
        masked_correlation(chips, masks, seen.chip[:, ::-1].ravel(), seen.mask[:, ::-1].ravel()),
    )
    median = float(np.median(distances))
    best = int(np.argmax(np.where(distances < SAME_PERSON_DISTANCE, correlation, -np.inf)))
    is_copy = bool(distances[best] < SAME_PERSON_DISTANCE and correlation[best] >= COPY_CORRELATION)
    return ImageScore(
        file=name,
        faces=seen.faces,
        distance=_r(median),
        closest=_r(float(distances.min())),
        likeness=_r(likeness_of(median)),
        match=median < SAME_PERSON_DISTANCE,
        copy_of=refs[best].name if is_copy else None,
        copy_correlation=_r(float(correlation.max())),
    )


def variety_of(thumbs: Sequence[Any]) -> float | None:
    """1 - the mean correlation of the samples' grey 32 px thumbnails, pair by pair (clipped to 0..1)."""
    if len(thumbs) < 2:
        return None
    values = [min(1.0, max(0.0, 1.0 - float((a * b).sum()))) for i, a in enumerate(thumbs) for b in thumbs[i + 1 :]]
    return _r(statistics.fmean(values))


def score_checkpoint(
    group: SampleGroup,
    observations: Sequence[tuple[Path, Observation, Any]],
    refs: Sequence[Reference],
    validation_loss: float | None = None,
) -> CheckpointScore:
    scores = tuple(score_image(path.name, seen, refs) for path, seen, _ in observations)
    with_face = [s for s in scores if s.distance is not None]
    return CheckpointScore(
        step=group.step,
        samples=len(scores),
        faces=len(with_face),
        likeness=_r(statistics.fmean(s.likeness for s in with_face if s.likeness is not None)) if with_face else None,
        matches=sum(s.match for s in scores),
        copies=sum(s.copy_of is not None for s in scores),
        distance=_r(statistics.fmean(s.distance for s in with_face if s.distance is not None)) if with_face else None,
        variety=variety_of([thumb for _, _, thumb in observations]),
        checkpoint=group.checkpoint.name if group.checkpoint is not None else None,
        validation_loss=_r(validation_loss, 6),
        images=scores,
    )


def _steps(scores: Sequence[CheckpointScore]) -> str:
    steps = [str(s.step) for s in scores]
    return ", ".join(steps[:6]) + (f" and {len(steps) - 6} more" if len(steps) > 6 else "")


def recommend(checkpoints: Sequence[CheckpointScore], *, need_file: bool) -> tuple[CheckpointScore | None, str]:
    """The checkpoint whose samples are most often the person, then most alike, that copies no photo.

    Ties go to the earlier step (less trained, less rigid). need_file: only steps a LoRA file was
    saved at can be recommended (a run's step-0 samples show the base model).
    """
    total = sum(c.samples for c in checkpoints)
    faces = sum(c.faces for c in checkpoints)
    if faces == 0:
        return None, (
            f"no face in any of the {total} samples: the model draws no faces yet "
            "(a random-weight smoke model draws none)"
        )
    candidates = [c for c in checkpoints if not need_file or c.checkpoint is not None]
    matching = [c for c in candidates if c.matches > 0]
    if not matching:
        best = max((c for c in checkpoints if c.likeness is not None), key=lambda c: (c.likeness or 0.0, -c.step))
        return None, (
            f"faces in {faces} of {total} samples, but none is the person (identity distance under "
            f"{SAME_PERSON_DISTANCE} to the photos); the most alike is step {best.step} at likeness "
            f"{best.likeness:.2f}: train longer, or check that the photos show one person"
        )
    clean = [c for c in matching if c.copies == 0]
    if not clean:
        return None, (
            f"every checkpoint whose samples are the person copies a training photo (steps "
            f"{_steps(matching)}): the model reproduces the photos; train fewer steps or at a lower "
            "learning rate, or use more varied photos"
        )
    best = max(clean, key=lambda c: (c.matches / c.samples, c.likeness or 0.0, -c.step))
    reason = (
        f"step {best.step}: {best.matches} of {best.samples} samples are the person at dlib's threshold "
        f"(likeness {best.likeness:.2f}) and none copies a training photo"
    )
    copying = [c for c in matching if c.copies > 0]
    if copying:
        reason += f"; passed over because they copy a training photo: step {_steps(copying)}"
    return best, reason


# -- running the model over the files ---------------------------------------------------------------


def _thumb(rgb: Any) -> Any:
    import numpy as np
    from PIL import Image

    from kohya_wrap.faceid import normalise_chip

    grey = Image.fromarray(rgb).convert("L").resize((VARIETY_THUMB, VARIETY_THUMB), Image.Resampling.BILINEAR)
    return normalise_chip(np.asarray(grey, dtype=np.float32))


def _read(path: Path, what: str) -> Any:
    from kohya_wrap.faceid import load_rgb

    try:
        return load_rgb(path)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for broken files
        raise ScoreError(
            f"{what} {path} cannot be read as an image: {e}", "remove or replace the file, then score again"
        ) from None


def observe_references(
    model: Any, photos: Sequence[Path], cache: Any, where: str, *, need_face: bool = True
) -> list[Reference]:
    from kohya_wrap.fsutil import sha256_file

    if not photos:
        raise ScoreError(
            f"no reference photos in {where}", "give a folder of photos of the person with --reference DIR"
        )
    refs = []
    for path in photos:
        try:
            key = sha256_file(path)
        except OSError as e:
            raise ScoreError(f"reference photo {path} cannot be read: {e}", "check the file's permissions") from None
        seen = cache.get(key)
        if seen is None:
            seen = model.observe(_read(path, "reference photo"))
            cache.put(key, seen)
        if seen.has_face:
            refs.append(Reference(path.name, seen))
    if not refs and need_face:
        raise ScoreError(
            f"none of the {len(photos)} reference photos in {where} shows a face the identity model finds",
            "give photos where the face is visible, frontal and at least ~80 px wide",
        )
    return refs


def score_groups(
    groups: Sequence[SampleGroup],
    photos: Sequence[Path],
    *,
    references_where: str,
    samples_where: str,
    need_file: bool,
    cache_dir: Path | None,
    use_cache: bool = True,
    validation: dict[int, float] | None = None,
    model: Any = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreReport:
    from kohya_wrap.faceid import IdentityModel
    from kohya_wrap.score.cache import ObservationCache, default_cache_dir

    started = time.monotonic()
    if not groups or not any(g.images for g in groups):
        raise ScoreError(f"no samples to score in {samples_where}", "draw samples first (`kohya-wrap sample`)")
    model = model or IdentityModel()
    folder = None if not use_cache else cache_dir if cache_dir is not None else default_cache_dir()
    cache = ObservationCache(folder, model.model_id)
    # Samples first: where none shows a face (an untrained model), that is the finding, and the
    # references need no face (the smoke preset's 64 px drawings have none).
    seen_by_group = []
    for group in groups:
        if progress:
            progress(f"step {group.step}: {len(group.images)} samples")
        seen = []
        for path in group.images:
            rgb = _read(path, "sample")
            seen.append((path, model.observe(rgb), _thumb(rgb)))
        seen_by_group.append(seen)
    any_face = any(o.has_face for seen in seen_by_group for _, o, _ in seen)
    if progress:
        progress(f"looking at {len(photos)} reference photos")
    refs = observe_references(model, photos, cache, references_where, need_face=any_face)
    checkpoints = [
        score_checkpoint(group, seen, refs, (validation or {}).get(group.step))
        for group, seen in zip(groups, seen_by_group, strict=True)
    ]
    recommended, reason = recommend(checkpoints, need_file=need_file)
    if not refs:
        reason += f" (nor in any of the {len(photos)} reference photos)"
    return ScoreReport(
        checkpoints=tuple(checkpoints),
        recommended=recommended,
        reason=reason,
        references={"where": references_where, "photos": len(photos), "faces": len(refs)},
        samples_source=samples_where,
        model=model.model_id,
        seconds=time.monotonic() - started,
        cache={"hits": cache.hits, "misses": cache.misses},
    )
