"""DATASET_DIR/prepare.json: what prepare made, from what, with which parameters.

It holds no timestamps and no absolute paths besides the source folders, so the same sources and
parameters give the same file. `plan` records its sha256. Its image entries are also the reuse index
of the next run: an output is reused when its source's sha256 and the image parameters (IMAGE_KEYS
plus the pipeline version and the face detector) are unchanged and the output file still has the
recorded sha256. Captions and folder names are cheap and are always written anew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from kohya_wrap import codec
from kohya_wrap.codec import Record
from kohya_wrap.errors import DatasetError
from kohya_wrap.fsutil import sha256_bytes
from kohya_wrap.prepare.records import Finding, IdentitySummary, OutputImage, Subset

MANIFEST_NAME = "prepare.json"
SCHEMA = 1
# Raise when a change to decoding, cropping or resizing changes output pixels: old outputs are then redone.
PIPELINE_VERSION = 1
IMAGE_KEYS = ("size", "crop", "allow_upscale")
_REBUILD = "Remove it, or run prepare with --force to rebuild the dataset folder."


class PrepareParameters(Record, frozen=True):
    """What prepare was asked (prepare.json `parameters`); `plan` reads token, class, size and repeats_explicit.
    Every field has a default: a hand-written prepare.json may give only some."""

    token: str | None = None
    class_word: str | None = msgspec.field(default=None, name="class")
    size: int | None = None
    crop: Literal["face", "center"] = "face"
    repeats: int | None = None
    repeats_explicit: bool = False  # prepare was given --repeats: plan keeps them and chooses only epochs
    caption: str | None = None
    allow_upscale: bool = False
    skip_multiple_faces: bool = False
    skip: tuple[str, ...] = ()
    reg: bool = False


class PrepareManifest(Record, frozen=True):
    """DATASET_DIR/prepare.json."""

    schema: int
    kohya_wrap_version: str
    parameters: PrepareParameters
    image_key: str
    face_detection: str
    identity: IdentitySummary
    source_dir: str
    reg_source_dir: str | None
    subsets: tuple[Subset, ...]
    images: tuple[OutputImage, ...]
    skipped: tuple[Finding, ...]
    findings: tuple[Finding, ...]


class _ParametersOnly(Record, frozen=True):
    parameters: PrepareParameters = PrepareParameters()


@dataclass(frozen=True)
class Reusable:
    output: Path  # the earlier output file
    entry: OutputImage


def image_key(parameters: PrepareParameters, detector: str | None, identity_model: str | None = None) -> str:
    """What an output's pixels and its record depend on besides the source bytes (the identity model's
    observation is part of the record: outputs recorded without it, or by another model, are redone)."""
    key: dict[str, object] = {
        "size": parameters.size,
        "crop": parameters.crop,
        "allow_upscale": parameters.allow_upscale,
    }
    key["pipeline"] = PIPELINE_VERSION
    key["detector"] = detector if parameters.crop == "face" else None
    if identity_model is not None:
        key["identity"] = identity_model
    return sha256_bytes(json.dumps(key, sort_keys=True).encode())


def load(dataset_dir: Path) -> PrepareManifest | None:
    """DATASET_DIR/prepare.json as prepare wrote it, None when there is none; DatasetError when it cannot be read."""
    path = dataset_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return codec.read(path, PrepareManifest, what="the dataset's prepare manifest", hint=_REBUILD)
    except codec.RecordError as e:
        raise DatasetError(f"{e.message} (it cannot be read as a prepare manifest)", _REBUILD) from None


def read_parameters(dataset_dir: Path) -> PrepareParameters | None:
    """The parameters of DATASET_DIR/prepare.json (what `plan` needs of it), None when there is none.
    DatasetError naming the file and field when it is not a prepare manifest."""
    path = dataset_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return codec.read(path, _ParametersOnly, what="the dataset's prepare manifest").parameters
    except codec.RecordError as e:
        raise DatasetError(f"{e.message} (it is not a prepare manifest)", "run `kohya-wrap prepare` again") from None


def reusable(manifest: PrepareManifest | None, dataset_dir: Path, key: str) -> dict[tuple[bool, str], Reusable]:
    """(is_reg, source sha256) -> an earlier output made with image key `key` (checked later against its file)."""
    if manifest is None or manifest.schema != SCHEMA or manifest.image_key != key:
        return {}
    return {(e.is_reg, e.source_sha256): Reusable(dataset_dir / e.output, e) for e in manifest.images}


def write(dataset_dir: Path, document: PrepareManifest) -> Path:
    """The one writer of DATASET_DIR/prepare.json (atomic: written last, it says the dataset is complete)."""
    path = dataset_dir / MANIFEST_NAME
    codec.write(path, document)
    return path
