"""Open one photo: check it, decode only as many pixels as the output needs, orient it, make it 8-bit sRGB.

- Size limit: an image over MAX_PIXELS (Pillow's own decompression-bomb error threshold, 2 x
  Image.MAX_IMAGE_PIXELS, about 179 MP) is refused from its header, before any pixel is decoded.
- Reduced decoding: a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (Pillow's draft mode) when
  the short side stays at least `min_short_side`. The DCT-domain reduction is a proper low-pass, so
  the result matches a full decode + LANCZOS resize closely (bench/prepare.py measures the PSNR) at a
  fraction of the work: the full 24-MP decode is most of a naive pipeline's time.
- Animated images (GIF, APNG, WebP, multi-page TIFF): the first frame is used; the caller reports it.
- EXIF orientation: all 8 values, applied after decoding (the transposes of ImageOps.exif_transpose).
- Colour: alpha is flattened onto neutral grey; 16-bit and 32-bit grey are scaled, not clipped; CMYK,
  palette and grey become RGB; an embedded ICC profile other than sRGB (phone cameras write Display P3)
  is converted to sRGB with littleCMS.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, UnidentifiedImageError

MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)  # Pillow's error threshold, 2 x its default
BACKGROUND = (128, 128, 128)
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
# JPEG, PNG, GIF, BMP, TIFF (both byte orders); WebP is RIFF....WEBP.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class BadImage(Exception):
    """A file that cannot be used: `code` says which kind, `message` what was found, `action` what to do."""

    def __init__(self, code: str, message: str, action: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.action = action


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # 8-bit RGB, oriented, possibly reduced
    source_size: tuple[int, int]  # full-resolution size after orientation
    frames: int

    @property
    def scale(self) -> float:
        """Source pixels per decoded pixel."""
        return self.source_size[0] / self.image.size[0]


def open_checked(data: bytes) -> Image.Image:
    """The image's header parsed, or BadImage for empty, non-image, bomb-sized or unreadable data."""
    if not data:
        raise BadImage("skipped_empty", "zero-byte file", "remove it, or copy the photo again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if data.startswith(_IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
            raise BadImage(
                "skipped_corrupt", "starts like an image but its header is damaged", "re-export or remove it"
            ) from None
        raise BadImage("skipped_not_image", "not an image Pillow can read", "remove it from the folder") from None
    except Image.DecompressionBombError as e:
        raise BadImage(
            "skipped_too_large",
            f"too many pixels ({e}); refused as a possible decompression bomb",
            f"downscale it below {MAX_PIXELS:,} pixels",
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage("skipped_corrupt", f"corrupt image header ({e})", "re-export or remove it") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise BadImage(
            "skipped_too_large",
            f"{width}x{height} is {width * height:,} pixels, over the limit of {MAX_PIXELS:,}; "
            "refused as a possible decompression bomb",
            f"downscale it below {MAX_PIXELS:,} pixels",
        )
    if width < 1 or height < 1:
        raise BadImage("skipped_corrupt", f"image has no pixels ({width}x{height})", "re-export or remove it")
    return im


def open_photo(data: bytes, min_short_side: int | None = None) -> Decoded:
    """Decode `data`, reduced so that its short side stays >= min_short_side (None: full size)."""
    im = open_checked(data)
    # MPO (many phone JPEGs) stores depth maps and previews as extra frames: not an animation.
    frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1) or 1)
    width, height = im.size
    if min_short_side and im.format in ("JPEG", "MPO"):
        short = min(width, height)
        if short >= 2 * min_short_side:
            # draft() picks the largest scale s with size // request >= s on both axes.
            request = (math.ceil(width * min_short_side / short), math.ceil(height * min_short_side / short))
            im.draft("RGB", request)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if frames > 1:
                im.seek(0)
            im.load()
    except OSError as e:
        if "truncated" in str(e):
            raise BadImage(
                "skipped_truncated", f"truncated file ({e})", "copy the photo again from its origin"
            ) from None
        raise BadImage("skipped_corrupt", f"corrupt image data ({e})", "re-export or remove it") from None
    except (SyntaxError, ValueError, EOFError, IndexError, MemoryError) as e:
        raise BadImage(
            "skipped_corrupt", f"corrupt image data ({type(e).__name__}: {e})", "re-export or remove it"
        ) from None
    try:
        # After load(): PNG keeps its EXIF after the pixel data, and reading it would load the image.
        orientation = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001  a broken EXIF block must not lose the photo; treat as upright
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    icc = im.info.get("icc_profile")
    oriented = _orient(im, orientation)
    rgb = to_srgb(oriented, icc)
    source_size = (width, height) if orientation < 5 else (height, width)
    return Decoded(image=rgb, source_size=source_size, frames=frames)


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return im if method is None else im.transpose(method)


def to_srgb(im: Image.Image, icc: bytes | None = None) -> Image.Image:
    """8-bit RGB: alpha flattened on grey, wide grey scaled, CMYK/palette/grey converted, ICC applied."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        flat.alpha_composite(rgba)
        im = flat.convert("RGB")
    elif im.mode in _WIDE_GREY_MODES:
        im = _wide_grey_to_l(im)
    if icc and im.mode in ("RGB", "CMYK", "L"):
        converted = _apply_icc(im, icc)
        if converted is not None:
            return converted
    return im if im.mode == "RGB" else im.convert("RGB")


def _wide_grey_to_l(im: Image.Image) -> Image.Image:
    import numpy as np

    values = np.asarray(im)
    if im.mode == "F":
        top = 1.0 if float(np.nanmax(values, initial=0.0)) <= 1.0 else 255.0
        scaled = np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255)
    else:
        values = values.astype(np.int64)
        peak = int(values.max(initial=0))
        # 16-bit data (PNG/TIFF) is scaled by its container's range, not stretched to its own maximum.
        bits = 8 if peak <= 255 else 16 if peak <= 65535 else 32
        scaled = np.clip(values, 0, None) / ((1 << bits) - 1) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(source) or "").lower() and im.mode == "RGB":
            return im
        return ImageCms.profileToProfile(im, source, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # an unreadable or mismatched profile: plain conversion is the best left


_SRGB: ImageCms.ImageCmsProfile | None = None


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB
