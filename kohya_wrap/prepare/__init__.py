"""The `prepare` stage: a folder of face photos -> Kohya's DreamBooth dataset folder + prepare.json.

sources (discovery) -> worker (decode, detect, crop, resize, PNG, and identity's look at the output; in a
process pool) -> pipeline (identity's verdict on the set, names, captions, layout, atomic swap) -> lint
(findings) -> manifest (prepare.json, reuse index).
"""

from typing import TYPE_CHECKING

from kohya_wrap.prepare.records import (
    DEFAULT_CAPTION,
    DEFAULT_SIZE,
    SIZES,
    Finding,
    OutputImage,
    PrepareOptions,
    PrepareResult,
    Subset,
)

if TYPE_CHECKING:
    from kohya_wrap.prepare.pipeline import prepare_dataset, render_caption


def __getattr__(name: str) -> object:
    # The pipeline (process pools, PIL, OpenCV's loader) is imported when first used: `plan` reads
    # prepare.json through prepare.manifest and needs none of it.
    if name in ("prepare_dataset", "render_caption"):
        from kohya_wrap.prepare import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CAPTION",
    "DEFAULT_SIZE",
    "SIZES",
    "Finding",
    "OutputImage",
    "PrepareOptions",
    "PrepareResult",
    "Subset",
    "prepare_dataset",
    "render_caption",
]
