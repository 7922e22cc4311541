"""score's judgement on people it was not tuned on: k-fold over people, thresholds tuned on the others.

    python bench/score_heldout.py [--folds 3] [--runs 3]

The people are the photos in ../shared/photos/people/<name>/ (read its README) and face_recognition's
test photos (three of Barack Obama, one of Joe Biden; .cache/test-photos). For every photo the bench
makes what a checkpoint might draw, each a 512 px square around the face:
- copies of it as a training photo: plain (resized and recompressed, JPEG 20, shifted, mirrored,
  rotated, recoloured, brightened and blurred) and painted (stylized, cartoon, oil-like, posterized grey);
- new photos of the person (it, as a photo the references do not hold): plain, painted, posterized,
  desaturated, small in a wide frame, on a new background, cartoon.

Pairs: a new photo is scored against the person's other photos (flagged as a copy: wrong); a copy
against all the person's photos (not flagged as a copy of its photo: missed).

Runs: per person (2+ photos) and seed, the photos are split into training photos (the references)
and held-out photos; 10 checkpoints of 3 samples: under-trained (another person: the nearest
look-alike or a random one; an image with no face), good (held-out photos of the person, restyled at
random; one good checkpoint has one copy among its samples, the odd sample), over-trained (2 or 3
of 3 samples copy a training photo). A recommendation is right when it names a good checkpoint.

Per fold the copy threshold (pairs) and the identity margin (runs) are tuned on the other people, and
every figure is reported on the fold's own people only. The shipped constants are also run on all
people (in-sample: printed for comparison, not as evidence).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from score_photos import photo_bytes, skip_reason  # noqa: E402

from kohya_wrap.faceid import Observation  # noqa: E402
from kohya_wrap.score.collect import SampleGroup  # noqa: E402
from kohya_wrap.score.scoring import (  # noqa: E402
    DEFAULT_JUDGEMENT,
    Judgement,
    Reference,
    ReferenceSet,
    judge_observed,
    score_image,
)

PEOPLE = ROOT.parent / "shared" / "photos" / "people"
MARGIN_GRID: list[float | None] = [None, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.20]


# -- making the pictures ----------------------------------------------------------------------------


def _np(img: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def square_around(img: Any, box: tuple[int, int, int, int]) -> Any:
    """A 512 px square around the face (2.6 face widths, clipped by the photo): a portrait sample's framing."""
    from PIL import Image

    w, h = img.size
    left, top, right, bottom = box
    fw = right - left
    side = int(min(max(fw * 2.6, 64), w, h))
    cx, cy = (left + right) / 2, (top + bottom) / 2 + fw * 0.15
    x = int(min(max(cx - side / 2, 0), w - side))
    y = int(min(max(cy - side / 2, 0), h - side))
    return img.crop((x, y, x + side, y + side)).resize((512, 512), Image.Resampling.LANCZOS)


def jpeg(img: Any, quality: int) -> Any:
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def stylize(img: Any) -> Any:
    import cv2
    from PIL import Image

    bgr = _np(img)[..., ::-1].copy()
    return Image.fromarray(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)[..., ::-1].copy())


def cartoon(img: Any) -> Any:
    import cv2
    import numpy as np
    from PIL import Image

    a = _np(img).copy()
    for _ in range(4):
        a = cv2.bilateralFilter(a, 9, 40, 7)
    edges = cv2.adaptiveThreshold(
        cv2.medianBlur(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), 7), 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 3
    )
    flat = np.minimum((a // 48).astype(np.int32) * 48 + 24, 255)
    return Image.fromarray((flat * (edges[..., None] > 0)).astype(np.uint8))


def oil(img: Any) -> Any:
    import cv2
    from PIL import Image, ImageOps

    return ImageOps.posterize(Image.fromarray(cv2.edgePreservingFilter(_np(img), flags=1, sigma_s=60, sigma_r=0.6)), 4)


def desaturate(img: Any) -> Any:
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(ImageEnhance.Color(img).enhance(0.15)).enhance(1.25)


def recolour(img: Any, rng: random.Random) -> Any:
    import numpy as np
    from PIL import Image, ImageEnhance

    hsv = np.asarray(img.convert("HSV")).astype(np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + rng.randint(15, 40)) % 256
    return ImageEnhance.Contrast(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).enhance(1.2)


def background(rng: random.Random) -> Any:
    import cv2
    import numpy as np
    from PIL import Image

    c1 = np.array([rng.randint(0, 255) for _ in range(3)])
    c2 = np.array([rng.randint(0, 255) for _ in range(3)])
    t = np.linspace(0, 1, 512)[:, None, None]
    a = c1 * (1 - t) + c2 * t + np.zeros((512, 512, 3))
    noise = np.random.default_rng(rng.randint(0, 999)).normal(0, 12, (64, 64, 3))
    return Image.fromarray(np.clip(a + cv2.resize(noise, (512, 512)), 0, 255).astype(np.uint8))


def new_background(img: Any, box: tuple[int, int, int, int], rng: random.Random) -> Any:
    from PIL import Image, ImageDraw, ImageFilter

    left, top, right, bottom = box
    cx, cy, fw = (left + right) / 2, (top + bottom) / 2, right - left
    mask = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(mask).ellipse((cx - fw * 0.95, cy - fw * 1.25, cx + fw * 0.95, cy + fw * 1.6), fill=255)
    return Image.composite(img, background(rng), mask.filter(ImageFilter.GaussianBlur(12)))


def small_in_frame(img: Any, rng: random.Random) -> Any:
    from PIL import Image

    frame, side = background(rng), int(512 * 0.4)
    frame.paste(
        img.resize((side, side), Image.Resampling.LANCZOS), (rng.randint(0, 512 - side), rng.randint(0, 512 - side))
    )
    return frame


def shifted(img: Any, rng: random.Random) -> Any:
    from PIL import Image

    d = int(512 * rng.uniform(0.05, 0.1))
    dx, dy = rng.choice([(d, 0), (0, d), (d, d), (-d, 0)])
    moved = img.transform(
        img.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy), resample=Image.Resampling.BILINEAR, fillcolor=(128,) * 3
    )
    return moved.crop((abs(dx), abs(dy), 512, 512)).resize((512, 512))


def copy_kinds() -> dict[str, tuple[bool, Any]]:
    """name: (painted, make(square, rng))."""
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    return {
        "resized-jpeg": (False, lambda im, rng: jpeg(im.resize((256, 256)).resize((512, 512)), 30)),
        "jpeg20": (False, lambda im, rng: jpeg(im, 20)),
        "shifted": (False, shifted),
        "mirrored": (False, lambda im, rng: ImageOps.mirror(im)),
        "rotated": (False, lambda im, rng: im.rotate(rng.choice([-4, 4]), resample=Image.Resampling.BILINEAR)),
        "recoloured": (False, recolour),
        "bright-blur": (
            False,
            lambda im, rng: ImageEnhance.Brightness(im.filter(ImageFilter.GaussianBlur(1.5))).enhance(1.3),
        ),
        "stylized": (True, lambda im, rng: stylize(im)),
        "cartoon": (True, lambda im, rng: cartoon(im)),
        "oil": (True, lambda im, rng: oil(im)),
        "posterized-grey": (True, lambda im, rng: ImageOps.posterize(desaturate(im), 3)),
    }


def new_styles() -> dict[str, Any]:
    from PIL import ImageOps

    return {
        "plain": lambda im, box, rng: im,
        "painted": lambda im, box, rng: stylize(im),
        "posterized": lambda im, box, rng: ImageOps.posterize(im, 3),
        "desaturated": lambda im, box, rng: desaturate(im),
        "small-frame": lambda im, box, rng: small_in_frame(im, rng),
        "new-background": new_background,
        "cartoon": lambda im, box, rng: cartoon(im),
    }


# -- observing --------------------------------------------------------------------------------------


@dataclass
class Photo:
    person: str
    name: str
    seen: Observation
    copies: dict[str, tuple[bool, Observation]] = field(default_factory=dict)
    news: dict[str, Observation] = field(default_factory=dict)


def observe_all(model: Any) -> tuple[list[Photo], list[Observation]]:
    from PIL import Image

    from kohya_wrap.faceid import load_rgb

    sources: list[tuple[str, str, Any]] = []
    for folder in sorted(p for p in PEOPLE.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg")):
            sources.append((folder.name, path.stem, load_rgb(path)))
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        sources.append((name[:-4].rstrip("0123456789"), name[:-4], load_rgb(io.BytesIO(photo_bytes(name)))))  # type: ignore[arg-type]
    rng = random.Random(17)
    photos = []
    for person, name, rgb in sources:
        seen = model.observe(rgb)
        if not seen.has_face:
            print(f"  {person}/{name}: no face found, left out")
            continue
        img = Image.fromarray(rgb)
        square = square_around(img, seen.box)
        square_seen = model.observe(_np(square))
        photo = Photo(person, name, seen)
        if square_seen.has_face:
            for kind, (painted, make) in copy_kinds().items():
                photo.copies[kind] = (painted, model.observe(_np(make(square, rng))))
            for kind, make in new_styles().items():
                photo.news[kind] = model.observe(_np(make(square, square_seen.box, rng)))
        photos.append(photo)
    faceless = [model.observe(_np(background(random.Random(seed)))) for seed in range(4)]
    return photos, faceless


# -- pairs: copies caught, new photos flagged -------------------------------------------------------

# Frames of one shoot, checked by eye: the same pose, expression, light, framing and background, another
# shirt. A sample like one of them, with the other among the training photos, reproduces that photo: by
# what makes a copy it is one, so such pairs are not counted as new photos (their figures are printed apart).
ONE_SHOOT = ({"zuckerberg/img13", "zuckerberg/img14"},)


def one_shoot(a: Photo, b: Photo) -> bool:
    return any({f"{a.person}/{a.name}", f"{b.person}/{b.name}"} <= shoot for shoot in ONE_SHOOT)


def refs_of(photos: list[Photo]) -> list[Reference]:
    return [Reference(f"{p.person}/{p.name}", p.seen) for p in photos]


@dataclass
class PairFigures:
    plain: list[bool] = field(default_factory=list)  # caught?
    painted: list[bool] = field(default_factory=list)
    news: list[bool] = field(default_factory=list)  # flagged?
    new_kinds: dict[str, list[bool]] = field(default_factory=dict)
    new_people: dict[str, list[bool]] = field(default_factory=dict)
    one_shoot: list[bool] = field(default_factory=list)  # a frame of one shoot with the other frame a reference


def pair_figures(photos: list[Photo], people: set[str], judgement: Judgement) -> PairFigures:
    out = PairFigures()
    for person in sorted(people):
        own = [p for p in photos if p.person == person]
        if len(own) < 2:
            continue
        all_refs = ReferenceSet.of(refs_of(own), judgement)
        for photo in own:
            for _kind, (painted, seen) in photo.copies.items():
                if not seen.has_face:
                    (out.painted if painted else out.plain).append(False)
                    continue
                score = score_image("x", seen, all_refs, judgement)
                (out.painted if painted else out.plain).append(score.copy_of == f"{photo.person}/{photo.name}")
            others = ReferenceSet.of(refs_of([p for p in own if p is not photo and not one_shoot(p, photo)]), judgement)
            shoot = [p for p in own if p is not photo and one_shoot(p, photo)]
            if shoot:
                with_shoot = ReferenceSet.of(refs_of([p for p in own if p is not photo]), judgement)
                for seen in photo.news.values():
                    if seen.has_face:
                        out.one_shoot.append(score_image("x", seen, with_shoot, judgement).copy_of is not None)
            for kind, seen in photo.news.items():
                if seen.has_face:
                    flagged = score_image("x", seen, others, judgement).copy_of is not None
                    out.news.append(flagged)
                    out.new_kinds.setdefault(kind, []).append(flagged)
                    out.new_people.setdefault(person, []).append(flagged)
    return out


def pair_values(photos: list[Photo], people: set[str]) -> tuple[list[float], list[float]]:
    """The highest copy correlation of each new photo with a photo of its person (gated as score_image gates
    it; -1 when none passes the gate), and of each copy with its own photo."""
    import numpy as np

    gate = DEFAULT_JUDGEMENT.copy_identity_gate
    news, copies = [], []
    for person in sorted(people):
        own = [p for p in photos if p.person == person]
        if len(own) < 2:
            continue
        all_refs = ReferenceSet.of(refs_of(own))
        for i, photo in enumerate(own):
            for _painted, seen in photo.copies.values():
                near = seen.has_face and np.linalg.norm(all_refs.embeddings[i] - seen.embedding) < gate
                copies.append(float(all_refs.copy_correlation(seen)[i]) if near else -1.0)
            others = ReferenceSet.of(refs_of([p for p in own if p is not photo and not one_shoot(p, photo)]))
            for seen in photo.news.values():
                if seen.has_face:
                    d = np.linalg.norm(others.embeddings - seen.embedding, axis=1)
                    news.append(float(np.max(np.where(d < gate, others.copy_correlation(seen), -1.0))))
    return news, copies


def tune_copy(photos: list[Photo], people: set[str]) -> float:
    """Halfway between the highest correlation of a new photo with a photo of its person and the correlation
    above which 95% of the copies lie, on these people (the widest margin on both sides)."""
    news, copies = pair_values(photos, people)
    fifth = sorted(copies)[len(copies) // 20]
    return round((max(news) + fifth) / 2, 2)


# -- runs -------------------------------------------------------------------------------------------


@dataclass
class Run:
    person: str
    refs: list[Reference]
    groups: list[SampleGroup]
    seen: list[list[tuple[Path, Observation, Any]]]
    good: set[int]


def make_runs(photos: list[Photo], faceless: list[Observation], person: str, count: int) -> list[Run]:
    own = [p for p in photos if p.person == person]
    others = [p for p in photos if p.person != person]
    if len(own) < 2:
        return []
    return [make_run(person, own, others, faceless, random.Random(f"{person}-{seed}")) for seed in range(count)]


def make_run(
    person: str, own: list[Photo], others: list[Photo], faceless: list[Observation], rng: random.Random
) -> Run:
    import numpy as np

    order = own[:]
    rng.shuffle(order)
    cut = max(1, len(order) // 2)
    train, held = order[:cut], order[cut:]
    refs = refs_of(train)
    emb = np.stack([r.observation.embedding for r in refs])

    def median_to_refs(o: Observation, emb: Any = emb) -> float:
        return float(np.median(np.linalg.norm(emb - o.embedding, axis=1)))

    lookalike = min(others, key=lambda p: median_to_refs(p.seen))
    thumb = np.zeros((32, 32), np.float32)

    def sample(o: Observation, thumb: Any = thumb) -> tuple[Path, Observation, Any]:
        return (Path(f"s{rng.randrange(10**6)}.png"), o, thumb)

    def other_person() -> Observation:
        p = lookalike if rng.random() < 0.5 else rng.choice(others)
        kind = rng.choice(["plain", "plain", "painted", "desaturated"])
        return p.news.get(kind) or p.seen

    def new_photo() -> Observation:
        p = rng.choice(held)
        kind = rng.choice(list(p.news))
        return p.news[kind]

    def copy_photo() -> Observation:
        p = rng.choice(train)
        kind = rng.choice(list(p.copies))
        return p.copies[kind][1]

    plan: list[list[Observation]] = [
        [other_person(), other_person(), rng.choice(faceless)],
        [other_person(), other_person(), other_person()],
    ]
    odd = rng.randrange(4)
    for k in range(4):
        plan.append([new_photo(), new_photo(), copy_photo() if k == odd else new_photo()])
    for k in range(4):
        plan.append([copy_photo(), copy_photo(), copy_photo() if k >= 2 or rng.random() < 0.5 else new_photo()])
    steps = [250 * (i + 1) for i in range(len(plan))]
    return Run(
        person,
        refs,
        [SampleGroup(s, (), Path(f"ck-{s}.safetensors")) for s in steps],
        [[sample(o) for o in obs] for obs in plan],
        {steps[i] for i in range(2, 6)},
    )


@dataclass
class RunFigures:
    right: int = 0
    total: int = 0
    clear: int = 0
    wrong: list[str] = field(default_factory=list)


def run_figures(runs: list[Run], judgement: Judgement) -> RunFigures:
    out = RunFigures()
    for run in runs:
        groups = [replace(g, images=tuple(p for p, _, _ in seen)) for g, seen in zip(run.groups, run.seen, strict=True)]
        _, found, _ = judge_observed(groups, run.seen, run.refs, need_file=True, judgement=judgement)
        out.total += 1
        step = found.checkpoint.step if found.checkpoint else None
        if step in run.good:
            out.right += 1
            out.clear += found.confidence == "clear"
        else:
            out.wrong.append(f"{run.person}: {step} ({found.reason[:110]})")
    return out


def tune_margin(runs: list[Run], judgement: Judgement) -> float | None:
    """The margin that gets the most runs right; among equals, the middle one (None, uncalibrated, is the loosest)."""
    right = {margin: run_figures(runs, replace(judgement, identity_margin=margin)).right for margin in MARGIN_GRID}
    best = [m for m in MARGIN_GRID if right[m] == max(right.values())]
    return best[len(best) // 2]


# -- identity margins -------------------------------------------------------------------------------


def identity_figures(photos: list[Photo], people: set[str], judgement: Judgement) -> dict[str, Any]:
    """Leave one photo out: its median distance to the person's other photos vs the nearest other person's
    photo's median distance to them; and the share of new photos (plain / restyled) and of look-alikes that
    match, at dlib's 0.6 and at the person's threshold."""
    import numpy as np

    margins, same, match_new, match_styled, match_other, match_new06, match_styled06, match_other06 = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for person in sorted(people):
        own = [p for p in photos if p.person == person]
        if len(own) < 3:
            continue
        for photo in own:
            rest = ReferenceSet.of(refs_of([p for p in own if p is not photo]), judgement)

            def med(o: Observation, rest: ReferenceSet = rest) -> float:
                return float(np.median(np.linalg.norm(rest.embeddings - o.embedding, axis=1)))

            d_same = med(photo.seen)
            d_other = min(med(p.seen) for p in photos if p.person != person)
            same.append(d_same)
            margins.append(d_other - d_same)
            for kind, o in photo.news.items():
                if o.has_face:
                    (match_new if kind == "plain" else match_styled).append(med(o) < rest.match_distance)
                    (match_new06 if kind == "plain" else match_styled06).append(med(o) < 0.6)
            for p in photos:
                if p.person != person:
                    for o in [p.seen, *(x for x in p.news.values() if x.has_face)]:
                        match_other.append(med(o) < rest.match_distance)
                        match_other06.append(med(o) < 0.6)
    return {
        "margin_min": min(margins) if margins else None,
        "margin_median": statistics.median(margins) if margins else None,
        "same_max": max(same) if same else None,
        "match": (match_new, match_styled, match_other),
        "match06": (match_new06, match_styled06, match_other06),
    }


def pct(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)} ({100 * sum(values) / max(len(values), 1):.1f}%)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs per person (different splits and samples)")
    parser.add_argument("--fresh", action="store_true", help="observe the pictures again instead of reusing .cache")
    args = parser.parse_args()
    if (why := skip_reason()) is not None or not PEOPLE.is_dir():
        print(f"bench/score_heldout.py: {why or f'{PEOPLE} is absent (see tests/score_photos.py)'}")
        return 1
    import pickle

    from kohya_wrap.faceid import PIPELINE_VERSION, IdentityModel

    started = time.perf_counter()
    # What the model sees does not change with the thresholds: kept between runs of the bench (ignored by git).
    kept = ROOT / ".cache" / f"bench-score-heldout-p{PIPELINE_VERSION}.pickle"
    if args.fresh or not kept.is_file():
        photos, faceless = observe_all(IdentityModel())
        kept.parent.mkdir(exist_ok=True)
        kept.write_bytes(pickle.dumps((photos, faceless)))
    else:
        photos, faceless = pickle.loads(kept.read_bytes())
    people = sorted({p.person for p in photos if sum(q.person == p.person for q in photos) >= 2})
    print(
        f"{len(photos)} photos of {len({p.person for p in photos})} people observed with their copies and new "
        f"renderings in {time.perf_counter() - started:.0f} s; runs for {len(people)} people with 2+ photos"
    )
    rng = random.Random(5)
    order = people[:]
    rng.shuffle(order)
    folds = [set(order[i :: args.folds]) for i in range(args.folds)]
    runs = {p: make_runs(photos, faceless, p, args.runs) for p in people}
    total_pairs, total_runs, id_rows = PairFigures(), RunFigures(), []
    for i, held in enumerate(folds):
        tuning = set(people) - held
        copy = tune_copy(photos, tuning)
        tuned = replace(DEFAULT_JUDGEMENT, copy_correlation=copy)
        margin = tune_margin([r for p in tuning for r in runs[p]], tuned)
        tuned = replace(tuned, identity_margin=margin)
        pairs = pair_figures(photos, held, tuned)
        rf = run_figures([r for p in sorted(held) for r in runs[p]], tuned)
        ident = identity_figures(photos, held, tuned)
        id_rows.append(ident)
        print(
            f"fold {i + 1}: held out {', '.join(sorted(held))}; tuned on the others: copy correlation {copy}, "
            f"identity margin {margin}"
        )
        print(
            f"  recommendations right {rf.right}/{rf.total} (clear {rf.clear}); new photos flagged as copies "
            f"{pct(pairs.news)}; copies missed: plain {pct([not c for c in pairs.plain])}, painted "
            f"{pct([not c for c in pairs.painted])}"
        )
        for line in rf.wrong:
            print(f"    wrong: {line}")
        total_pairs.plain += pairs.plain
        total_pairs.painted += pairs.painted
        total_pairs.news += pairs.news
        for k, v in pairs.new_kinds.items():
            total_pairs.new_kinds.setdefault(k, []).extend(v)
        total_pairs.one_shoot += pairs.one_shoot
        for k, v in pairs.new_people.items():
            total_pairs.new_people.setdefault(k, []).extend(v)
        total_runs.right += rf.right
        total_runs.total += rf.total
        total_runs.clear += rf.clear
    missed = [not c for c in total_pairs.plain + total_pairs.painted]
    print("held-out people, all folds:")
    print(f"  recommendations right: {total_runs.right}/{total_runs.total} (clear {total_runs.clear})")
    print(f"  new photos flagged as copies: {pct(total_pairs.news)}")
    print("    by rendering: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(total_pairs.new_kinds.items())))
    print(f"  a frame of one shoot, the other frame a training photo: flagged as a copy {pct(total_pairs.one_shoot)}")
    print("    by person: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(total_pairs.new_people.items())))
    print(
        f"  copies missed: {pct(missed)} (plain {pct([not c for c in total_pairs.plain])}, painted "
        f"{pct([not c for c in total_pairs.painted])})"
    )
    margins = [r["margin_min"] for r in id_rows if r["margin_min"] is not None]
    medians = [r["margin_median"] for r in id_rows if r["margin_median"] is not None]
    print(
        f"  same person vs nearest other (median distance to the person's other photos, one left out): "
        f"smallest margin {min(margins):.3f}, median {statistics.median(medians):.3f}; farthest own photo "
        f"{max(r['same_max'] for r in id_rows if r['same_max'] is not None):.3f}"
    )
    for label, key in (("person's threshold", "match"), ("dlib's 0.6", "match06")):
        new = [x for r in id_rows for x in r[key][0]]
        styled = [x for r in id_rows for x in r[key][1]]
        other = [x for r in id_rows for x in r[key][2]]
        print(f"  matches at {label}: new plain {pct(new)}, new restyled {pct(styled)}, other people {pct(other)}")
    print("what the person's threshold buys (all people, every margin; runs right, then matches):")
    for margin in MARGIN_GRID:
        judged = replace(DEFAULT_JUDGEMENT, identity_margin=margin)
        right = run_figures([r for p in people for r in runs[p]], judged).right
        new, styled, other = identity_figures(photos, set(people), judged)["match"]
        print(
            f"  margin {margin}: right {right}/{total_runs.total}; new plain {pct(new)}, new restyled {pct(styled)}, "
            f"other people {pct(other)}"
        )
    print(
        f"the same rules on all people: copy correlation {tune_copy(photos, set(people))}, identity margin "
        f"{tune_margin([r for p in people for r in runs[p]], DEFAULT_JUDGEMENT)}"
    )
    shipped = run_figures([r for p in people for r in runs[p]], DEFAULT_JUDGEMENT)
    shipped_pairs = pair_figures(photos, set(people), DEFAULT_JUDGEMENT)
    print(
        f"shipped constants (copy {DEFAULT_JUDGEMENT.copy_correlation}, margin {DEFAULT_JUDGEMENT.identity_margin}) "
        f"on all people, in-sample: right {shipped.right}/{shipped.total}, new flagged {pct(shipped_pairs.news)}, "
        f"copies missed plain {pct([not c for c in shipped_pairs.plain])}, painted "
        f"{pct([not c for c in shipped_pairs.painted])}"
    )
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
