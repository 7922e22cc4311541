"""Face detection for face-centred crops: OpenCV's Haar cascades, a core dependency (opencv-python-headless).

Why this detector: it must work offline from what a package ships, with no model download at run
time. OpenCV 4.x wheels (opencv-python-headless<5, also what sd-scripts' own requirements install)
bundle the Haar cascade XML files under cv2.data.haarcascades; OpenCV 5 no longer ships them, hence
the pin. Haar cascades are fast on a small copy (longest side DETECT_SIDE px, about 0.1-0.2 s),
deterministic and need no GPU; they find frontal faces well and profiles less well, which is what a
likeness dataset mostly holds. Heavier detectors (DNN weights in a wheel) would weigh down the core
install for little gain here. cv2 is imported only when detection runs; without it (a broken install)
every image is centre-cropped and reported once (FACES_UNAVAILABLE), never an error.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import TYPE_CHECKING

from PIL import Image

from kohya_wrap.prepare.records import Box

if TYPE_CHECKING:
    import cv2

DETECT_SIDE = 640
FACES_UNAVAILABLE = "face detection unavailable (OpenCV is missing): pip install 'opencv-python-headless>=4.8,<5'"
_FRONTAL = "haarcascade_frontalface_default.xml"
_PROFILE = "haarcascade_profileface.xml"
# Smallest face searched for, as a fraction of the small copy's short side.
_MIN_FACE_FRACTION = 0.05
# Other faces count (for "several faces") from this fraction of the largest face's side; smaller
# detections are background people or the cascade's false positives on texture.
SIGNIFICANT_FACE = 0.4


def detector_name() -> str | None:
    """What detects faces here (it is part of the manifest's reuse key), or None without OpenCV."""
    if importlib.util.find_spec("cv2") is None:
        return None
    try:
        import cv2
    except ImportError:  # e.g. opencv-python (not -headless) on a server without libGL
        return None
    return f"opencv-haar {cv2.__version__}"


@cache
def _cascades() -> tuple[cv2.CascadeClassifier, cv2.CascadeClassifier]:
    import cv2

    # Parallelism comes from prepare's process pool; OpenCV's own threads would only contend.
    cv2.setNumThreads(1)
    cascades = cv2.data.haarcascades  # type: ignore[attr-defined]  # not in OpenCV's type stubs
    frontal = cv2.CascadeClassifier(cascades + _FRONTAL)
    profile = cv2.CascadeClassifier(cascades + _PROFILE)
    if frontal.empty() or profile.empty():
        raise RuntimeError(f"OpenCV's Haar cascades are missing from {cascades}")
    return frontal, profile


def detect(image: Image.Image, source_scale: float = 1.0) -> tuple[list[Box], bool]:
    """Faces in `image`, largest first, as boxes in source pixels (image pixels x source_scale), and whether
    the profile cascade found them (no frontal face was found): a side view."""
    import numpy as np

    frontal, profile = _cascades()
    small = image.convert("L")
    shrink = max(small.size) / DETECT_SIDE
    if shrink > 1:
        small = small.resize(
            (max(1, round(small.width / shrink)), max(1, round(small.height / shrink))), Image.Resampling.BOX
        )
    else:
        shrink = 1.0
    # No histogram equalisation: on a photo with a large flat area it wipes out the face's contrast.
    grey = np.asarray(small)
    side = max(24, round(min(grey.shape) * _MIN_FACE_FRACTION))
    # minNeighbors 8, not OpenCV's 3: on test photos real faces gathered 15-40 overlapping hits, the
    # cascade's false positives (shirt patches, textures) 4-6.
    found = [
        tuple(int(v) for v in box)
        for box in frontal.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=8, minSize=(side, side))
    ]
    profile_view = not found
    if not found:
        # Coarser steps for the fallback: it runs twice (the profile cascade finds faces turned one way
        # only, the mirror image the other) and only on photos without a frontal face.
        found = [
            tuple(int(v) for v in box)
            for box in profile.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=6, minSize=(side, side))
        ]
        width = grey.shape[1]
        mirrored = profile.detectMultiScale(
            np.ascontiguousarray(grey[:, ::-1]), scaleFactor=1.2, minNeighbors=6, minSize=(side, side)
        )
        found += [(width - int(x) - int(w), int(y), int(w), int(h)) for x, y, w, h in mirrored]
    factor = shrink * source_scale
    boxes = [
        (round(x * factor), round(y * factor), round((x + w) * factor), round((y + h) * factor)) for x, y, w, h in found
    ]
    kept: list[Box] = []
    for box in sorted(set(boxes), key=lambda b: (-_area(b), b)):
        # One face seen by both profile passes, or twice by one cascade, is still one face.
        if all(_overlap(box, other) < 0.3 for other in kept):
            kept.append(box)
    return kept, profile_view and bool(kept)


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / max(1, min(_area(a), _area(b)))


def significant(boxes: list[Box]) -> list[Box]:
    """The faces that count: the largest, and those at least SIGNIFICANT_FACE of its side."""
    if not boxes:
        return []
    largest = max(boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
    return [b for b in boxes if max(b[2] - b[0], b[3] - b[1]) >= SIGNIFICANT_FACE * largest]
