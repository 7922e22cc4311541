"""score on ../shared/photos (8 people; skipped where absent): new photos of a person are not copies, copies
are, painted or not, and the person's own threshold (tests/score_photos.py says where the photos come from)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps
from score_photos import needs_people, person_photo

from kohya_wrap.score import score_images

pytestmark = needs_people


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    from kohya_wrap.faceid import IdentityModel

    return IdentityModel()


def photo(person: str, name: str) -> Image.Image:
    from kohya_wrap.faceid import load_rgb

    return Image.fromarray(load_rgb(person_photo(person, name)))


def painted(img: Image.Image) -> Image.Image:
    """A copy as a diffusion model paints it: flattened by an edge-preserving filter, fewer colours."""
    import cv2
    import numpy as np

    flat = cv2.edgePreservingFilter(np.asarray(img.convert("RGB")), flags=1, sigma_s=60, sigma_r=0.6)
    return ImageOps.posterize(Image.fromarray(flat), 4)


def stylized(img: Image.Image) -> Image.Image:
    """A copy as a painting: OpenCV's stylization flattens the shading and draws the edges in ink."""
    import cv2
    import numpy as np

    bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., ::-1])
    return Image.fromarray(cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)[..., ::-1].copy())


def recompressed(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.resize((img.width // 2, img.height // 2)).save(buf, "JPEG", quality=30)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def refs(tmp_path: Path, person: str, names: tuple[str, ...]) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.jpg").write_bytes(person_photo(person, name).read_bytes())
    return folder


def test_new_photos_of_the_person_are_not_copies_but_copies_are_painted_or_not(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    folder = refs(tmp_path, "zuckerberg", ("img13", "img15", "img58"))
    samples = tmp_path / "s"
    (samples / "step-500").mkdir(parents=True)
    photo("zuckerberg", "img57").save(samples / "step-500" / "new-photo.png")
    ImageEnhance.Color(photo("zuckerberg", "img57")).enhance(0.2).save(samples / "step-500" / "new-grey.png")
    (samples / "step-750").mkdir()
    recompressed(ImageOps.mirror(photo("zuckerberg", "img13"))).save(samples / "step-750" / "mirrored.png")
    painted(photo("zuckerberg", "img58")).save(samples / "step-750" / "painted.png")
    report = score_images(folder, samples, use_cache=False, model=model)
    images = {i.file: i for c in report.checkpoints for i in c.images}
    assert images["new-photo.png"].copy_of is None and images["new-photo.png"].match
    assert images["new-grey.png"].copy_of is None
    assert images["mirrored.png"].copy_of == "img13.jpg"
    assert images["painted.png"].copy_of == "img58.jpg"
    assert [c.is_copying() for c in report.checkpoints] == [False, True]
    assert report.recommended is not None and report.recommended.step == 500
    assert report.spread is not None and report.match_distance <= 0.6  # three photos: the person's own threshold


def test_a_stylized_copy_is_a_copy_because_its_views_are_also_tried_rescaled(  # type: ignore[no-untyped-def]
    tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ink around the eyes moves dlib's landmarks: the copy's aligned views come out a few percent larger
    # or smaller than the photo's (0.74 at the photo's own scale, under the copy threshold).
    from kohya_wrap.score import scoring

    folder = refs(tmp_path, "aniston", ("img3", "img53", "img55"))
    samples = tmp_path / "s"
    (samples / "step-500").mkdir(parents=True)
    stylized(photo("aniston", "img56")).save(samples / "step-500" / "painted-new.png")
    (samples / "step-750").mkdir()
    stylized(photo("aniston", "img3")).save(samples / "step-750" / "painted-copy.png")
    images = {
        i.file: i for c in score_images(folder, samples, use_cache=False, model=model).checkpoints for i in c.images
    }
    assert images["painted-copy.png"].copy_of == "img3.jpg"
    assert images["painted-new.png"].copy_of is None
    monkeypatch.setattr(scoring, "COPY_SCALES", ())
    images = {
        i.file: i for c in score_images(folder, samples, use_cache=False, model=model).checkpoints for i in c.images
    }
    assert images["painted-copy.png"].copy_of is None


def test_a_look_alike_is_not_the_person(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    # The README names jolie and perry as this set's hardest pair.
    folder = refs(tmp_path, "jolie", ("img1", "img2", "img4", "img5"))
    samples = tmp_path / "s"
    for step, (person, name) in enumerate((("perry", "img26"), ("perry", "img42"), ("jolie", "img10")), start=1):
        (samples / f"step-{step * 250}").mkdir(parents=True)
        photo(person, name).save(samples / f"step-{step * 250}" / f"{person}-{name}.png")
    report = score_images(folder, samples, use_cache=False, model=model)
    assert [c.matches for c in report.checkpoints] == [0, 0, 1]
    assert report.recommended is not None and report.recommended.step == 750
