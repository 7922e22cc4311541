"""open_photo: bad files, EXIF orientation 1-8, colour modes, reduced JPEG decoding, animation."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from kohya_wrap.prepare.decode import BACKGROUND, MAX_PIXELS, BadImage, open_photo

# Upright reference: four quadrants of distinct colours, wider than tall.
QUADRANTS = {"tl": (255, 0, 0), "tr": (0, 255, 0), "bl": (0, 0, 255), "br": (255, 255, 255)}


def upright(width: int = 120, height: int = 80) -> np.ndarray:
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = QUADRANTS["tl"]
    a[: height // 2, width // 2 :] = QUADRANTS["tr"]
    a[height // 2 :, : width // 2] = QUADRANTS["bl"]
    a[height // 2 :, width // 2 :] = QUADRANTS["br"]
    return a


# What a camera stores so that a viewer applying orientation N shows `upright` (EXIF 2.3, tag 0x0112).
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # viewer mirrors horizontally
    3: lambda u: u[::-1, ::-1],  # viewer rotates 180
    4: lambda u: u[::-1],  # viewer mirrors vertically
    5: lambda u: u.transpose(1, 0, 2),  # viewer transposes
    6: lambda u: np.rot90(u, 1),  # viewer rotates 90 clockwise
    7: lambda u: u.transpose(1, 0, 2)[::-1, ::-1],  # viewer transverses
    8: lambda u: np.rot90(u, -1),  # viewer rotates 90 counter-clockwise
}


def jpeg_bytes(array: np.ndarray, orientation: int | None = None, quality: int = 95) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(array))
    buffer = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buffer, "JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def png_bytes(im: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def quadrant_means(im: Image.Image) -> dict[str, tuple[int, ...]]:
    a = np.asarray(im, dtype=np.float64)
    h, w = a.shape[:2]
    # Inner halves of each quadrant: away from JPEG ringing at the borders.
    parts = {
        "tl": a[h // 8 : 3 * h // 8, w // 8 : 3 * w // 8],
        "tr": a[h // 8 : 3 * h // 8, 5 * w // 8 : 7 * w // 8],
        "bl": a[5 * h // 8 : 7 * h // 8, w // 8 : 3 * w // 8],
        "br": a[5 * h // 8 : 7 * h // 8, 5 * w // 8 : 7 * w // 8],
    }
    return {k: tuple(round(v) for v in p.reshape(-1, 3).mean(axis=0)) for k, p in parts.items()}


def assert_upright(im: Image.Image) -> None:
    assert im.mode == "RGB"
    for name, colour in quadrant_means(im).items():
        assert np.abs(np.subtract(colour, QUADRANTS[name])).max() <= 12, (name, colour)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(orientation: int) -> None:
    data = jpeg_bytes(STORED[orientation](upright()), orientation)
    decoded = open_photo(data)
    assert decoded.image.size == (120, 80)
    assert decoded.source_size == (120, 80)
    assert_upright(decoded.image)
    # The same as Pillow's own exif_transpose, an independent implementation.
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert np.array_equal(np.asarray(reference), np.asarray(decoded.image))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_with_reduced_decoding(orientation: int) -> None:
    data = jpeg_bytes(STORED[orientation](upright(1600, 1200)), orientation)
    decoded = open_photo(data, min_short_side=300)
    assert decoded.source_size == (1600, 1200)
    assert decoded.image.size == (400, 300)  # 1/4 scale: the short side stays >= 300
    assert decoded.scale == 4.0
    assert_upright(decoded.image)


def test_reduced_decoding_never_goes_below_the_requested_short_side() -> None:
    data = jpeg_bytes(upright(1000, 700))
    assert open_photo(data, min_short_side=300).image.size == (500, 350)  # 1/4 would be 175 < 300
    assert open_photo(data, min_short_side=400).image.size == (1000, 700)
    assert open_photo(data).image.size == (1000, 700)


def test_alpha_is_flattened_onto_neutral_grey() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    im = open_photo(png_bytes(rgba)).image
    assert im.mode == "RGB"
    assert im.getpixel((5, 5)) == BACKGROUND
    assert im.getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (4, 4), (200, 0))
    assert open_photo(png_bytes(la)).image.getpixel((1, 1)) == BACKGROUND


def test_palette_with_transparency_and_plain_palette() -> None:
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert open_photo(png_bytes(p)).image.getpixel((0, 0)) == (10, 200, 30)
    assert open_photo(png_bytes(p, transparency=1)).image.getpixel((0, 0)) == BACKGROUND


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95)
    r, g, b = open_photo(buffer.getvalue()).image.getpixel((8, 8))
    assert r > 230 and g < 25 and b < 25


def test_greyscale_and_one_bit() -> None:
    assert open_photo(png_bytes(Image.new("L", (4, 4), 77))).image.getpixel((0, 0)) == (77, 77, 77)
    assert open_photo(png_bytes(Image.new("1", (4, 4), 1))).image.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    im16 = Image.fromarray(values)  # mode I;16
    decoded = open_photo(png_bytes(im16)).image
    assert decoded.getpixel((0, 0)) == (0, 0, 0)
    assert decoded.getpixel((1, 0)) == (128, 128, 128)
    assert decoded.getpixel((0, 1)) == (255, 255, 255)
    assert decoded.getpixel((1, 1)) == (4, 4, 4)


def test_16_bit_tiff_grey_and_float() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(buffer, "TIFF")
    assert open_photo(buffer.getvalue()).image.getpixel((0, 0)) == (255, 255, 255)
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(buffer, "TIFF")
    assert open_photo(buffer.getvalue()).image.getpixel((0, 0)) == (128, 128, 128)


def test_16_bit_rgb_png_keeps_its_colour(tmp_path) -> None:
    # Pillow cannot write 16-bit RGB PNGs; write the chunks by hand: one pixel (0x8000, 0xFFFF, 0x0000).
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"\x00" + struct.pack(">HHH", 0x8000, 0xFFFF, 0x0000)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    assert open_photo(data).image.getpixel((0, 0)) == (128, 255, 0)


def test_non_srgb_icc_profile_is_converted() -> None:
    lab_like = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))  # any non-sRGB profile
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    im = Image.new("RGB", (4, 4), (200, 100, 50))
    with_srgb = open_photo(png_bytes(im, icc_profile=srgb.tobytes())).image
    assert with_srgb.getpixel((0, 0)) == (200, 100, 50)
    # An unusable profile for the mode falls back to plain conversion instead of failing.
    assert open_photo(png_bytes(im, icc_profile=lab_like.tobytes())).image.mode == "RGB"
    assert open_photo(png_bytes(im, icc_profile=b"not a profile")).image.getpixel((0, 0)) == (200, 100, 50)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = open_photo(buffer.getvalue())
    assert decoded.frames == 2
    r, g, b = decoded.image.getpixel((4, 4))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "skipped_empty"),
        (b"hello, I am a text file pretending to be a photo\n" * 4, "skipped_not_image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "skipped_corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "skipped_corrupt"),
    ],
    ids=["zero-byte", "text", "jpeg-damaged-header", "png-damaged-header"],
)
def test_unusable_bytes(data: bytes, code: str) -> None:
    with pytest.raises(BadImage) as e:
        open_photo(data)
    assert e.value.code == code


def test_truncated_jpeg() -> None:
    data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    with pytest.raises(BadImage) as e:
        open_photo(data[: len(data) // 2])
    assert e.value.code == "skipped_truncated"
    assert "truncated" in e.value.message


def test_corrupt_png_data() -> None:
    data = bytearray(png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))))
    start = data.index(b"IDAT") + 4
    data[start : start + 40] = b"\x00" * 40
    with pytest.raises(BadImage) as e:
        open_photo(bytes(data))
    assert e.value.code in ("skipped_corrupt", "skipped_truncated")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    side = 20000  # 400 MP, over MAX_PIXELS; the pixel data is never decoded

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    assert side * side > MAX_PIXELS
    with pytest.raises(BadImage) as e:
        open_photo(data)
    assert e.value.code == "skipped_too_large"
    assert "decompression bomb" in e.value.message
