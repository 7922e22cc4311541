"""The face identity model (dlib: detector, 5-point aligner, ResNet descriptor), shared by prepare and score.

dlib (the prebuilt `dlib-bin` wheel) runs offline on a CPU; its model files come from the
`face-recognition-models` package. The descriptor maps an aligned face to 128 numbers such that
two photos of one person lie closer than 0.6 (Euclidean), dlib's published threshold for its
"dlib_face_recognition_resnet_model_v1" (99.38% on LFW). Everything heavy is imported inside
functions: importing this module costs nothing, so the CLI starts fast without the extra.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import ModuleType

    import numpy as np
    from numpy.typing import NDArray

    RgbImage = NDArray[np.uint8]  # (H, W, 3)
    GreyImage = NDArray[np.float32]  # (H, W), 0..255
    Mask = NDArray[np.bool_]  # (H, W): True inside the image
    Embedding = NDArray[np.float64]  # (128,) descriptor

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
    embedding: Embedding | None = None  # (128,) of the largest face, None without a face
    chip: GreyImage | None = None  # (CHIP_SIZE, CHIP_SIZE): the aligned grey face, 0..255
    mask: Mask | None = None  # (CHIP_SIZE, CHIP_SIZE): the chip's pixels that lie inside the image
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom in the scaled image
    wide: GreyImage | None = None  # (WIDE_CHIP_SIZE, WIDE_CHIP_SIZE): the aligned grey face and surroundings
    wide_mask: Mask | None = None  # the wide chip's pixels that lie inside the image

    @property
    def has_face(self) -> bool:
        return self.embedding is not None

    def face_arrays(self) -> tuple[Embedding, GreyImage, Mask]:
        """The largest face's descriptor, chip and mask; ValueError for an observation without a face."""
        if self.embedding is None or self.chip is None or self.mask is None:
            raise ValueError(f"no face in this observation ({self.faces} faces detected)")
        return self.embedding, self.chip, self.mask


class _Rect(Protocol):
    """dlib's rectangle, as a detection."""

    def left(self) -> int: ...
    def top(self) -> int: ...
    def right(self) -> int: ...
    def bottom(self) -> int: ...
    def area(self) -> int: ...


class _Point(Protocol):
    x: int
    y: int


class _Shape(Protocol):
    """dlib's full_object_detection: the aligner's landmarks on one face."""

    def parts(self) -> Sequence[_Point]: ...


class _Detector(Protocol):
    def __call__(self, image: RgbImage, upsample: int, /) -> Sequence[_Rect]: ...


class _Aligner(Protocol):
    def __call__(self, image: RgbImage, rect: _Rect, /) -> _Shape: ...


class _Descriptor(Protocol):
    def compute_face_descriptor(self, image: RgbImage, shape: _Shape, /) -> Iterable[float]: ...


def _load_dlib() -> tuple[ModuleType, Path]:
    """dlib and the folder of its model files; KohyaWrapError naming the install when they are missing."""
    import dlib

    from kohya_wrap.errors import KohyaWrapError

    folder = _models_dir()
    if folder is None:
        raise KohyaWrapError(
            "the face identity model's files (face-recognition-models) are not installed", INSTALL_HINT
        )
    return dlib, folder


class IdentityModel:
    """dlib's detector + aligner + descriptor, loaded once (about 0.7 s)."""

    def __init__(self) -> None:
        dlib, folder = _load_dlib()
        self._dlib = dlib
        self._detector: _Detector = dlib.get_frontal_face_detector()
        self._aligner: _Aligner = dlib.shape_predictor(str(folder / _MODEL_FILES[0]))
        self._descriptor: _Descriptor = dlib.face_recognition_model_v1(str(folder / _MODEL_FILES[1]))
        self.model_id = f"dlib-{dlib.__version__}-resnet-v1-sp5-p{PIPELINE_VERSION}"

    def observe(self, rgb: RgbImage) -> Observation:
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


def normalise_chip(grey: NDArray[np.float32]) -> NDArray[np.float32]:
    """Zero mean, unit norm: the dot product of two chips is then their normalised cross-correlation."""
    import numpy as np

    centred = grey.astype(np.float32) - float(grey.mean())
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 1e-6 else centred


def load_rgb(path: Path) -> RgbImage:
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


@dataclass(frozen=True)
class LocatedFace:
    """One face dlib's detector found, with the 5 landmarks its aligner puts on it."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in the image's pixels
    # The 5-point model's order: two corners of one eye, two of the other, then the base of the nose.
    landmarks: tuple[tuple[float, float], ...]
    shape: _Shape | None = field(
        default=None, compare=False, repr=False
    )  # dlib's full_object_detection, for describe()


class FaceLocator:
    """Every face of an image with its landmarks, and the descriptor of the one asked for.

    prepare's identity check uses it: a group photo has several faces, and the one that counts is
    the one prepare cropped on, which is not always the largest that dlib sees. The aligner and the
    descriptor (most of the 0.7 s that loading takes) are loaded at the first face, so a worker that
    sees no face never loads them.
    """

    def __init__(self) -> None:
        dlib, folder = _load_dlib()
        self._dlib = dlib
        self._folder = folder
        self._detector: _Detector = dlib.get_frontal_face_detector()
        self._models: tuple[_Aligner, _Descriptor] | None = None

    def _aligner_and_descriptor(self) -> tuple[_Aligner, _Descriptor]:
        if self._models is None:
            self._models = (
                self._dlib.shape_predictor(str(self._folder / _MODEL_FILES[0])),
                self._dlib.face_recognition_model_v1(str(self._folder / _MODEL_FILES[1])),
            )
        return self._models

    def locate(self, rgb: RgbImage, upsample: bool = True, detect_side: int | None = None) -> list[LocatedFace]:
        """The faces of an RGB uint8 array, largest first. Detection runs on a copy scaled to detect_side px
        (the longest side) where that is smaller (the detector's time goes with the pixels; it finds faces from
        about 80 px), the landmarks on the array itself; upsampled once (about 3x the time) only when no face
        is found and `upsample` allows it."""
        import numpy as np
        from PIL import Image

        scale = 1.0
        small = rgb
        if detect_side is not None and max(rgb.shape[:2]) > detect_side:
            scale = max(rgb.shape[:2]) / detect_side
            size = (max(1, round(rgb.shape[1] / scale)), max(1, round(rgb.shape[0] / scale)))
            small = np.ascontiguousarray(np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)))
        rects = self._detector(small, 0)
        if len(rects) == 0 and upsample:  # faces under 80 px need the detector's 2x pyramid level
            rects = self._detector(small, 1)
        if len(rects) == 0:
            return []
        aligner, _ = self._aligner_and_descriptor()
        found = []
        for rect in sorted(rects, key=lambda r: -r.area()):
            left, top, right, bottom = (
                round(v * scale) for v in (rect.left(), rect.top(), rect.right(), rect.bottom())
            )
            box = (left, top, right, bottom)
            shape = aligner(rgb, self._dlib.rectangle(*box))
            points = tuple((float(p.x), float(p.y)) for p in shape.parts())
            found.append(LocatedFace(box, points, shape))
        return found

    def describe(self, rgb: RgbImage, face: LocatedFace) -> Embedding:
        """The 128-number descriptor (numpy float64) of `face`, found by locate() in the same array."""
        import numpy as np

        if face.shape is None:
            raise ValueError("describe() needs a face that locate() found (it carries dlib's landmarks)")
        _, descriptor = self._aligner_and_descriptor()
        return np.array(descriptor.compute_face_descriptor(rgb, face.shape), dtype=np.float64)
