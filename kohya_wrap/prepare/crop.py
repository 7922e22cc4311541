"""Square crop boxes, in source pixels: centred, or placed around a face with room for head and shoulders.

A Haar face box spans roughly eyebrows to chin. A square HEAD_AND_SHOULDERS times its side, with the
face centre FACE_CENTRE_HEIGHT of the way down, holds the hair above and the shoulders below. A crop
that would be smaller than the output size grows to it (more context instead of an upscale), and
every crop stays inside the image.
"""

from __future__ import annotations

from PIL import Image

from kohya_wrap.prepare.records import Box

HEAD_AND_SHOULDERS = 2.6
FACE_CENTRE_HEIGHT = 0.42


def center_crop(width: int, height: int) -> Box:
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def face_crop(width: int, height: int, face: Box, target: int) -> Box:
    short = min(width, height)
    face_side = max(face[2] - face[0], face[3] - face[1])
    side = min(short, max(round(face_side * HEAD_AND_SHOULDERS), min(target, short)))
    centre_x = (face[0] + face[2]) / 2
    centre_y = (face[1] + face[3]) / 2
    left = _clamp(round(centre_x - side / 2), 0, width - side)
    top = _clamp(round(centre_y - side * FACE_CENTRE_HEIGHT), 0, height - side)
    return (left, top, left + side, top + side)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def crop_resize(image: Image.Image, box: Box, scale: float, target: int) -> Image.Image:
    """The `box` (source pixels) of `image` (source pixels / scale) resized to target x target with LANCZOS."""
    left, top, right, bottom = (v / scale for v in box)
    region = (left, top, min(right, image.width), min(bottom, image.height))
    return image.resize((target, target), Image.Resampling.LANCZOS, box=region)
