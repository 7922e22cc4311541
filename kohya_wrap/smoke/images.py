"""Small drawn faces to train on in a smoke run: structure for the pipeline to work on, no files to ship.

Deterministic: the same seed gives the same pixels, so a smoke run's dataset never varies.
Sizes and aspect ratios vary on purpose, so `prepare` has something to crop and resize.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

DEFAULT_COUNT = 6
# (width, height): square, portrait and landscape, all 96-128 px.
SIZES = ((128, 128), (112, 128), (128, 96), (96, 96), (128, 112), (104, 128), (120, 120), (96, 128))
SKIN_TONES = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (120, 72, 48))


def _colour(rng: random.Random, low: int = 0, high: int = 255) -> tuple[int, int, int]:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def draw_face(width: int, height: int, rng: random.Random) -> Image.Image:
    """A face (head, hair, eyes, nose, mouth) on a two-tone background with a few shapes behind it."""
    image = Image.new("RGB", (width, height), _colour(rng, 40, 230))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:
        draw.rectangle((0, height * rng.uniform(0.5, 0.8), width, height), fill=_colour(rng, 20, 200))
    else:
        draw.rectangle((width * rng.uniform(0.5, 0.8), 0, width, height), fill=_colour(rng, 20, 200))
    for _ in range(rng.randint(2, 4)):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, min(width, height) / 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng))

    side = min(width, height)
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    cy = height / 2 + rng.uniform(-0.05, 0.08) * height
    rx, ry = side * rng.uniform(0.24, 0.3), side * rng.uniform(0.3, 0.36)
    skin = rng.choice(SKIN_TONES)
    hair = _colour(rng, 10, 120)
    draw.ellipse((cx - rx * 1.08, cy - ry * 1.1, cx + rx * 1.08, cy + ry * 0.2), fill=hair)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin, outline=(60, 40, 30))

    eye_y, eye_dx = cy - ry * 0.2, rx * 0.42
    eye_r = side * 0.035
    for ex in (cx - eye_dx, cx + eye_dx):
        draw.ellipse((ex - eye_r * 1.6, eye_y - eye_r, ex + eye_r * 1.6, eye_y + eye_r), fill=(250, 250, 250))
        pupil = eye_r * 0.7
        draw.ellipse((ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil), fill=_colour(rng, 0, 120))
    nose_y = cy + ry * 0.15
    draw.line((cx, eye_y + eye_r, cx - rx * 0.08, nose_y, cx + rx * 0.05, nose_y), fill=(90, 60, 40), width=1)
    mouth_y, mouth_w = cy + ry * 0.5, rx * rng.uniform(0.3, 0.55)
    if rng.random() < 0.6:
        smile_box = (cx - mouth_w, mouth_y - ry * 0.2, cx + mouth_w, mouth_y + ry * 0.15)
        draw.arc(smile_box, 20, 160, fill=(150, 40, 50), width=2)
    else:
        draw.line((cx - mouth_w, mouth_y, cx + mouth_w, mouth_y), fill=(150, 40, 50), width=2)
    return image


def write_face_images(directory: Path, count: int = DEFAULT_COUNT, seed: int = 0) -> list[Path]:
    """Write `count` PNG faces as 0001.png, 0002.png, ... into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        path = directory / f"{index + 1:04d}.png"
        draw_face(width, height, rng).save(path, format="PNG")
        paths.append(path)
    return paths
