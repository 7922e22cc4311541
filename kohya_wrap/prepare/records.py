"""The records `prepare` takes and gives: plain frozen dataclasses, no behaviour beyond to_json()."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CropMode = Literal["face", "center"]
Level = Literal["warning", "info"]
Box = tuple[int, int, int, int]  # left, top, right, bottom in source pixels (after EXIF orientation)

DEFAULT_SIZE = 512
SIZES = (512, 768)
DEFAULT_CAPTION = "photo of {token} {class}"
# What `prepare --skip` may leave out of the training set (documented in docs/prepare.md).
SKIP_KINDS = ("no-face", "multi-face", "blurred")


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


@dataclass(frozen=True)
class Finding:
    """One lint result or skipped file: what is wrong with which file, and what to do."""

    code: str  # e.g. "no_face", "blurred", "skipped_corrupt"
    level: Level
    file: str  # the source path relative to its source folder, or "" for the whole set
    message: str
    action: str
    files: tuple[str, ...] = ()  # every file a grouped finding covers (a near-duplicate cluster), `file` first

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "level": self.level,
            "file": self.file,
            "message": self.message,
            "action": self.action,
        }
        if self.files:
            out["files"] = list(self.files)
        return out


@dataclass(frozen=True)
class OutputImage:
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
    reused: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "caption_file": self.caption_file,
            "caption": self.caption,
            "is_reg": self.is_reg,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "source_bytes": self.source_bytes,
            "source_size": list(self.source_size),
            "crop_box": list(self.crop_box),
            "face_box": list(self.face_box) if self.face_box is not None else None,
            "faces": self.faces,
            "output_sha256": self.output_sha256,
            "phash": self.phash,
            "sharpness": self.sharpness,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class Subset:
    dir: str  # relative to the dataset folder
    is_reg: bool
    repeats: int
    class_tokens: str
    images: int

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "is_reg": self.is_reg,
            "repeats": self.repeats,
            "class_tokens": self.class_tokens,
            "images": self.images,
        }


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

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "warning")

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_dir": str(self.dataset_dir),
            "manifest": str(self.manifest_path),
            "subsets": [s.to_json() for s in self.subsets],
            "counts": {
                "images": sum(1 for i in self.images if not i.is_reg),
                "reg_images": sum(1 for i in self.images if i.is_reg),
                "processed": self.processed,
                "reused": self.reused,
                "skipped": self.skipped,
                "removed": self.removed,
                "warnings": len(self.warnings),
            },
            "face_detection": self.face_detection,
            "findings": [f.to_json() for f in self.findings],
            "images": [i.to_json() for i in self.images],
        }
