"""`score` on a run-sized set: 12 checkpoints x 3 samples at 512 px against 75 training photos,
cold (empty cache) and cached (target: <= 20 s cold on a 2-core CPU; the cached pass is what scoring
again as checkpoints land costs: samples and photos are both cached).

    python bench/score.py [--checkpoints 12] [--samples 3] [--references 75]

The photos are the real ones the tests use (face_recognition's sdist in .cache/test-photos, and
scikit-image's astronaut and coffee), cut into distinct 512 px crops: references are crops of two
photos of one man; each checkpoint's samples are one other crop of him, one of another
person and one without a face. Each pass builds the identity model anew, as one `kohya-wrap score`
call does. Prints both times, the per-image cost and the cache's hits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from score_photos import image, skip_reason  # noqa: E402

from kohya_wrap.score import score_images  # noqa: E402


def crops(name: str, count: int, seed: int):  # type: ignore[no-untyped-def]
    """count distinct 512x512 crops around the photo's face (random scale and offset, some mirrored)."""
    import random

    from PIL import ImageOps

    rng = random.Random(seed)
    img = image(name)
    w, h = img.size
    for _ in range(count):
        side = int(min(w, h) * rng.uniform(0.75, 1.0))
        x = rng.randint(0, w - side)
        y = rng.randint(0, max(0, min(h - side, int(h * 0.15))))
        crop = img.crop((x, y, x + side, y + side)).resize((512, 512))
        yield ImageOps.mirror(crop) if rng.random() < 0.3 else crop


def build(root: Path, checkpoints: int, per: int, references: int) -> tuple[Path, Path]:
    refs, samples = root / "refs", root / "samples"
    refs.mkdir(parents=True)
    people = ("obama2.jpg", "obama3.jpg")  # samples show him in obama.jpg: alike, but no copy
    for n in range(references):
        img = next(crops(people[n % 2], 1, seed=n))
        img.save(refs / f"{n:04d}.png")
    for c in range(checkpoints):
        folder = samples / f"step-{(c + 1) * 250:06d}"
        folder.mkdir(parents=True)
        kinds = [
            next(crops("obama.jpg", 1, seed=1000 + c)),
            next(crops("biden.jpg", 1, seed=2000 + c)),
            next(crops("skimage:coffee.png", 1, seed=3000 + c)),
        ]
        for i in range(per):
            kinds[i % len(kinds)].save(folder / f"{i:02d}.png")
    return refs, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=12)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--references", type=int, default=75)
    args = parser.parse_args()
    if (why := skip_reason()) is not None:
        print(f"bench/score.py: {why}")
        return 1
    root = Path(tempfile.mkdtemp(prefix="kohya-wrap-bench-score-"))
    try:
        refs, samples = build(root, args.checkpoints, args.samples, args.references)
        cache = root / "cache"
        print(f"{args.checkpoints} checkpoints x {args.samples} samples at 512 px, {args.references} reference photos")
        for label in ("cold", "cached"):
            started = time.perf_counter()
            report = score_images(refs, samples, cache_dir=cache)
            seconds = time.perf_counter() - started
            looked_at = report.cache["misses"]  # samples are cached too: a miss is an image the model looked at
            each = f"{seconds / looked_at:.3f} s each" if looked_at else "none looked at again"
            print(
                f"{label:>6}: {seconds:6.1f} s  ({looked_at} images looked at, {each}; "
                f"cache hits {report.cache['hits']}, misses {report.cache['misses']})  recommended: "
                f"{report.recommended.step if report.recommended else None}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
