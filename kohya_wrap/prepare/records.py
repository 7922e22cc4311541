"""The records `prepare` takes and gives. Those prepare.json holds (Finding, Subset, OutputImage with its
ImageIdentity) are codec Records whose fields are the file's keys; prepare.manifest writes and reads them."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kohya_wrap.codec import Record

CropMode = Literal["face", "center"]
Level = Literal["warning", "info"]
Box = tuple[int, int, int, int]  # left, top, right, bottom in source pixels (after EXIF orientation)

DEFAULT_SIZE = 512
SIZES = (512, 768)
DEFAULT_CAPTION = "photo of {token} {class}"
# What `prepare --skip` may leave out of the training set (documented in docs/prepare.md).
SKIP_KINDS = ("no-face", "multi-face", "blurred", "other-person")
POSES = ("frontal", "three-quarter", "profile")  # what pose coverage counts; a photo without landmarks is "unknown"


@dataclass(frozen=True)
class PrepareOptions:
    src_dir: Path
    dataset_dir: Path
    token: str
    class_word: str
    size: int = DEFAULT_SIZE
    crop: CropMode = "face"
    caption: str = DEFAULT_CAPTION
    repeats: int | None = None  # None: layout.DEFAULT_REPEATS, and `plan` may choose
    reg_dir: Path | None = None
    allow_upscale: bool = False
    skip_multiple_faces: bool = False  # the same as "multi-face" in skip (the older option)
    skip: frozenset[str] = frozenset()  # SKIP_KINDS: photos left out of the training set
    force: bool = False
    jobs: int | None = None  # None: every core
    identity: bool = True  # check who each photo shows and its pose where dlib is installed (bench turns it off)


class Finding(Record, frozen=True, kw_only=False, omit_defaults=True):
    """One lint result or skipped file: what is wrong with which file, and what to do."""

    code: str  # e.g. "no_face", "blurred", "skipped_corrupt"
    level: Level
    file: str  # the source path relative to its source folder, or "" for the whole set
    message: str
    action: str
    files: tuple[str, ...] = ()  # every file a grouped finding covers (a near-duplicate cluster), `file` first


@dataclass(frozen=True)
class FaceIdentity:
    """What dlib's identity model sees in one training output: the face prepare cropped on."""

    faces: int  # faces dlib found in the output image
    embedding: tuple[float, ...] | None  # the 128-number descriptor (float32 values); None: no dlib face there
    yaw: float | None  # degrees from the landmarks, the sign telling the side; None without landmarks
    pose: str  # one of POSES, or "unknown"


class ImageIdentity(Record, frozen=True):
    """A FaceIdentity as prepare.json holds it (the descriptor as base64 little-endian float32), with the face's
    distance from the set's centre where the check compared it."""

    faces: int
    pose: str
    yaw: float | None
    embedding: str | None
    distance: float | None = None

    @staticmethod
    def of(seen: FaceIdentity, distance: float | None) -> ImageIdentity:
        packed = None
        if seen.embedding is not None:
            packed = base64.b64encode(struct.pack(f"<{len(seen.embedding)}f", *seen.embedding)).decode("ascii")
        return ImageIdentity(faces=seen.faces, pose=seen.pose, yaw=seen.yaw, embedding=packed, distance=distance)

    def face(self) -> FaceIdentity:
        """What the identity model saw. ValueError when the descriptor is not base64 float32."""
        embedding = None
        if self.embedding is not None:
            raw = base64.b64decode(self.embedding, validate=True)
            embedding = struct.unpack(f"<{len(raw) // 4}f", raw)
        return FaceIdentity(faces=self.faces, embedding=embedding, yaw=self.yaw, pose=self.pose)


class IdentitySummary(Record, frozen=True):
    """The identity check as prepare.json holds it (without every photo's distance: its images hold them)."""

    model: str | None
    note: str
    judged: int = 0
    median_distance: float | None = None
    threshold: float | None = None
    other_person: tuple[str, ...] = ()
    poses: dict[str, int] = {}


@dataclass(frozen=True)
class IdentityCheck:
    """The set's identity check: whose face the training photos show, and from which angles."""

    model: str | None  # the identity model, or None when the check did not run
    note: str  # why it did not run, or why no one was named (too few faces); "" when it judged
    judged: int = 0  # photos whose face was compared with the others
    median_distance: float | None = None  # the set's typical distance from its centre
    threshold: float | None = None  # photos farther than this from the centre are somebody else
    distances: tuple[tuple[str, float], ...] = ()  # (source, distance from the others' centre)
    other_person: tuple[str, ...] = ()  # sources named as somebody else (also those --skip other-person left out)
    poses: tuple[tuple[str, int], ...] = ()  # POSES and "unknown" with their counts, over the training images

    def summary(self) -> IdentitySummary:
        return IdentitySummary(
            model=self.model,
            note=self.note,
            judged=self.judged,
            median_distance=self.median_distance,
            threshold=self.threshold,
            other_person=self.other_person,
            poses=dict(self.poses),
        )


class OutputImage(Record, frozen=True):
    """One prepared image, as recorded in prepare.json."""

    output: str  # relative to the dataset folder, "/"-separated
    caption_file: str
    caption: str
    is_reg: bool
    source: str  # relative to its source folder
    source_sha256: str
    source_bytes: int
    source_size: tuple[int, int]  # after EXIF orientation
    crop_box: Box
    face_box: Box | None
    faces: int | None  # None: detection did not run
    output_sha256: str
    phash: str  # 64-bit difference hash, hex
    sharpness: float
    frames: int
    identity: ImageIdentity | None = None  # None: the identity check did not run (no dlib, or a reg image)

    @property
    def identity_distance(self) -> float | None:
        """From the set's centre, where the identity check compared this face."""
        return self.identity.distance if self.identity is not None else None


class Subset(Record, frozen=True):
    dir: str  # relative to the dataset folder
    is_reg: bool
    repeats: int
    class_tokens: str
    images: int


@dataclass(frozen=True)
class PrepareResult:
    dataset_dir: Path
    manifest_path: Path
    subsets: tuple[Subset, ...]
    images: tuple[OutputImage, ...]
    findings: tuple[Finding, ...]
    processed: int
    reused: int
    skipped: int
    removed: int  # outputs of an earlier run not in the dataset any more (source gone, or left out now)
    face_detection: str  # the detector used, or why none was
    identity: IdentityCheck = IdentityCheck(model=None, note="")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "warning")

    def record(self) -> PrepareRecord:
        """What `prepare --json` prints (and `train --dry-run --json` in part)."""
        return PrepareRecord(
            dataset_dir=self.dataset_dir,
            manifest=self.manifest_path,
            subsets=self.subsets,
            counts=PrepareCounts(
                images=sum(1 for i in self.images if not i.is_reg),
                reg_images=sum(1 for i in self.images if i.is_reg),
                processed=self.processed,
                reused=self.reused,
                skipped=self.skipped,
                removed=self.removed,
                warnings=len(self.warnings),
            ),
            face_detection=self.face_detection,
            identity=self.identity.summary(),
            findings=self.findings,
            images=self.images,
        )


class PrepareCounts(Record, frozen=True):
    images: int
    reg_images: int
    processed: int
    reused: int
    skipped: int
    removed: int
    warnings: int


class PrepareRecord(Record, frozen=True):
    """A PrepareResult as `prepare --json` prints it."""

    dataset_dir: Path
    manifest: Path
    subsets: tuple[Subset, ...]
    counts: PrepareCounts
    face_detection: str
    identity: IdentitySummary
    findings: tuple[Finding, ...]
    images: tuple[OutputImage, ...]
