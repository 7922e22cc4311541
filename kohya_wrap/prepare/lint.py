"""Checks on the prepared set. Measures are taken from each output image; findings only from records,
so a reused image is linted exactly like a freshly processed one.

Stated thresholds:
- count: RECOMMENDED_MIN..RECOMMENDED_MAX training images.
- near duplicates: a 64-bit difference hash (dHash: a 9x8 grey thumbnail, one bit per horizontal
  neighbour comparison); two outputs within NEAR_DUPLICATE_BITS differing bits are near duplicates, and
  near duplicates of near duplicates form one cluster, reported once (a burst of 40 is one finding).
  Exact duplicates (the same source bytes) never get this far: the later copy is skipped.
- blurred: the variance of the 4-neighbour Laplacian of the output's grey values, measured at 512 px on
  the face box (on the whole crop where there is none), below BLUR_THRESHOLD. For scale: a sharp
  portrait scores several hundred; a Gaussian blur of sigma 1 px drops it to about 70, 1.5 px to about 20.
- tiny face: the face box side under TINY_FACE_FRACTION of the crop side (under 128 px at 512).
- other person, one angle: the identity check's verdict (prepare.identity says how it decides).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from kohya_wrap.prepare import identity
from kohya_wrap.prepare.faces import FACES_UNAVAILABLE
from kohya_wrap.prepare.records import Box, Finding, IdentityCheck, OutputImage

RECOMMENDED_MIN = 50
RECOMMENDED_MAX = 100
NEAR_DUPLICATE_BITS = 6
BLUR_THRESHOLD = 50.0
SHARPNESS_SIDE = 512
TINY_FACE_FRACTION = 0.25


def dhash(image: Image.Image) -> str:
    import numpy as np

    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def reg_label(rel: str) -> str:
    """How findings name a regularization source file."""
    return f"[reg] {rel}" if rel else "[reg]"


def _label(image: OutputImage) -> str:
    return reg_label(image.source) if image.is_reg else image.source


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def sharpness(image: Image.Image, region: Box | None = None) -> float:
    """Laplacian variance at SHARPNESS_SIDE px of `image` (an output), within `region` (output pixels)."""
    import numpy as np

    grey = image.convert("L")
    factor = SHARPNESS_SIDE / grey.width
    if grey.width != SHARPNESS_SIDE:
        grey = grey.resize((SHARPNESS_SIDE, round(grey.height * factor)), Image.Resampling.BOX)
    if region is not None:
        left, top, right, bottom = (round(v * factor) for v in region)
        if right - left >= 8 and bottom - top >= 8:
            grey = grey.crop((left, top, right, bottom))
    a = np.asarray(grey, dtype=np.float32)
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return round(float(lap.var()), 2)


def lint(
    images: Sequence[OutputImage], detector: str | None, crop_mode: str, check: IdentityCheck | None = None
) -> list[Finding]:
    findings: list[Finding] = []
    train = [i for i in images if not i.is_reg]
    if len(train) < RECOMMENDED_MIN:
        findings.append(
            Finding(
                "count_low",
                "warning",
                "",
                f"{len(train)} training images; {RECOMMENDED_MIN}-{RECOMMENDED_MAX} are recommended for a likeness",
                "add more varied photos of the face (angles, light, expressions)",
            )
        )
    elif len(train) > RECOMMENDED_MAX:
        findings.append(
            Finding(
                "count_high",
                "warning",
                "",
                f"{len(train)} training images; {RECOMMENDED_MIN}-{RECOMMENDED_MAX} are recommended",
                "keep the best and most varied ones; more images make each epoch longer",
            )
        )
    findings.extend(_near_duplicate_clusters(images))
    for image in images:
        findings.extend(_image_findings(image, detector, crop_mode))
    if crop_mode == "face" and detector is None and train:
        # one finding for the set, not one per image: the cause and the fix are the same for all
        files = tuple(_label(i) for i in train)
        findings.append(
            Finding(
                "faces_unavailable",
                "warning",
                "",
                f"{FACES_UNAVAILABLE}; all {len(files)} training images were centre-cropped",
                "install OpenCV, or check the crops",
                files,
            )
        )
    if check is not None and train:
        findings.extend(_identity_findings(train, check))
    return findings


def other_person_words(distance: float, check: IdentityCheck, faces: int | None) -> str:
    """How far a face named as somebody else lies from the set, in words and numbers."""
    median = check.median_distance or 0.0
    times = f", {distance / median:.1f}x the set's typical {median:.2f}" if median > 0 else ""
    group = f"; {faces} faces in the photo, and prepare cropped on the largest" if (faces or 0) > 1 else ""
    return (
        f"the face looks like somebody other than the rest of the set: {distance:.2f} from the set's centre"
        f"{times} (this set's limit {check.threshold:.2f}){group}"
    )


def _identity_findings(train: Sequence[OutputImage], check: IdentityCheck) -> list[Finding]:
    """Photos of somebody else, the set's poses, and why the check did not run or named no one."""
    if check.model is None:
        return [
            Finding(
                "identity_unchecked", "info", "", check.note, "install the identity model (dlib) to have it checked"
            )
        ]
    found: list[Finding] = []  # too few faces to name anyone (check.note): the report's identity line says so
    named = set(check.other_person)
    for image in train:
        if image.source not in named or image.identity_distance is None:
            continue
        found.append(
            Finding(
                "other_person",
                "warning",
                _label(image),
                other_person_words(image.identity_distance, check, image.faces),
                "check who it shows; remove it, crop it to the person, or leave it out (--skip other-person)",
            )
        )
    single = identity.one_angle(check.poses)
    if single is not None:
        pose, count, total = single
        counts = ", ".join(f"{n} {p}" for p, n in check.poses if n)
        share = f"all {total}" if count == total else f"{count} of {total}"
        found.append(
            Finding(
                "one_angle",
                "warning",
                "",
                f"{share} photos with a known pose are {pose} ({counts}): the set is (nearly) all one angle",
                "add photos from other angles (frontal, three-quarter, profile), with different light and expressions",
            )
        )
    return found


def _near_duplicate_clusters(images: Sequence[OutputImage]) -> list[Finding]:
    """Near duplicates grouped by union-find over the pairs within NEAR_DUPLICATE_BITS, one finding per cluster."""
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    widest: dict[int, int] = {}
    pairs = []
    for i, a in enumerate(images):
        for j in range(i + 1, len(images)):
            b = images[j]
            if a.is_reg == b.is_reg and (bits := hamming(a.phash, b.phash)) <= NEAR_DUPLICATE_BITS:
                pairs.append((i, j, bits))
                parent[root(j)] = root(i)
    for i, _, bits in pairs:
        r = root(i)
        widest[r] = max(widest.get(r, 0), bits)
    clusters: dict[int, list[int]] = {}
    for i in range(len(images)):
        clusters.setdefault(root(i), []).append(i)
    out = []
    for r, members in clusters.items():
        if len(members) < 2:
            continue
        files = tuple(_label(images[i]) for i in members)
        shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        out.append(
            Finding(
                "near_duplicate",
                "warning",
                files[0],
                f"{len(files)} near-identical photos ({shown}; at most {widest[r]} of 64 hash bits differ)",
                "keep the best one or two; near duplicates weigh one look many times",
                files,
            )
        )
    return out


def _image_findings(image: OutputImage, detector: str | None, crop_mode: str) -> list[Finding]:
    found: list[Finding] = []
    if image.frames > 1:
        found.append(
            Finding(
                "animated",
                "info",
                _label(image),
                f"animated image ({image.frames} frames); the first frame was used",
                "nothing to do, or export the frame you want as a still",
            )
        )
    if image.sharpness < BLUR_THRESHOLD:
        found.append(
            Finding(
                "blurred",
                "warning",
                _label(image),
                f"looks blurred (sharpness {image.sharpness:g} < {BLUR_THRESHOLD:g})",
                "replace it with a sharper photo, or remove it (--skip blurred)",
            )
        )
    if crop_mode != "face" or image.is_reg:
        return found
    if detector is None:
        return found  # reported once for the set (lint)
    return found + _face_findings(image)


def _face_findings(image: OutputImage) -> list[Finding]:
    """A training image face-cropped with a detector: no face, several, or one too small in the crop."""
    found: list[Finding] = []
    if image.faces == 0:
        found.append(
            Finding(
                "no_face",
                "warning",
                _label(image),
                "no face found; centre-cropped",
                "check the crop, or remove the photo (--skip no-face)",
            )
        )
    elif image.faces is not None and image.faces > 1:
        found.append(
            Finding(
                "several_faces",
                "warning",
                _label(image),
                f"{image.faces} faces found; cropped around the largest",
                "check the crop is the right person, or use --skip multi-face",
            )
        )
    if image.face_box is not None:
        face_side = max(image.face_box[2] - image.face_box[0], image.face_box[3] - image.face_box[1])
        crop_side = image.crop_box[2] - image.crop_box[0]
        if face_side < TINY_FACE_FRACTION * crop_side:
            found.append(
                Finding(
                    "tiny_face",
                    "warning",
                    _label(image),
                    f"face is small in the crop ({face_side} px of {crop_side} px)",
                    "use a closer photo of the face",
                )
            )
    return found
