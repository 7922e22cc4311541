"""`kohya-wrap score`: which checkpoint looks like the person, and which copies the photos.

score_run(RUN_DIR) scores a run's training samples against its training photos and writes
RUN_DIR/score.json; score_images(REFERENCE_DIR, SAMPLES_DIR) scores any images. The identity model
(dlib) is an optional extra: scorer_available() says whether it is installed. Reading a score.json
(read_score, load_score, recommended_step, recommended_line: score.records) needs nothing extra.
See docs/score.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.faceid import INSTALL_HINT, scorer_available
from kohya_wrap.score.collect import ScoreError
from kohya_wrap.score.records import (
    CheckpointScore,
    LeftOut,
    ScoreReport,
    load_score,
    read_score,
    recommended_line,
    recommended_step,
    write_score,
)
from kohya_wrap.score.scoring import Judgement, Recommendation

if TYPE_CHECKING:
    from kohya_wrap.faceid import IdentityModel

__all__ = [
    "CheckpointScore",
    "INSTALL_HINT",
    "Judgement",
    "LeftOut",
    "Recommendation",
    "ScoreError",
    "ScoreReport",
    "load_score",
    "read_score",
    "recommended_line",
    "recommended_step",
    "score_images",
    "score_run",
    "scorer_available",
    "write_score",
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
    model: IdentityModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreReport:
    """Score every checkpoint's samples of a run; write RUN_DIR/score.json (atomically) unless write=False.

    cache_dir: where observations of reference photos and samples are cached (None: kohya-wrap's cache
    folder), so that scoring again as checkpoints land only looks at the new samples; use_cache=False: none.
    Files left out (unreadable, misnamed, another run's) are in the report's left_out, not fatal.
    """
    from kohya_wrap import rundir
    from kohya_wrap.score.collect import collect_run_samples, folder_references, run_references
    from kohya_wrap.score.scoring import ScoreOptions, score_groups
    from kohya_wrap.sdscripts.samples import validation_losses

    run = Path(run_dir).expanduser().resolve()
    samples = collect_run_samples(run)
    if reference_dir is not None:
        photos, where = folder_references(reference_dir), str(reference_dir)
    else:
        photos, where = run_references(run)
    _require_scorer()
    report = score_groups(
        samples,
        photos,
        references_where=where,
        need_file=any(g.checkpoint is not None for g in samples.groups),
        validation=validation_losses(rundir.paths(run).tensorboard_dir),
        options=ScoreOptions(cache_dir=cache_dir, use_cache=use_cache, model=model, progress=progress),
    )
    if write:
        write_score(run, report)
    return report


def score_images(
    reference_dir: str | Path,
    samples_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    model: IdentityModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScoreReport:
    """Score any samples (grouped by sd-scripts' file names or by step subfolders) against any photos."""
    from kohya_wrap.score.collect import collect_samples_dir, folder_references
    from kohya_wrap.score.scoring import ScoreOptions, score_groups

    samples = replace(collect_samples_dir(Path(samples_dir)), where=str(samples_dir))
    photos = folder_references(Path(reference_dir))
    _require_scorer()
    return score_groups(
        samples,
        photos,
        references_where=str(reference_dir),
        need_file=False,
        options=ScoreOptions(cache_dir=cache_dir, use_cache=use_cache, model=model, progress=progress),
    )
