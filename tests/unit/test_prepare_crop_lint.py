"""crop geometry and the lint measures and findings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kohya_wrap.prepare import crop, lint
from kohya_wrap.prepare.records import OutputImage


def test_center_crop() -> None:
    assert crop.center_crop(6000, 4000) == (1000, 0, 5000, 4000)
    assert crop.center_crop(3000, 4001) == (0, 500, 3000, 3500)
    assert crop.center_crop(512, 512) == (0, 0, 512, 512)


@pytest.mark.parametrize(
    "face", [(100, 100, 300, 300), (3700, 2600, 3950, 2900), (2000, 1500, 2400, 1900), (0, 0, 150, 150)]
)
def test_face_crop_holds_the_face_with_headroom_and_stays_inside(face) -> None:
    width, height, target = 4000, 3000, 512
    left, top, right, bottom = box = crop.face_crop(width, height, face, target)
    assert right - left == bottom - top
    assert left >= 0 and top >= 0 and right <= width and bottom <= height
    assert left <= face[0] and top <= face[1] and face[2] <= right and face[3] <= bottom, box
    side = right - left
    face_side = face[2] - face[0]
    assert side >= min(round(face_side * crop.HEAD_AND_SHOULDERS), min(width, height))
    if top > 0 and bottom < height:  # not pushed by an image edge: more room below (shoulders) than above
        assert face[1] - top < bottom - face[3]


def test_face_crop_grows_to_the_output_size_instead_of_upscaling() -> None:
    box = crop.face_crop(2000, 1500, (1000, 700, 1060, 760), 512)
    assert box[2] - box[0] == 512
    assert crop.face_crop(400, 300, (100, 100, 160, 160), 512) == (0, 0, 300, 300)


def test_crop_resize_uses_source_coordinates() -> None:
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, 100:] = 255
    im = Image.fromarray(a)  # a 400x200 source decoded at half scale
    right_half = crop.crop_resize(im, (200, 0, 400, 200), 2.0, 64)
    # LANCZOS reads a few pixels past the box edge (black there); inside, all white.
    assert right_half.size == (64, 64) and np.asarray(right_half)[:, 2:].min() >= 250


def noisy(seed: int, size: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (16, 16, 3), np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8))


def test_dhash_finds_near_duplicates_only() -> None:
    a, b = noisy(1), noisy(2)
    near = a.filter(ImageFilter.GaussianBlur(1)).point(lambda v: min(255, v + 6))
    assert lint.hamming(lint.dhash(a), lint.dhash(near)) <= lint.NEAR_DUPLICATE_BITS
    assert lint.hamming(lint.dhash(a), lint.dhash(b)) > 16
    assert len(lint.dhash(a)) == 16


def test_sharpness_threshold_separates_sharp_from_blurred() -> None:
    sharp = noisy(3)
    assert lint.sharpness(sharp) > 4 * lint.BLUR_THRESHOLD
    assert lint.sharpness(sharp.filter(ImageFilter.GaussianBlur(2))) < lint.BLUR_THRESHOLD
    # Measured at 512 px whatever the output size, and within a region when given.
    assert lint.sharpness(sharp.resize((768, 768), Image.Resampling.LANCZOS)) > lint.BLUR_THRESHOLD
    flat_left = Image.fromarray(np.hstack([np.full((512, 256, 3), 90, np.uint8), np.asarray(sharp)[:, 256:]]))
    assert lint.sharpness(flat_left, (0, 0, 256, 512)) == 0.0


def record(
    source: str,
    *,
    phash: str = "0" * 16,
    sharpness: float = 500.0,
    faces: int | None = 1,
    face_box=(200, 200, 400, 400),
    crop_box=(0, 0, 800, 800),
    is_reg: bool = False,
    frames: int = 1,
) -> OutputImage:
    return OutputImage(
        output=f"img/1_x y/{source}.png",
        caption_file="",
        caption="x y",
        is_reg=is_reg,
        source=source,
        source_sha256=source,
        source_bytes=1,
        source_size=(800, 800),
        crop_box=crop_box,
        face_box=face_box,
        faces=faces,
        output_sha256="",
        phash=phash,
        sharpness=sharpness,
        frames=frames,
    )


def by_code(findings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f.file)
    return out


def test_lint_findings() -> None:
    images = [
        record("ok", phash="ffffffffffffffff"),
        record("near", phash="fffffffffffffff0"),
        record("blurry", phash="0f0f0f0f0f0f0f0f", sharpness=10.0),
        record("noface", phash="00000000ffffffff", faces=0, face_box=None),
        record("two", phash="ff00ff00ff00ff00", faces=2),
        record("tiny", phash="00ff00ff00ff00ff", face_box=(10, 10, 60, 60), crop_box=(0, 0, 512, 512)),
        record("anim", phash="f0f0f0f0f0f0f0f0", frames=3),
    ]
    found = by_code(lint.lint(images, "opencv-haar 4.10.0", "face"))
    assert found == {
        "count_low": [""],
        "near_duplicate": ["ok"],
        "blurred": ["blurry"],
        "no_face": ["noface"],
        "several_faces": ["two"],
        "tiny_face": ["tiny"],
        "animated": ["anim"],
    }
    levels = {f.code: f.level for f in lint.lint(images, "x", "face")}
    assert levels["animated"] == "info" and levels["blurred"] == "warning"


def test_lint_without_detector_and_in_centre_mode() -> None:
    images = [
        record(f"i{n}", phash=f"{n:016x}" if n % 2 else f"{~n & 0xFFFFFFFFFFFFFFFF:016x}", faces=None, face_box=None)
        for n in range(60)
    ]
    unavailable = by_code(lint.lint(images, None, "face"))
    assert set(unavailable) >= {"faces_unavailable"} and unavailable["faces_unavailable"] == [""]  # once for the set
    once = next(f for f in lint.lint(images, None, "face") if f.code == "faces_unavailable")
    assert len(once.files) == 60 and "all 60 training images" in once.message
    assert "count_low" not in unavailable
    assert "faces_unavailable" not in by_code(lint.lint(images, None, "center"))
    many = [record(f"m{n}", phash=f"{n * 0x0123456789ABCDEF & 0xFFFFFFFFFFFFFFFF:016x}") for n in range(101)]
    assert "count_high" in by_code(lint.lint(many, "x", "face"))


def test_reg_images_are_labelled_and_not_face_linted() -> None:
    images = [record("r1", is_reg=True, faces=0, face_box=None, sharpness=1.0)]
    findings = lint.lint(images, "x", "face")
    assert {(f.code, f.file) for f in findings} == {("count_low", ""), ("blurred", "[reg] r1")}
