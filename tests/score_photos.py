"""Real photos of people for score's tests, and the skips where they or dlib are absent.

face_recognition 1.3.0's sdist (PyPI) ships tests/test_images: obama.jpg, obama2.jpg and
obama3.jpg (three different photos of Barack Obama), obama_partial_face.jpg and
obama_partial_face2.jpg (a crop of obama.jpg cutting the face, and the same kind of crop
mirrored), 32bit.png (obama2.jpg as RGBA) and biden.jpg (Joe Biden). .ci/run downloads the archive
into .cache/test-photos; it is read here without being installed or unpacked. scikit-image (the
dev extra) ships astronaut.png (Eileen Collins) and coffee.png / chelsea.png (a cup, a cat: no face).
"""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE_NAME = "face_recognition-1.3.0.tar.gz"
MEMBER_DIR = "face_recognition-1.3.0/tests/test_images/"
DOWNLOAD = (
    "pip download --no-deps --no-binary :all: face_recognition==1.3.0 -d .cache/test-photos (the step in .ci/run)"
)


def archive() -> Path | None:
    for folder in (os.environ.get("KOHYA_WRAP_TEST_PHOTOS"), str(ROOT / ".cache" / "test-photos")):
        if folder and (Path(folder) / ARCHIVE_NAME).is_file():
            return Path(folder) / ARCHIVE_NAME
    return None


def skip_reason() -> str | None:
    from kohya_wrap.score import scorer_available

    if (problem := scorer_available()) is not None:
        return f"score's identity model is not installed here ({problem})"
    if archive() is None:
        return f"the test photos are absent: {ARCHIVE_NAME} is not in .cache/test-photos; get it with {DOWNLOAD}"
    if importlib.util.find_spec("skimage") is None:
        return "scikit-image (the dev extra) is not installed: it ships the astronaut and no-face photos"
    return None


needs_photos = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None,
    reason="score's identity model (dlib) is not installed: pip install 'kohya-wrap[score]'",
)


@cache
def photo_bytes(name: str) -> bytes:
    path = archive()
    assert path is not None
    with tarfile.open(path) as tar:
        member = tar.extractfile(MEMBER_DIR + name)
        assert member is not None
        return member.read()


def skimage_photo(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


def put(name: str, target: Path) -> Path:
    """Copy a test photo (an archive name, or skimage:NAME) to target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if name.startswith("skimage:"):
        target.write_bytes(skimage_photo(name.split(":", 1)[1]).read_bytes())
    else:
        target.write_bytes(photo_bytes(name))
    return target


def image(name: str):  # type: ignore[no-untyped-def]
    from PIL import Image

    if name.startswith("skimage:"):
        return Image.open(skimage_photo(name.split(":", 1)[1])).convert("RGB")
    return Image.open(io.BytesIO(photo_bytes(name))).convert("RGB")


# ../shared/photos/people/<name>/*.jpg: 39 photos of 8 public figures (its README says where from); never
# copied into the repository, read where the workplace has them.
PEOPLE = ROOT.parent / "shared" / "photos" / "people"


def people_skip_reason() -> str | None:
    if (problem := skip_reason()) is not None:
        return problem
    if not PEOPLE.is_dir():
        return f"the photos of people are absent: {PEOPLE} is not there (outside this workplace)"
    return None


needs_people = pytest.mark.skipif(people_skip_reason() is not None, reason=people_skip_reason() or "")


def person_photo(person: str, name: str) -> Path:
    return PEOPLE / person / f"{name}.jpg"
