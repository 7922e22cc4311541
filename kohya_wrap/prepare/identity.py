"""Who the training photos show, and from which angles: dlib's identity model (kohya_wrap.faceid) on prepare's outputs.

Each training output (the crop sd-scripts will see) is looked at once, in the worker that made it:
the face that counts is the one prepare cropped on (in a group photo, the largest face OpenCV found,
which dlib's faces are matched to by overlap), or, without an OpenCV face, dlib's largest. Its
128-number descriptor and its 5 landmarks are kept (observe).

Somebody else (judge): the set's centre is the geometric median of its descriptors, which a
minority of other faces cannot drag to themselves (a sum of distances, not of squares, is
minimised). Each photo is measured against the centre of the *other* photos. A photo is somebody
else when it lies farther than the set's own threshold: RELATIVE times the set's median distance
(a person who varies little is held to that), but never below FLOOR (dlib's published same-person
pair distance, 0.6, is about 0.42 from a centre: 0.6 / sqrt 2) and never above CEILING (in the bench, no
person's own photo lay beyond it). RELATIVE and CEILING were tuned by bench/prepare_identity.py on some
people and checked on others (docs/prepare.md has the figures). With fewer than MIN_FACES faces
there is no majority to compare with, and no one is named.

Pose (yaw_degrees): the base of the nose sits between the eyes in a frontal face and moves toward
one eye as the head turns. Its offset from the eyes' midpoint, along the eye line, over half the
eyes' distance, is NOSE_DEPTH x tan(yaw) for a head whose nose base stands NOSE_DEPTH half-eye-
distances in front of the eyes; NOSE_DEPTH was fitted against a 68-landmark head-pose estimate
(solvePnP on a generic head) by bench/prepare_identity.py. dlib's detector is trained on frontal
and slightly turned faces and misses true profiles; a face that OpenCV found with its profile
cascade (after the frontal one found none) and dlib does not see is counted as a profile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from PIL import Image

from kohya_wrap.prepare.records import POSES, Box, FaceIdentity, IdentityCheck

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from kohya_wrap.faceid import FaceLocator

RELATIVE = 1.75
FLOOR = 0.42
CEILING = 0.57
MIN_FACES = 4
NOSE_DEPTH = 0.5
FRONTAL_MAX_DEGREES = 25.0
THREE_QUARTER_MAX_DEGREES = 60.0
# The set is "all one angle" when one pose holds at least this share of the photos whose pose is known.
ONE_ANGLE_SHARE = 0.9
DETECT_SIDE = 384  # dlib's detector runs on a copy this size (px, longest side): 40% less time than at 512
# Bump when observe() records something else for the same output: it is part of the reuse key.
OBSERVATION_VERSION = 1
_MATCH_OVERLAP = 0.3  # a dlib face is the one prepare cropped on when they overlap this much (of the smaller)


def unavailable_reason() -> str | None:
    """None when the identity check can run here, else why not and what to install."""
    from kohya_wrap.faceid import scorer_available

    return scorer_available()


def model_name() -> str | None:
    """The identity model's name (part of the reuse key: outputs recorded without it are redone), or None."""
    if unavailable_reason() is not None:
        return None
    import dlib

    return f"dlib-{dlib.__version__}-resnet-v1-sp5-prepare{OBSERVATION_VERSION}"


@cache
def _locator() -> FaceLocator:
    from kohya_wrap.faceid import FaceLocator

    return FaceLocator()  # once per process: about 0.7 s


def observe(output: Image.Image, cropped_face: Box | None, profile_view: bool) -> FaceIdentity:
    """What the identity model sees in one output image. cropped_face: the face box prepare cropped on, in
    output pixels (None: no face was found, or --crop center); profile_view: OpenCV found it in profile."""
    import numpy as np

    rgb = np.ascontiguousarray(np.asarray(output.convert("RGB"), dtype=np.uint8))
    locator = _locator()
    # Detection on a DETECT_SIDE copy, and no 2x pass: faces from about 80 px of it are found (about 107 px
    # of a 512 output, 160 px of a 768 one), under lint's tiny_face (a quarter of the side); finding smaller
    # ones would double (full size) or triple (2x pass) the time of every photo.
    found = locator.locate(rgb, upsample=False, detect_side=DETECT_SIDE)
    face = None
    if cropped_face is not None:
        overlaps = [(_overlap(cropped_face, f.box), f) for f in found]
        best = max(overlaps, key=lambda pair: pair[0], default=None)
        face = best[1] if best is not None and best[0] >= _MATCH_OVERLAP else None
    elif found:
        face = found[0]
    if face is None:
        return FaceIdentity(faces=len(found), embedding=None, yaw=None, pose="profile" if profile_view else "unknown")
    embedding = locator.describe(rgb, face).astype(np.float32)
    yaw = yaw_degrees(face.landmarks)
    return FaceIdentity(
        faces=len(found),
        embedding=tuple(float(v) for v in embedding),
        yaw=round(yaw, 1),
        pose=pose_of(yaw),
    )


def yaw_degrees(landmarks: Sequence[tuple[float, float]]) -> float:
    """The head's turn from dlib's 5 landmarks (two corners of each eye, then the base of the nose)."""
    (ax, ay), (bx, by), (cx, cy), (dx, dy), (nx, ny) = landmarks[:5]
    eye1 = ((ax + bx) / 2, (ay + by) / 2)
    eye2 = ((cx + dx) / 2, (cy + dy) / 2)
    if eye2[0] < eye1[0]:
        eye1, eye2 = eye2, eye1
    span = math.hypot(eye2[0] - eye1[0], eye2[1] - eye1[1])
    if span < 1e-6:
        return 90.0
    ux, uy = (eye2[0] - eye1[0]) / span, (eye2[1] - eye1[1]) / span
    mid = ((eye1[0] + eye2[0]) / 2, (eye1[1] + eye2[1]) / 2)
    offset = ((nx - mid[0]) * ux + (ny - mid[1]) * uy) / (span / 2)
    return math.degrees(math.atan(offset / NOSE_DEPTH))


def pose_of(yaw: float) -> str:
    turn = abs(yaw)
    if turn < FRONTAL_MAX_DEGREES:
        return "frontal"
    return "three-quarter" if turn < THREE_QUARTER_MAX_DEGREES else "profile"


def geometric_median(points: NDArray[np.float64], iterations: int = 100) -> NDArray[np.float64]:
    """The point with the least sum of distances to `points` (Weiszfeld's iteration), numpy (n, d) -> (d,)."""
    import numpy as np

    centre = np.asarray(points.mean(axis=0), dtype=np.float64)
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(points - centre, axis=1), 1e-9)
        weights = 1.0 / distances
        moved = np.asarray((points * weights[:, None]).sum(axis=0) / weights.sum(), dtype=np.float64)
        if float(np.linalg.norm(moved - centre)) < 1e-7:
            return moved
        centre = moved
    return centre


def centre_distances(embeddings: Sequence[Sequence[float]]) -> list[float]:
    """Each descriptor's distance from the geometric median of the others."""
    import numpy as np

    points = np.asarray(embeddings, dtype=np.float64)
    return [
        float(np.linalg.norm(points[i] - geometric_median(np.delete(points, i, axis=0)))) for i in range(len(points))
    ]


def threshold(
    distances: Sequence[float], relative: float = RELATIVE, floor: float = FLOOR, ceiling: float = CEILING
) -> float:
    """Farther than this from the others' centre is somebody else: the set's median distance x relative, within
    [floor, ceiling]."""
    return min(ceiling, max(floor, relative * median(distances)))


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def judge(faces: Sequence[tuple[str, FaceIdentity | None]], model: str | None, note: str = "") -> IdentityCheck:
    """The set's check from each training image's (source, observation); model None: the check did not run."""
    if model is None:
        return IdentityCheck(model=None, note=note)
    poses = pose_counts([seen for _, seen in faces])
    with_face = [(source, seen.embedding) for source, seen in faces if seen is not None and seen.embedding is not None]
    if len(with_face) < MIN_FACES:
        return IdentityCheck(
            model=model,
            note=f"not judged ({len(with_face)} faces to compare, {MIN_FACES} needed to tell whose set it is)",
            judged=len(with_face),
            poses=poses,
        )
    distances = centre_distances([embedding for _, embedding in with_face])
    limit = threshold(distances)
    return IdentityCheck(
        model=model,
        note="",
        judged=len(with_face),
        median_distance=round(median(distances), 3),
        threshold=round(limit, 3),
        distances=tuple((source, round(d, 3)) for (source, _), d in zip(with_face, distances, strict=True)),
        other_person=tuple(source for (source, _), d in zip(with_face, distances, strict=True) if d > limit),
        poses=poses,
    )


def pose_counts(seen: Sequence[FaceIdentity | None]) -> tuple[tuple[str, int], ...]:
    counts = dict.fromkeys((*POSES, "unknown"), 0)
    for observation in seen:
        counts[observation.pose if observation is not None and observation.pose in counts else "unknown"] += 1
    return tuple(counts.items())


def one_angle(poses: Sequence[tuple[str, int]]) -> tuple[str, int, int] | None:
    """(pose, its count, photos with a known pose) when one pose holds ONE_ANGLE_SHARE of them, else None."""
    known = [(pose, n) for pose, n in poses if pose != "unknown"]
    total = sum(n for _, n in known)
    if total < MIN_FACES:
        return None
    pose, count = max(known, key=lambda pair: pair[1])
    return (pose, count, total) if count >= ONE_ANGLE_SHARE * total else None


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter_w * inter_h / max(1, smaller)
