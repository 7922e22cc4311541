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
from typing import Any

from kohya_wrap import __version__
from kohya_wrap.errors import DatasetError
from kohya_wrap.fsutil import load_json, sha256_bytes
from kohya_wrap.prepare.records import Finding, IdentityCheck, OutputImage, Subset

MANIFEST_NAME = "prepare.json"
SCHEMA = 1
# Raise when a change to decoding, cropping or resizing changes output pixels: old outputs are then redone.
PIPELINE_VERSION = 1
IMAGE_KEYS = ("size", "crop", "allow_upscale")


@dataclass(frozen=True)
class Reusable:
    output: Path  # the earlier output file
    entry: dict[str, Any]


def image_key(parameters: dict[str, Any], detector: str | None, identity_model: str | None = None) -> str:
    """What an output's pixels and its record depend on besides the source bytes (the identity model's
    observation is part of the record: outputs recorded without it, or by another model, are redone)."""
    key = {k: parameters[k] for k in IMAGE_KEYS}
    key["pipeline"] = PIPELINE_VERSION
    key["detector"] = detector if parameters["crop"] == "face" else None
    if identity_model is not None:
        key["identity"] = identity_model
    return sha256_bytes(json.dumps(key, sort_keys=True).encode())


def load(dataset_dir: Path) -> dict[str, Any] | None:
    path = dataset_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = load_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"{path} cannot be read as a prepare manifest: {e}",
            "Remove it, or run prepare with --force to rebuild the dataset folder.",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(
            f"{path} is not a prepare manifest (no image list).",
            "Remove it, or run prepare with --force to rebuild the dataset folder.",
        )
    return data


def reusable(manifest: dict[str, Any] | None, dataset_dir: Path, key: str) -> dict[tuple[bool, str], Reusable]:
    """(is_reg, source sha256) -> an earlier output made with image key `key` (checked later against its file)."""
    if manifest is None or manifest.get("schema") != SCHEMA or manifest.get("image_key") != key:
        return {}
    found: dict[tuple[bool, str], Reusable] = {}
    for entry in manifest["images"]:
        try:
            found[(bool(entry["is_reg"]), str(entry["source_sha256"]))] = Reusable(dataset_dir / entry["output"], entry)
        except (KeyError, TypeError):
            continue
    return found


def build(
    *,
    parameters: dict[str, Any],
    image_key_value: str,
    detector: str,
    src_dir: Path,
    reg_dir: Path | None,
    subsets: list[Subset],
    images: list[OutputImage],
    skipped: list[Finding],
    findings: list[Finding],
    identity: IdentityCheck,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kohya_wrap_version": __version__,
        "parameters": parameters,
        "image_key": image_key_value,
        "face_detection": detector,
        "identity": identity.to_json(),
        "source_dir": str(src_dir),
        "reg_source_dir": str(reg_dir) if reg_dir is not None else None,
        "subsets": [s.to_json() for s in subsets],
        "images": [i.to_json() for i in images],
        "skipped": [f.to_json() for f in skipped],
        "findings": [f.to_json() for f in findings],
    }
