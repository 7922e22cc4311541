"""A prepared dataset folder (written by `prepare`, layout in docs/dataset.md), read into frozen records for `plan`."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.errors import DatasetError
from kohya_wrap.fsutil import sha256_file
from kohya_wrap.prepare import manifest
from kohya_wrap.sdscripts.layout import IMAGE_EXTENSIONS, REG_DIR, TRAIN_DIR, parse_subset_dir_name, subset_dir_name

MANIFEST = manifest.MANIFEST_NAME
# prepare's staging folder (prepare/pipeline.py: STAGING_NAME): there while a prepare runs, and after one
# that stopped before its manifest; removed once prepare.json is written.
STAGING = ".kohya-wrap-prepare"


@dataclass(frozen=True)
class Subset:
    dir: Path
    images: int
    repeats: int  # as the folder name says
    class_tokens: str
    is_reg: bool
    size: tuple[int, int] | None  # (width, height) of the first image, from its header; None if unreadable


@dataclass(frozen=True)
class Dataset:
    dir: Path
    subsets: tuple[Subset, ...]
    manifest_sha256: str | None
    repeats_explicit: bool  # prepare was given --repeats: plan keeps them and chooses only epochs
    token: str | None  # from prepare.json parameters
    class_word: str | None
    size: int | None  # prepare's target size

    @property
    def train_subsets(self) -> tuple[Subset, ...]:
        return tuple(s for s in self.subsets if not s.is_reg)

    @property
    def train_images(self) -> int:
        return sum(s.images for s in self.train_subsets)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header. PNG is read directly: importing PIL's PNG plugin costs
    more than the rest of planning."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    from PIL import Image  # only the header is read

    try:
        with Image.open(path) as im:
            width, height = im.size
            return int(width), int(height)
    except OSError:
        return None


def _scan(base: Path, is_reg: bool) -> list[Subset]:
    out: list[Subset] = []
    if not base.is_dir():
        return out
    for child in sorted(base.iterdir()):
        if not child.is_dir():
            continue
        parsed = parse_subset_dir_name(child.name)
        if parsed is None or parsed.repeats < 1:
            example = subset_dir_name(10, "ohwx man" if not is_reg else "man")
            raise DatasetError(
                f"{child}: folder name is not '<repeats>_<class tokens>' (for example '{example}')",
                "run `kohya-wrap prepare` to make a dataset folder, or rename the folder",
            )
        images = sorted(
            p for p in child.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not images:
            raise DatasetError(
                f"{child}: no images ({', '.join(IMAGE_EXTENSIONS)})",
                "remove the empty folder or run `kohya-wrap prepare` again",
            )
        out.append(
            Subset(
                dir=child.resolve(),
                images=len(images),
                repeats=parsed.repeats,
                class_tokens=parsed.class_tokens,
                is_reg=is_reg,
                size=_image_size(images[0]),
            )
        )
    return out


def _prepare_hint(root: Path) -> str:
    """A folder of photos is prepared into a new dataset folder, never into itself (prepare never touches photos)."""
    import shlex

    words = ["--token", "TOKEN", "--class", "CLASS"]  # both required by prepare
    meaning = " (TOKEN: a rare word that will mean this face, e.g. ohwx; CLASS: man, woman, person, ...)"
    photos = any(p.is_file() and p.suffix.lower() in _PHOTO_SUFFIXES for p in root.iterdir())
    if photos:
        name = root.resolve().name or "dataset"
        command = shlex.join(["kohya-wrap", "prepare", str(root), "-o", f"data/{name}", *words])
        return f"it holds photos: prepare them into a dataset folder first, then plan that: {command}{meaning}"
    return "run " + shlex.join(["kohya-wrap", "prepare", "PHOTOS", "-o", str(root), *words]) + " first" + meaning


# What a folder of photos holds (a hint only: prepare's own list of readable formats decides).
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp", ".tif", ".tiff")


def scan_dataset(dataset_dir: str | Path) -> Dataset:
    """Read DATASET_DIR/img/<repeats>_<tokens>/, DATASET_DIR/reg/... and prepare.json."""
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist", "give the folder `kohya-wrap prepare` wrote")
    if not (root / TRAIN_DIR).is_dir():
        raise DatasetError(f"{root} has no {TRAIN_DIR}/ folder: it is not a prepared dataset", _prepare_hint(root))
    if (root / STAGING).is_dir():
        state = "holds" if (root / MANIFEST).is_file() else "has no prepare.json and holds"
        raise DatasetError(
            f"{root} {state} {STAGING}/: a prepare is writing it, or prepare did not finish",
            "wait for the prepare to end, or run the same `kohya-wrap prepare` again to finish the dataset",
        )
    train = _scan(root / TRAIN_DIR, is_reg=False)
    if not train:
        raise DatasetError(
            f"{root / TRAIN_DIR} has no '<repeats>_<class tokens>' folders with images",
            "run `kohya-wrap prepare` to fill it",
        )
    reg = _scan(root / REG_DIR, is_reg=True)
    params = manifest.read_parameters(root)
    sha = sha256_file(root / MANIFEST) if params is not None else None
    params = params or manifest.PrepareParameters()
    return Dataset(
        dir=root.resolve(),
        subsets=tuple(train + reg),
        manifest_sha256=sha,
        repeats_explicit=params.repeats_explicit,
        token=params.token,
        class_word=params.class_word,
        size=params.size,
    )
