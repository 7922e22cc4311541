"""prepare's identity check on real people, by leaving people out: is a slipped-in photo of somebody else named,
and are the person's own photos left alone? Also: the pose estimate against a 68-landmark head pose, and
prepare's time on 75 photos with and without the check.

    python bench/prepare_identity.py [--no-speed]

Photos: ../shared/photos/people/<name>/*.jpg (8 people, 39 photos) and face_recognition's sdist
(obama.jpg, obama2.jpg, obama3.jpg: Barack Obama; biden.jpg: Joe Biden; its partial-face files are
crops of obama.jpg and are left out). They go through prepare once (--allow-upscale: many are under
512 px), and the observations it records are what every trial uses, so the figures are prepare's own.

Trials: a person with at least 3 photos (a "host") gets one photo of somebody else added; every photo
of every other person is tried in turn. A trial is a hit when prepare names that photo; every host
photo it names is a false flag. Leaving people out: each trial is judged with RELATIVE and CEILING
tuned on the trials of the other people only (neither the host nor the slipped-in person), each set
midway between the farthest own photo and the nearest stranger on those trials (or, where they
overlap, in the middle of the values with the fewest errors). FLOOR is not tuned (dlib's published
0.6 pair distance, about 0.42 from a centre). Prints hits / trials and false flags / host photos on
those held-out trials, the look-alike pairs, and what the shipped constants give on all trials.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from score_photos import ARCHIVE_NAME, DOWNLOAD, archive, photo_bytes  # noqa: E402

from kohya_wrap.prepare import PrepareOptions, prepare_dataset  # noqa: E402
from kohya_wrap.prepare import identity as ident  # noqa: E402

PEOPLE = ROOT.parent / "shared" / "photos" / "people"
SDIST = {"obama": ("obama.jpg", "obama2.jpg", "obama3.jpg"), "biden": ("biden.jpg",)}
LOOK_ALIKES = ({"jolie", "perry"}, {"aniston", "perry"})
MIN_HOST_PHOTOS = ident.MIN_FACES - 1


@dataclass(frozen=True)
class Trial:
    host: str
    intruder: str  # the other person
    intruder_file: str
    distances: tuple[float, ...]  # the host's photos, then the intruder's, each from the others' centre


def missing_photos_note() -> str | None:
    """Why the figures printed differ from docs/prepare.md's, when face_recognition's photos are absent."""
    if archive() is not None:
        return None
    return (
        f"note: {ARCHIVE_NAME} is not in .cache/test-photos: the figures below leave out its 4 photos (Obama, "
        f"Biden) and differ from docs/prepare.md's, which include them; get it with {DOWNLOAD}"
    )


def gather(src: Path) -> None:
    for folder in sorted(PEOPLE.iterdir()):
        for photo in sorted(folder.glob("*.jpg")):
            (src / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, src / folder.name / photo.name)
    if archive() is not None:
        for person, names in SDIST.items():
            (src / person).mkdir(parents=True, exist_ok=True)
            for name in names:
                (src / person / name).write_bytes(photo_bytes(name))


def observe_all(src: Path, work: Path) -> tuple[dict[str, list[tuple[str, tuple[float, ...]]]], list]:  # type: ignore[type-arg]
    result = prepare_dataset(
        PrepareOptions(src_dir=src, dataset_dir=work / "all", token="ohwx", class_word="person", allow_upscale=True)
    )
    people: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    missing = []
    for image in result.images:
        person = image.source.split("/")[0]
        embedding = image.identity.face().embedding if image.identity is not None else None
        if embedding is None:
            missing.append(image.source)
            continue
        people.setdefault(person, []).append((image.source, embedding))
    if missing:
        print(f"no dlib face in: {', '.join(missing)} (left out of the trials)")
    return people, list(result.images)


def trials(people: dict[str, list[tuple[str, tuple[float, ...]]]]) -> list[Trial]:
    out = []
    for host, own in sorted(people.items()):
        if len(own) < MIN_HOST_PHOTOS:
            continue
        for other, theirs in sorted(people.items()):
            if other == host:
                continue
            for name, embedding in theirs:
                distances = ident.centre_distances([e for _, e in own] + [embedding])
                out.append(Trial(host, other, name, tuple(distances)))
    return out


def best_cut(own: Sequence[float], strangers: Sequence[float]) -> float:
    """The value midway between the largest own and the smallest stranger value; where they overlap, the middle
    of the cut values with the fewest errors (own above it, strangers at or below it)."""
    if max(own) < min(strangers):
        return (max(own) + min(strangers)) / 2
    cuts = sorted(set(own) | set(strangers))
    errors = [sum(v > c for v in own) + sum(v <= c for v in strangers) for c in cuts]
    best = [c for c, e in zip(cuts, errors, strict=True) if e == min(errors)]
    return (best[0] + best[-1]) / 2


def tune(tuning: Sequence[Trial]) -> tuple[float, float]:
    """(relative, ceiling) from the tuning trials."""
    own_d, strange_d, own_r, strange_r = [], [], [], []
    for t in tuning:
        m = ident.median(t.distances)
        own_d += t.distances[:-1]
        strange_d.append(t.distances[-1])
        own_r += [d / m for d in t.distances[:-1]]
        strange_r.append(t.distances[-1] / m)
    return best_cut(own_r, strange_r), best_cut(own_d, strange_d)


def outcome(t: Trial, relative: float, ceiling: float) -> tuple[bool, int]:
    """(the slipped-in photo named, host photos named) under these constants."""
    limit = ident.threshold(t.distances, relative=relative, ceiling=ceiling)
    return t.distances[-1] > limit, sum(d > limit for d in t.distances[:-1])


def report(label: str, results: Sequence[tuple[Trial, bool, int]]) -> None:
    hits = sum(hit for _, hit, _ in results)
    false = sum(f for _, _, f in results)
    own = sum(len(t.distances) - 1 for t, _, _ in results)
    if results:
        print(
            f"  {label:<34} named {hits:>3} / {len(results):<3} ({100 * hits / len(results):5.1f}%)   "
            f"false flags {false:>3} / {own:<4} ({100 * false / own:4.1f}%)"
        )


def identity_figures(all_trials: list[Trial]) -> None:
    held_out = []
    tuned_values = []
    for pair in sorted({(t.host, t.intruder) for t in all_trials}):
        tuning = [t for t in all_trials if not ({t.host, t.intruder} & set(pair))]
        relative, ceiling = tune(tuning)
        tuned_values.append((relative, ceiling))
        for t in all_trials:
            if (t.host, t.intruder) == pair:
                held_out.append((t, *outcome(t, relative, ceiling)))
    hosts = sorted({t.host for t in all_trials})
    print(
        f"\n{len(all_trials)} trials: {len(hosts)} hosts ({', '.join(hosts)}), each with every photo of each other person"
    )
    rel = [r for r, _ in tuned_values]
    cei = [c for _, c in tuned_values]
    print(
        f"tuned per (host, slipped-in person) pair on the other people: RELATIVE {min(rel):.2f}-{max(rel):.2f}, "
        f"CEILING {min(cei):.3f}-{max(cei):.3f} (FLOOR {ident.FLOOR})"
    )
    print("held out (people the constants were not tuned on):")
    report("all trials", held_out)
    for host in hosts:
        report(f"host {host}", [r for r in held_out if r[0].host == host])
    for pair in LOOK_ALIKES:
        report(f"look-alikes {' / '.join(sorted(pair))}", [r for r in held_out if {r[0].host, r[0].intruder} == pair])
    missed = [r[0] for r in held_out if not r[1]]
    for t in missed:
        print(
            f"  missed: {t.intruder_file} in {t.host}'s set ({t.distances[-1]:.3f}, host median {ident.median(t.distances):.3f})"
        )
    own = [d for t in all_trials for d in t.distances[:-1]]
    strangers = [t.distances[-1] for t in all_trials]
    own_r = [d / ident.median(t.distances) for t in all_trials for d in t.distances[:-1]]
    strange_r = [t.distances[-1] / ident.median(t.distances) for t in all_trials]
    print(
        f"margins, all trials: own photos from the centre at most {max(own):.3f}, slipped-in photos at least "
        f"{min(strangers):.3f}; as a ratio to the set's median, own at most {max(own_r):.2f}, slipped-in at least "
        f"{min(strange_r):.2f}"
    )
    relative, ceiling = tune(all_trials)
    print(f"tuned on all trials: RELATIVE {relative:.2f}, CEILING {ceiling:.3f}")
    shipped = [(t, *outcome(t, ident.RELATIVE, ident.CEILING)) for t in all_trials]
    print(f"shipped constants (RELATIVE {ident.RELATIVE}, CEILING {ident.CEILING}, FLOOR {ident.FLOOR}), in-sample:")
    report("all trials", shipped)


def two_intruders(people: dict[str, list[tuple[str, tuple[float, ...]]]]) -> None:
    """Two photos of one other person in a set of at least 5: both named, none of the host's."""
    results = []
    for host, own in sorted(people.items()):
        if len(own) < 5:
            continue
        for other, theirs in sorted(people.items()):
            if other == host or len(theirs) < 2:
                continue
            for i in range(len(theirs)):
                for j in range(i + 1, len(theirs)):
                    d = ident.centre_distances([e for _, e in own] + [theirs[i][1], theirs[j][1]])
                    limit = ident.threshold(d)
                    results.append((d[-1] > limit and d[-2] > limit, sum(x > limit for x in d[:-2]), len(own)))
    if results:
        print(
            f"two photos of one other person in a set of 5 or more (shipped constants): both named in "
            f"{sum(r[0] for r in results)} / {len(results)}, false flags {sum(r[1] for r in results)} / "
            f"{sum(r[2] for r in results)}"
        )


VARIANTS = ("grey", "dark", "blurred", "small", "sunglasses")


def variant(image, kind: str):  # type: ignore[no-untyped-def]
    """A harder photo of the same person, as phones and old photos give; None where it cannot be made."""
    import numpy as np
    from PIL import ImageDraw, ImageEnhance, ImageFilter, ImageOps

    if kind == "grey":
        return ImageOps.grayscale(image).convert("RGB")
    if kind == "dark":
        return ImageEnhance.Brightness(image).enhance(0.35)
    if kind == "blurred":
        return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, max(image.size) / 250)))
    if kind == "small":  # a quarter of the resolution, shown at the same size
        return image.resize((max(1, image.width // 4), max(1, image.height // 4))).resize(image.size)
    # "sunglasses": a dark oval over each eye, placed from dlib's landmarks
    faces = ident._locator().locate(np.asarray(image))
    if not faces:
        return None
    out = image.copy()
    draw = ImageDraw.Draw(out)
    points = faces[0].landmarks
    radius = math.dist(points[0], points[2]) * 0.3
    for a, b in ((0, 1), (2, 3)):
        cx, cy = (points[a][0] + points[b][0]) / 2, (points[a][1] + points[b][1]) / 2
        draw.ellipse((cx - radius, cy - radius * 0.8, cx + radius, cy + radius * 0.8), fill=(15, 15, 20))
    return out


def harder_photos(src: Path, work: Path, people: dict[str, list[tuple[str, tuple[float, ...]]]]) -> None:
    """Harder versions of every photo (VARIANTS), through prepare: (1) each photo of a set of 4 or more replaced by
    its harder version, the rest of the set as it is: is it flagged? (2) a harder photo of somebody else slipped
    into each set of 3 or more: is it named? Shipped constants."""
    from PIL import Image

    hard = work / "hard-src"
    for own in people.values():
        for source, _ in own:
            with Image.open(src / source) as opened:
                image = opened.convert("RGB")
            for kind in VARIANTS:
                out = variant(image, kind)
                if out is not None:
                    target = hard / kind / Path(source).with_suffix(".png")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    out.save(target)
    result = prepare_dataset(
        PrepareOptions(src_dir=hard, dataset_dir=work / "hard", token="ohwx", class_word="person", allow_upscale=True)
    )
    seen = {image.source: image.identity for image in result.images}

    def harder(kind: str, source: str) -> tuple[float, ...] | None:
        observed = seen.get(f"{kind}/{Path(source).with_suffix('.png').as_posix()}")
        return observed.face().embedding if observed is not None else None

    print(f"\nharder photos ({', '.join(VARIANTS)}), shipped constants:")
    print(f"  {'':<11} {'own photo in its set of 4+: flagged':<38} somebody else in a set of 3+: named")
    for kind in VARIANTS:
        flagged = judged = hits = trials = no_face = 0
        for person, own in people.items():
            for i, (source, _) in enumerate(own):
                embedding = harder(kind, source)
                if embedding is None:
                    no_face += 1
                    continue
                if len(own) >= ident.MIN_FACES:
                    d = ident.centre_distances([e for j, (_, e) in enumerate(own) if j != i] + [embedding])
                    flagged += d[-1] > ident.threshold(d)
                    judged += 1
                for host, theirs in people.items():
                    if host == person or len(theirs) < MIN_HOST_PHOTOS:
                        continue
                    d = ident.centre_distances([e for _, e in theirs] + [embedding])
                    hits += d[-1] > ident.threshold(d)
                    trials += 1
        print(
            f"  {kind:<11} {f'{flagged} / {judged}':<38} {hits} / {trials}"
            + (f"  (no dlib face in {no_face})" if no_face else "")
        )


def pose_check(images: list, dataset: Path) -> None:  # type: ignore[type-arg]
    """The 5-landmark yaw against a 68-landmark head pose (solvePnP on a generic head, OpenCV's tutorial model)."""
    import cv2
    import dlib
    import numpy as np
    from PIL import Image

    from kohya_wrap.faceid import _models_dir

    folder = _models_dir()
    assert folder is not None
    predictor = dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))
    head = np.array(
        [
            (0.0, 0.0, 0.0),
            (0.0, -330.0, -65.0),
            (-225.0, 170.0, -135.0),
            (225.0, 170.0, -135.0),
            (-150.0, -150.0, -125.0),
            (150.0, -150.0, -125.0),
        ]
    )  # nose tip, chin, eye corners, mouth corners
    locator = ident._locator()
    pairs = []
    for image in images:
        if image.identity is None or image.identity.yaw is None:
            continue
        rgb = np.asarray(Image.open(dataset / image.output).convert("RGB"))
        faces = locator.locate(rgb)
        if not faces:
            continue
        left, top, right, bottom = faces[0].box
        shape = predictor(rgb, dlib.rectangle(left, top, right, bottom))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)[[30, 8, 36, 45, 48, 54]]
        focal = float(rgb.shape[1])
        camera = np.array([[focal, 0, rgb.shape[1] / 2], [0, focal, rgb.shape[0] / 2], [0, 0, 1]])
        ok, rotation, _ = cv2.solvePnP(head, points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            continue
        matrix, _ = cv2.Rodrigues(rotation)
        yaw68 = math.degrees(math.atan2(-matrix[2, 0], math.hypot(matrix[0, 0], matrix[1, 0])))
        pairs.append((image.identity.yaw, yaw68))
    if not pairs:
        return
    # Magnitudes: the two estimates count the sides with opposite signs.
    offsets = [ident.NOSE_DEPTH * math.tan(math.radians(abs(y5))) for y5, _ in pairs]
    tans = [math.tan(math.radians(abs(y68))) for _, y68 in pairs]
    fitted = sum(o * t for o, t in zip(offsets, tans, strict=True)) / sum(t * t for t in tans)
    diff = [abs(abs(y5) - abs(y68)) for y5, y68 in pairs]
    agree = sum(ident.pose_of(y5) == ident.pose_of(y68) for y5, y68 in pairs)
    print(
        f"\npose: {len(pairs)} faces, |yaw| from 5 landmarks vs 68-landmark head pose: mean difference "
        f"{sum(diff) / len(diff):.1f} deg, largest {max(diff):.1f} deg; same class in {agree} / {len(pairs)}; "
        f"NOSE_DEPTH fitted {fitted:.2f} (shipped {ident.NOSE_DEPTH}); 68-landmark |yaw| up to "
        f"{max(abs(y) for _, y in pairs):.0f} deg"
    )


def speed(src: Path, work: Path, count: int) -> None:
    """prepare on `count` real photos (the photos, then their mirror images), without and with the check."""
    from PIL import Image, ImageOps

    photos = work / "speed-src"
    sources = sorted(src.glob("*/*.jpg"))
    n = 0
    for mirrored in (False, True):
        for path in sources:
            if n == count:
                break
            with Image.open(path) as im:
                out = ImageOps.mirror(im.convert("RGB")) if mirrored else im.convert("RGB")
                photos.mkdir(parents=True, exist_ok=True)
                out.save(photos / f"{n:03d}.jpg", quality=92)
            n += 1
    print(f"\nspeed: prepare on {n} real photos (--allow-upscale, every core), identity check off then on")
    times, cpu = {}, {}
    for label, on in (("without", False), ("with", True)):
        started, cpu_before = time.perf_counter(), cpu_seconds()
        prepare_dataset(
            PrepareOptions(
                src_dir=photos,
                dataset_dir=work / f"speed-{label}",
                token="ohwx",
                class_word="person",
                allow_upscale=True,
                identity=on,
            )
        )
        times[label], cpu[label] = time.perf_counter() - started, cpu_seconds() - cpu_before
        print(
            f"  {label:>7} the check: {times[label]:6.1f} s ({times[label] / n:.3f} s a photo), "
            f"CPU {cpu[label] / n:.3f} s a photo"
        )
    print(
        f"  the check adds {(times['with'] - times['without']) / n:.3f} s a photo of wall time and "
        f"{(cpu['with'] - cpu['without']) / n:.3f} s of CPU time, the model's loading in each worker included "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work slows both sides)"
    )


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (prepare's pool workers are joined at its end)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-speed", action="store_true", help="skip the timing of prepare on 75 photos")
    parser.add_argument("--speed-only", action="store_true", help="only the timing")
    parser.add_argument("--photos", type=int, default=75)
    args = parser.parse_args()
    if (problem := ident.unavailable_reason()) is not None:
        print(f"bench/prepare_identity.py: {problem}")
        return 1
    if not PEOPLE.is_dir():
        print(f"bench/prepare_identity.py: {PEOPLE} is absent (the photos of 8 people; see its README)")
        return 1
    if (note := missing_photos_note()) is not None:
        print(note, flush=True)
    work = Path(tempfile.mkdtemp(prefix="kohya-wrap-bench-identity-"))
    try:
        src = work / "src"
        gather(src)
        if not args.no_speed:  # first: no model loaded in this process yet, so each worker loads its own
            speed(src, work, args.photos)
        if args.speed_only:
            return 0
        people, images = observe_all(src, work)
        counts = ", ".join(f"{p} {len(v)}" for p, v in sorted(people.items()))
        print(f"{sum(len(v) for v in people.values())} photos with a face, {len(people)} people: {counts}")
        identity_figures(trials(people))
        two_intruders(people)
        harder_photos(src, work, people)
        pose_check(images, work / "all")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
