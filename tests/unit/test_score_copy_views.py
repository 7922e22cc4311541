"""score's copy test on synthetic views (no identity model needed): a copy whose aligned views came out a few
percent larger (as a painted copy's do: its landmarks move) is still a copy, and the moved views' correlation
is the same as correlating each moved view on its own."""

from __future__ import annotations

import numpy as np
import pytest

from kohya_wrap.faceid import Observation
from kohya_wrap.score import scoring
from kohya_wrap.score.scoring import DEFAULT_JUDGEMENT, Reference, ReferenceSet, RowStack, score_image


def picture(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    """A 512 px grey picture with shapes at every scale the band-pass keeps (blurred noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.normal(128, 60, (512, 512)).astype(np.float32), (0, 0), 4)  # type: ignore[no-any-return]


def seen(pic: np.ndarray, zoom: float = 1.0) -> Observation:  # type: ignore[type-arg]
    """The picture's centre as the identity model's tight (64 px) and wide (128 px) views; zoom > 1: both views
    come out that much larger, as when the landmarks found lie closer together."""
    import cv2

    def view(side: int, half: float) -> np.ndarray:  # type: ignore[type-arg]
        h = half / zoom
        crop = pic[int(256 - h) : int(256 + h), int(256 - h) : int(256 + h)]
        return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)  # type: ignore[no-any-return]

    return Observation(
        faces=1,
        embedding=np.zeros(128),
        chip=view(64, 80),
        mask=np.ones((64, 64), bool),
        box=(0, 0, 64, 64),
        wide=view(128, 160),
        wide_mask=np.ones((128, 128), bool),
    )


def test_a_copy_whose_views_came_out_larger_is_still_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    refs = ReferenceSet.of([Reference("photo.png", seen(picture(1))), Reference("other.png", seen(picture(3)))])
    copy = seen(picture(1), zoom=1.06)
    found = score_image("sample.png", copy, refs)
    assert found.copy_of == "photo.png"
    assert found.copy_correlation is not None and found.copy_correlation > 0.9
    assert score_image("new.png", seen(picture(2)), refs).copy_of is None  # another picture is not a copy
    # Without the rescaled views the same copy is missed: moving them by a few pixels is not enough.
    monkeypatch.setattr(scoring, "COPY_SCALES", ())
    missed = score_image("sample.png", copy, refs)
    assert missed.copy_of is None
    assert missed.copy_correlation is not None and missed.copy_correlation < DEFAULT_JUDGEMENT.copy_correlation


@pytest.mark.parametrize("side,shifts", [(64, scoring.TIGHT_SHIFTS), (128, scoring.WIDE_SHIFTS)])
def test_the_moved_correlation_is_that_of_each_moved_view(side: int, shifts: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    ref, chip = rng.normal(size=(side, side)), rng.normal(size=(side, side))
    chip[3:, 2:] += 0.8 * np.roll(ref, (2, -2), (0, 1))[3:, 2:]  # partly the reference, moved
    ref_mask = np.ones((side, side), bool)
    ref_mask[:, : side // 5] = False  # a reference cut by the frame
    mask = np.ones((side, side), bool)
    mask[side - side // 6 :, :] = False
    rows = RowStack.of(ref.ravel()[None], ref_mask.ravel()[None])
    expected = -1.0
    for dy in shifts:
        for dx in shifts:
            kept = np.roll(mask, (dy, dx), (0, 1))
            kept[: max(dy, 0), :] = kept[side + min(dy, 0) :, :] = False
            kept[:, : max(dx, 0)] = kept[:, side + min(dx, 0) :] = False
            moved = np.roll(chip, (dy, dx), (0, 1))
            expected = max(expected, float(scoring.correlate_rows(rows, moved.ravel(), kept.ravel())[0]))
    assert expected > 0.5
    assert scoring._best_shift(rows, 0, chip.ravel(), mask.ravel(), shifts) == pytest.approx(expected, abs=1e-5)
