"""`kohya-wrap score`: which checkpoint looks like the person, and which copies the photos.

score_run(RUN_DIR) scores a run's training samples against its training photos and writes
RUN_DIR/score.json; score_images(REFERENCE_DIR, SAMPLES_DIR) scores any images. The identity model
(dlib) is an optional extra: scorer_available() says whether it is installed. Reading a score.json
(load_score, recommended_step, recommended_line) needs nothing extra. See docs/score.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kohya_wrap.faceid import INSTALL_HINT, scorer_available
from kohya_wrap.score.collect import ScoreError
from kohya_wrap.score.scoring import CheckpointScore, ScoreReport

__all__ = [
    "CheckpointScore",
    "INSTALL_HINT",
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

    cache_dir: where reference observations are cached (None: kohya-wrap's cache folder); use_cache=False: none.
    """
    from kohya_wrap import rundir
    from kohya_wrap.fsutil import atomic_write_json
    from kohya_wrap.score.collect import folder_references, group_run_samples, run_references
    from kohya_wrap.score.scoring import score_groups
    from kohya_wrap.sdscripts import validation_losses

    run = Path(run_dir).expanduser().resolve()
    groups, samples_where = group_run_samples(run)
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
    from kohya_wrap.score.collect import folder_references, group_samples_dir
    from kohya_wrap.score.scoring import score_groups

    groups = group_samples_dir(Path(samples_dir))
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
    )


def load_score(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN_DIR/score.json as written by score_run, or None when absent or unreadable."""
    from kohya_wrap import rundir

    path = rundir.paths(run_dir).score_json
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("checkpoints"), list) else None


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
    return (
        f"recommended: step {step}{name}, likeness {rec.get('likeness')}, "
        f"{rec.get('matches')}/{rec.get('samples')} samples the person, no copies"
    )
