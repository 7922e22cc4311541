"""The face identity model (dlib: detector, 5-point aligner, ResNet descriptor), shared by prepare and score.

dlib (the prebuilt `dlib-bin` wheel) runs offline on a CPU; its model files come from the
`face-recognition-models` package. The descriptor maps an aligned face to 128 numbers such that
two photos of one person lie closer than 0.6 (Euclidean), dlib's published threshold for its
"dlib_face_recognition_resnet_model_v1" (99.38% on LFW). Everything heavy is imported inside
functions: importing this module costs nothing, so the CLI starts fast without the extra.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'kohya-wrap[score]'"
SAME_PERSON_DISTANCE = 0.6  # dlib's published threshold for the ResNet v1 descriptor
CHIP_SIZE = 64  # side of the aligned grey face thumbnail used to recognise copies
CHIP_PADDING = 0.25
# The wider aligned view used to recognise copies: the face with hair, neck and what is around it
# (framing and background are what a reproduced photo shares and a new photo does not).
WIDE_CHIP_SIZE = 128
WIDE_CHIP_PADDING = 0.6
MAX_SIDE = 640  # photos are scaled down to this before detection: faster, and the descriptor needs ~150 px
# Bump when the way an Observation is computed changes: it is part of every cache key.
PIPELINE_VERSION = "3"
_MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def _models_dir() -> Path | None:
    # face_recognition_models/__init__.py imports pkg_resources (gone from recent setuptools): find
    # the package's folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if all((folder / f).is_file() for f in _MODEL_FILES) else None


def scorer_available() -> str | None:
    """None when `score` can run here, else what to install (for `train` to decide to score at its end)."""
    if importlib.util.find_spec("dlib") is None:
        return f"the face identity model needs dlib: {INSTALL_HINT}"
    if _models_dir() is None:
        return f"the face identity model's files (face-recognition-models) are missing: {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class Observation:
    """What the identity model sees in one image: its largest face, or none."""

    faces: int  # faces detected
    embedding: Any = None  # numpy float64 (128,) of the largest face, None without a face
    chip: Any = None  # numpy float32 (CHIP_SIZE, CHIP_SIZE): the aligned grey face, 0..255
    mask: Any = None  # numpy bool (CHIP_SIZE, CHIP_SIZE): the chip's pixels that lie inside the image
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom in the scaled image
    wide: Any = None  # numpy float32 (WIDE_CHIP_SIZE, WIDE_CHIP_SIZE): the aligned grey face and surroundings
    wide_mask: Any = None  # numpy bool: the wide chip's pixels that lie inside the image

    @property
    def has_face(self) -> bool:
        return self.embedding is not None


class IdentityModel:
    """dlib's detector + aligner + descriptor, loaded once (about 0.7 s)."""

    def __init__(self) -> None:
        import dlib

        from kohya_wrap.errors import KohyaWrapError

        folder = _models_dir()
        if folder is None:
            raise KohyaWrapError(
                "the face identity model's files (face-recognition-models) are not installed", INSTALL_HINT
            )
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._aligner = dlib.shape_predictor(str(folder / _MODEL_FILES[0]))
        self._descriptor = dlib.face_recognition_model_v1(str(folder / _MODEL_FILES[1]))
        self.model_id = f"dlib-{dlib.__version__}-resnet-v1-sp5-p{PIPELINE_VERSION}"

    def observe(self, rgb: Any) -> Observation:
        """The largest face of an RGB uint8 array (H, W, 3); upsampled once only when none is found."""
        import numpy as np

        rects = self._detector(rgb, 0)
        if len(rects) == 0:  # faces under 80 px need the detector's 2x pyramid level
            rects = self._detector(rgb, 1)
        if len(rects) == 0:
            return Observation(faces=0)
        rect = max(rects, key=lambda r: r.area())
        shape = self._aligner(rgb, rect)
        embedding = np.array(self._descriptor.compute_face_descriptor(rgb, shape), dtype=np.float64)
        chip = np.asarray(self._dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING), dtype=np.float32)
        # A face cut by the frame's edge gets a chip partly filled in: the same warp of a white image
        # says which pixels are real, so a crop of a photo still correlates with the photo.
        white = np.full_like(rgb, 255)
        inside = self._dlib.get_face_chip(white, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        wide = np.asarray(
            self._dlib.get_face_chip(rgb, shape, size=WIDE_CHIP_SIZE, padding=WIDE_CHIP_PADDING), dtype=np.float32
        )
        wide_inside = self._dlib.get_face_chip(white, shape, size=WIDE_CHIP_SIZE, padding=WIDE_CHIP_PADDING)
        return Observation(
            faces=len(rects),
            embedding=embedding,
            chip=chip.mean(axis=2),
            mask=np.asarray(inside)[..., 0] > 127,
            box=(rect.left(), rect.top(), rect.right(), rect.bottom()),
            wide=wide.mean(axis=2),
            wide_mask=np.asarray(wide_inside)[..., 0] > 127,
        )


def normalise_chip(grey: Any) -> Any:
    """Zero mean, unit norm: the dot product of two chips is then their normalised cross-correlation."""
    import numpy as np

    centred = grey.astype(np.float32) - float(grey.mean())
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 1e-6 else centred


def load_rgb(path: Path) -> Any:
    """An image file as an RGB uint8 array, scaled to at most MAX_SIDE px. Raises OSError/ValueError."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image: Image.Image = ImageOps.exif_transpose(opened)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(flat, image)
        image = image.convert("RGB")
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
