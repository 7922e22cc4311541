"""`kohya-wrap score`: which checkpoint looks like the person, and which copies the photos.

score_run(RUN_DIR) scores a run's training samples against its training photos and writes
RUN_DIR/score.json; score_images(REFERENCE_DIR, SAMPLES_DIR) scores any images. The identity model
(dlib) is an optional extra: scorer_available() says whether it is installed. Reading a score.json
(load_score, recommended_step, recommended_line) needs nothing extra. See docs/score.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohya_wrap.faceid import INSTALL_HINT, scorer_available
from kohya_wrap.fsutil import load_json
from kohya_wrap.score.collect import LeftOut, ScoreError
from kohya_wrap.score.scoring import CheckpointScore, Judgement, Recommendation, ScoreReport

__all__ = [
    "CheckpointScore",
    "INSTALL_HINT",
    "Judgement",
    "LeftOut",
    "Recommendation",
    "ScoreError",
    "ScoreReport",
    "load_score",
    "recommended_line",
    "recommended_step",
    "score_images",
    "score_run",
    "scorer_available",
]


def _require_scorer() -> None:
    problem = scorer_available()
    if problem is not None:
        raise ScoreError(f"score cannot run: {problem}", f"install it with: {INSTALL_HINT}")


def score_run(
    run_dir: str | Path,
    *,
    reference_dir: Path | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    write: bool = True,
    model: Any = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreReport:
    """Score every checkpoint's samples of a run; write RUN_DIR/score.json (atomically) unless write=False.

    cache_dir: where observations of reference photos and samples are cached (None: kohya-wrap's cache
    folder), so that scoring again as checkpoints land only looks at the new samples; use_cache=False: none.
    Files left out (unreadable, misnamed, another run's) are in the report's left_out, not fatal.
    """
    from kohya_wrap import rundir
    from kohya_wrap.fsutil import atomic_write_json
    from kohya_wrap.score.collect import collect_run_samples, folder_references, run_references
    from kohya_wrap.score.scoring import score_groups
    from kohya_wrap.sdscripts.samples import validation_losses

    run = Path(run_dir).expanduser().resolve()
    samples = collect_run_samples(run)
    groups, samples_where = samples.groups, samples.where
    if reference_dir is not None:
        photos, where = folder_references(reference_dir), str(reference_dir)
    else:
        photos, where = run_references(run)
    _require_scorer()
    report = score_groups(
        groups,
        photos,
        references_where=where,
        samples_where=samples_where,
        need_file=any(g.checkpoint is not None for g in groups),
        cache_dir=cache_dir,
        use_cache=use_cache,
        validation=validation_losses(rundir.paths(run).tensorboard_dir),
        model=model,
        progress=progress,
        left_out=samples.left_out,
    )
    if write:
        atomic_write_json(rundir.paths(run).score_json, report.to_json())
    return report


def score_images(
    reference_dir: str | Path,
    samples_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    model: Any = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreReport:
    """Score any samples (grouped by sd-scripts' file names or by step subfolders) against any photos."""
    from kohya_wrap.score.collect import collect_samples_dir, folder_references
    from kohya_wrap.score.scoring import score_groups

    samples = collect_samples_dir(Path(samples_dir))
    groups = samples.groups
    photos = folder_references(Path(reference_dir))
    _require_scorer()
    return score_groups(
        groups,
        photos,
        references_where=str(reference_dir),
        samples_where=str(samples_dir),
        need_file=False,
        cache_dir=cache_dir,
        use_cache=use_cache,
        model=model,
        progress=progress,
        left_out=samples.left_out,
    )


def load_score(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN_DIR/score.json as written by score_run, or None when absent or unreadable."""
    from kohya_wrap import rundir

    path = rundir.paths(run_dir).score_json
    try:
        doc = load_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if _well_formed(doc) else None


def _well_formed(doc: Any) -> bool:
    """score.json's shape (a hand-edited or damaged file reads as no score, never as a crash later)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("checkpoints"), list):
        return False
    if not all(isinstance(c, dict) for c in doc["checkpoints"]):
        return False
    rec = doc.get("recommended")
    return rec is None or isinstance(rec, dict)


def recommended_step(doc: dict[str, Any] | None) -> int | None:
    rec = (doc or {}).get("recommended")
    return rec.get("step") if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None


def recommended_line(doc: dict[str, Any] | None) -> str:
    """One line for `status` and `train`'s end: the recommended step and why, or why none."""
    if doc is None:
        return "not scored yet (kohya-wrap score RUN_DIR)"
    reason = str(doc.get("reason") or "")
    step = recommended_step(doc)
    if step is None:
        return f"no checkpoint recommended: {reason}"
    rec = doc["recommended"]
    name = f" ({rec['checkpoint']})" if rec.get("checkpoint") else ""
    copies = rec.get("copies") or 0
    copied = "no copies" if not copies else f"{copies} cop{'y' if copies == 1 else 'ies'} (under the share)"
    confidence = doc.get("confidence")
    sure = f"; {confidence}" if isinstance(confidence, str) and confidence.startswith("close call") else ""
    return (
        f"recommended: step {step}{name}, likeness {rec.get('likeness')}, "
        f"{rec.get('matches')}/{rec.get('samples')} samples the person, {copied}{sure}"
    )
