"""One source photo -> one staged output PNG. Runs in a pool process: takes and returns plain records."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.fsutil import atomic_write_bytes, sha256_bytes
from kohya_wrap.prepare import crop as crops
from kohya_wrap.prepare import faces, identity
from kohya_wrap.prepare.decode import BadImage, open_photo
from kohya_wrap.prepare.lint import dhash, sharpness
from kohya_wrap.prepare.records import Box, FaceIdentity, Finding

# Decode (and crop from) at least this many times the output size where the source has the pixels:
# LANCZOS then has real detail to filter. 1.5 lets a 24-MP JPEG decode at 1/4 scale (1000 px short
# side for a 512 output); bench/prepare.py measured 52.9 dB PSNR against a full decode + LANCZOS,
# against 55.7 dB at 1/2 scale (2.0), for about 40% less time per image.
OVERSAMPLE = 1.5
# A fixed level keeps outputs byte-identical across runs; 1 is 2-3x faster than zlib's default 6
# and files stay a size no one minds (outputs are 512 or 768 px).
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class Task:
    index: int
    path: str
    rel: str
    is_reg: bool
    size: int
    crop: str
    detector: str | None  # None: centre crop (asked for, or no OpenCV)
    allow_upscale: bool
    staged: str  # where the output PNG goes
    reusable: frozenset[str]  # source sha256s whose earlier output can be reused
    identity: bool = False  # look at the output with the identity model (training images, where dlib is installed)


@dataclass(frozen=True)
class Outcome:
    index: int
    status: str  # "made", "reuse" or "skipped"
    sha256: str | None = None
    nbytes: int = 0
    skip: Finding | None = None
    source_size: tuple[int, int] = (0, 0)
    crop_box: Box = (0, 0, 0, 0)
    face_box: Box | None = None
    faces: int | None = None
    output_sha256: str = ""
    phash: str = ""
    sharpness: float = 0.0
    frames: int = 1
    reuse_from: str = ""  # status "reuse": the earlier output, relative to the dataset folder
    identity: FaceIdentity | None = None


def init_worker() -> None:
    from kohya_wrap.prepare.sources import register_heif_opener

    register_heif_opener()


def process(task: Task) -> Outcome:
    try:
        data = Path(task.path).read_bytes()
    except OSError as e:
        return _skipped(task, "skipped_unreadable", f"cannot be read ({e.strerror or e})", "fix its permissions")
    sha = sha256_bytes(data)
    if sha in task.reusable:
        return Outcome(index=task.index, status="reuse", sha256=sha, nbytes=len(data))
    try:
        return _make(task, data, sha)
    except BadImage as e:
        return _skipped(task, e.code, e.message, e.action, sha, len(data))


def _skipped(task: Task, code: str, message: str, action: str, sha: str | None = None, nbytes: int = 0) -> Outcome:
    return Outcome(
        index=task.index,
        status="skipped",
        sha256=sha,
        nbytes=nbytes,
        skip=Finding(code=code, level="warning", file=task.rel, message=message, action=action),
    )


def _in_output(face_box: Box, crop_box: Box, factor: float) -> Box:
    """The face box in the output image's pixels: the crop's corner moved to 0, scaled to the output size."""
    left, top, right, bottom = face_box
    x0, y0 = crop_box[0], crop_box[1]
    return (
        round((left - x0) * factor),
        round((top - y0) * factor),
        round((right - x0) * factor),
        round((bottom - y0) * factor),
    )


def _make(task: Task, data: bytes, sha: str) -> Outcome:
    want = math.ceil(task.size * OVERSAMPLE)
    decoded = open_photo(data, min_short_side=want)
    width, height = decoded.source_size
    face_box: Box | None = None
    face_count: int | None = None
    profile_view = False
    if task.detector is not None:
        boxes, profile_view = faces.detect(decoded.image, decoded.scale)
        found = faces.significant(boxes)
        face_count = len(found)
        face_box = found[0] if found else None
    box = crops.face_crop(width, height, face_box, task.size) if face_box else crops.center_crop(width, height)
    side = box[2] - box[0]
    if side < task.size and not task.allow_upscale:
        raise BadImage(
            "skipped_too_small",
            f"{width}x{height}: its square crop is {side} px, smaller than {task.size} px",
            f"use a larger photo, or --allow-upscale to keep it (upscaled {side} -> {task.size})",
        )
    needed = min(side, want)
    if side / decoded.scale < needed - 1:
        # A small face crop from a reduced decode: decode again with enough pixels for it.
        decoded = open_photo(data, min_short_side=math.ceil(min(width, height) * needed / side))
    output = crops.crop_resize(decoded.image, box, decoded.scale, task.size)
    output.info = {}  # no ICC, EXIF, dpi or text chunks: the bytes depend on the pixels alone
    buffer = io.BytesIO()
    output.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    png = buffer.getvalue()
    atomic_write_bytes(Path(task.staged), png)
    face_in_output = _in_output(face_box, box, task.size / side) if face_box is not None else None
    seen = identity.observe(output, face_in_output, profile_view) if task.identity else None
    return Outcome(
        index=task.index,
        status="made",
        sha256=sha,
        nbytes=len(data),
        source_size=(width, height),
        crop_box=box,
        face_box=face_box,
        faces=face_count,
        output_sha256=sha256_bytes(png),
        phash=dhash(output),
        sharpness=sharpness(output, face_in_output),
        frames=decoded.frames,
        identity=seen,
    )
