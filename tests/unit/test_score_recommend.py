"""The recommendation and its reasons, the likeness scale, the report section and status line (no dlib needed)."""

from __future__ import annotations

import json
import re

import msgspec
import pytest
from msgspec.structs import replace

from kohya_wrap import codec
from kohya_wrap.report.score_section import score_section
from kohya_wrap.score import load_score, recommended_line, recommended_step
from kohya_wrap.score.collect import LeftOut
from kohya_wrap.score.records import Recommended, settle
from kohya_wrap.score.scoring import (
    CheckpointScore,
    ImageScore,
    Judgement,
    ScoreReport,
    copying_onset,
    judge,
    likeness_of,
    match_distance_for,
    recommend,
    variety_of,
)


def ck(
    step: int,
    *,
    samples: int = 3,
    faces: int = 3,
    likeness: float | None = 0.7,
    matches: int = 3,
    copies: int = 0,
    checkpoint: str | None = "x.safetensors",
) -> CheckpointScore:
    return CheckpointScore(
        step=step,
        samples=samples,
        faces=faces,
        likeness=likeness,
        matches=matches,
        copies=copies,
        checkpoint=checkpoint,
    )


def test_likeness_maps_the_same_person_threshold_to_one_half() -> None:
    assert likeness_of(0.0) == 1.0 and likeness_of(0.6) == pytest.approx(0.5)
    assert likeness_of(0.3) == pytest.approx(0.75) and likeness_of(1.2) == 0.0 and likeness_of(2.0) == 0.0


def test_the_most_recognised_then_most_alike_checkpoint_is_recommended() -> None:
    best, reason = recommend(
        [ck(250, matches=1, likeness=0.9), ck(500, likeness=0.68), ck(750, likeness=0.72)], need_file=True
    )
    assert best is not None and best.step == 750
    assert reason == (
        "step 750: 3 of 3 samples are the person at dlib's threshold (likeness 0.72) and none copies a training photo"
    )


def test_ties_go_to_the_earlier_step() -> None:
    best, _ = recommend([ck(500), ck(250), ck(750)], need_file=False)
    assert best is not None and best.step == 250


def test_checkpoints_that_copy_are_passed_over_and_named() -> None:
    best, reason = recommend(
        [ck(250, likeness=0.6), ck(500, likeness=0.8, copies=2), ck(750, likeness=0.9, copies=3)], need_file=True
    )
    assert best is not None and best.step == 250
    assert reason.endswith("; passed over because they copy a training photo: step 500, 750")


def test_one_copy_among_three_samples_does_not_veto_a_checkpoint() -> None:
    best, reason = recommend([ck(250, likeness=0.6), ck(500, likeness=0.8, copies=1)], need_file=True)
    assert best is not None and best.step == 500
    assert reason == (
        "step 500: 3 of 3 samples are the person at dlib's threshold (likeness 0.80); 1 of 3 copies a "
        "training photo, under the share of 50% that marks a copying checkpoint"
    )
    assert not ck(500, copies=1).is_copying() and ck(500, copies=2).is_copying()
    assert ck(500, samples=4, faces=4, copies=2).is_copying()  # half of them
    assert not ck(500, samples=4, faces=4, copies=2).is_copying(share=0.75)


def test_nothing_after_copying_sets_in_is_recommended() -> None:
    # 1000 copies no photo by chance, but it comes after copying set in (750, 1250 copy): passed over.
    checkpoints = [
        ck(500, likeness=0.70),
        ck(750, likeness=0.75, copies=2),
        ck(1000, likeness=0.9),
        ck(1250, likeness=0.9, copies=3),
    ]
    assert copying_onset(checkpoints) == 750
    best, reason = recommend(checkpoints, need_file=True)
    assert best is not None and best.step == 500
    assert reason.endswith("passed over because they copy a training photo: step 750, 1250")
    # One copying checkpoint followed by clean ones is one odd checkpoint, not an onset.
    assert copying_onset([ck(500), ck(750, copies=2), ck(1000), ck(1250)]) is None
    # A checkpoint with one copy right before copying sets in is where it starts; an earlier lone one is odd.
    assert copying_onset([ck(500), ck(750, copies=1), ck(1000, copies=2), ck(1250, copies=3)]) == 750
    assert copying_onset([ck(500, copies=1), ck(750), ck(1000, copies=2), ck(1250, copies=3)]) == 1000


def with_likeness(step: int, values: tuple[float, ...], **kw: object) -> CheckpointScore:
    images = tuple(ImageScore(f"{step}-{i}.png", 1, 0.3, 0.3, v, True) for i, v in enumerate(values))
    return replace(ck(step, **kw), likeness=round(sum(values) / len(values), 4), images=images)


def test_a_close_call_names_the_steps_within_the_noise_and_picks_the_earliest() -> None:
    found = judge(
        [with_likeness(1000, (0.70, 0.74, 0.72)), with_likeness(1250, (0.71, 0.76, 0.74)), ck(1500, copies=3)],
        need_file=True,
    )
    assert found.checkpoint is not None and found.checkpoint.step == 1000
    assert found.close == (1000, 1250)
    assert (
        found.confidence == "close call: steps 1000 and 1250 within the noise (likeness 0.72 at step 1000, 0.74 after)"
    )


def test_a_checkpoint_that_mixes_in_somebody_else_is_not_within_the_noise() -> None:
    # Half of 500's samples are somebody else: its spread is a difference, not noise (capped at 0.05),
    # and with 2 samples a checkpoint, one sample short of the best's share is not close enough.
    found = judge(
        [with_likeness(500, (0.40, 0.72), matches=1, samples=2, faces=2), with_likeness(750, (0.71, 0.73), samples=2)],
        need_file=True,
    )
    assert found.checkpoint is not None and found.checkpoint.step == 750 and found.confidence == "clear"


def test_a_clear_pick_when_the_best_stands_out() -> None:
    found = judge([with_likeness(1000, (0.58, 0.6, 0.62)), with_likeness(1250, (0.74, 0.75, 0.76))], need_file=True)
    assert found.checkpoint is not None and found.checkpoint.step == 1250
    assert found.confidence == "clear" and found.close == ()


def test_the_persons_threshold_is_tightened_by_the_spread_of_the_photos() -> None:
    assert match_distance_for(None) == 0.6  # too few photos to tell
    assert match_distance_for(0.30) == pytest.approx(0.45)  # floor (0.30 + 0.10 under it)
    assert match_distance_for(0.40) == pytest.approx(0.50)
    assert match_distance_for(0.55) == 0.6  # never looser than dlib's
    assert match_distance_for(0.40, Judgement(identity_margin=None)) == 0.6
    found = judge([ck(500)], need_file=True, match_distance=0.52)
    assert found.reason.startswith("step 500: 3 of 3 samples are the person at this person's threshold 0.52")


def test_left_out_files_are_in_the_json() -> None:
    left = (LeftOut(file="s/notes.png", kind="sample", why="its name does not say a step"),)
    report = ScoreReport(
        checkpoints=settle([ck(500)]),
        recommended=Recommended.of(ck(500)),
        reason="r",
        left_out=left,
        confidence="clear",
    )
    doc = json.loads(codec.encode(report))  # as score.json holds it
    assert doc["left_out"] == [{"file": "s/notes.png", "kind": "sample", "why": "its name does not say a step"}]
    assert doc["confidence"] == "clear" and doc["checkpoints"][0]["copying"] is False


def test_no_faces_at_all() -> None:
    best, reason = recommend(
        [ck(250, faces=0, likeness=None, matches=0), ck(500, faces=0, likeness=None, matches=0)], need_file=True
    )
    assert best is None
    assert reason == (
        "no face in any of the 6 samples: the model draws no faces yet (a random-weight smoke model draws none)"
    )


def test_faces_but_never_the_person() -> None:
    best, reason = recommend(
        [ck(250, faces=2, likeness=0.3, matches=0), ck(500, faces=3, likeness=0.4, matches=0)], need_file=True
    )
    assert best is None
    assert reason.startswith("faces in 5 of 6 samples, but none is the person")
    assert "the most alike is step 500 at likeness 0.40" in reason


def test_every_matching_checkpoint_copies() -> None:
    best, reason = recommend(
        [ck(250, faces=1, likeness=0.3, matches=0), ck(500, copies=2), ck(750, copies=3)], need_file=True
    )
    assert best is None
    assert reason.startswith("every checkpoint whose samples are the person copies a training photo (steps 500, 750)")


def test_a_step_without_a_lora_file_is_not_recommended_in_a_run() -> None:
    checkpoints = [ck(0, likeness=0.9, checkpoint=None), ck(250, matches=2, likeness=0.6)]
    best, _ = recommend(checkpoints, need_file=True)
    assert best is not None and best.step == 250
    best, _ = recommend(checkpoints, need_file=False)  # --samples: any step
    assert best is not None and best.step == 0


def test_variety_is_zero_for_identical_samples_and_none_for_one() -> None:
    import numpy as np

    from kohya_wrap.faceid import normalise_chip

    a = normalise_chip(np.arange(64, dtype=np.float32).reshape(8, 8))
    b = normalise_chip(np.random.default_rng(0).random((8, 8)).astype(np.float32))
    assert variety_of([a]) is None
    assert variety_of([a, a]) == 0.0
    assert 0.5 < (variety_of([a, b]) or 0) <= 1.0


def report_of(recommended: CheckpointScore | None, reason: str) -> ScoreReport:
    cks = (ck(250, likeness=0.5, matches=1), ck(500, likeness=0.75), ck(750, likeness=0.8, copies=1))
    report = ScoreReport(
        checkpoints=settle(cks),
        recommended=Recommended.of(recommended),
        reason=reason,
        model=msgspec.structs.replace(ScoreReport().model, id="dlib-test"),
    )
    return codec.decode(codec.encode(report), ScoreReport, source="score.json")  # as read back from the file


def report_doc(recommended: CheckpointScore | None, reason: str) -> dict:  # type: ignore[type-arg]
    return json.loads(codec.encode(report_of(recommended, reason)))


def test_the_json_shape() -> None:
    doc = report_doc(ck(500, likeness=0.75), "because")
    assert doc["recommended"] == {
        "step": 500,
        "checkpoint": "x.safetensors",
        "likeness": 0.75,
        "matches": 3,
        "samples": 3,
        "faces": 3,
        "copies": 0,
    }
    assert doc["reason"] == "because" and [c["step"] for c in doc["checkpoints"]] == [250, 500, 750]
    assert doc["model"]["id"] == "dlib-test" and doc["model"]["same_person_distance"] == 0.6
    assert report_doc(None, "no face")["recommended"] is None


def test_the_status_line_and_recommended_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = report_of(ck(500, likeness=0.75), "why")
    assert recommended_step(doc) == 500
    assert recommended_line(doc) == (
        "recommended: step 500 (x.safetensors), likeness 0.75, 3/3 samples the person, no copies"
    )
    none = report_of(None, "no face in any of the 9 samples")
    assert recommended_step(none) is None
    assert recommended_line(none) == "no checkpoint recommended: no face in any of the 9 samples"
    assert recommended_line(None) == "not scored yet (kohya-wrap score RUN_DIR)"
    assert load_score(tmp_path) is None
    (tmp_path / "score.json").write_text("{not json", encoding="utf-8")
    assert load_score(tmp_path) is None
    (tmp_path / "score.json").write_text(codec.encode(doc), encoding="utf-8")
    assert load_score(tmp_path) == doc


def test_the_report_section_charts_the_score_and_marks_the_recommendation() -> None:
    page = score_section(report_of(ck(500, likeness=0.75), "step 500: <3 of 3> & none copies"))
    assert 'id="score-recommended" data-step="500"' in page and "&lt;3 of 3&gt; &amp; none" in page
    assert '<svg id="score-chart"' in page
    for line in ("score-likeness", "score-matches", "score-copies"):
        assert re.search(rf'<polyline id="{line}" class="\w+" data-points="3"', page)
    assert re.findall(r'<tr class="recommended" data-step="(\d+)">', page) == ["500"]
    assert page.count("<tr") == 4  # header + 3 checkpoints
    assert 'id="validation-chart"' not in page  # no validation loss logged


def test_the_report_section_without_a_recommendation_or_a_score() -> None:
    page = score_section(report_of(None, "no face in any of the 9 samples"))
    assert 'data-step="">No checkpoint recommended: no face in any of the 9 samples' in page
    assert 'class="recommended"' not in page
    assert 'id="no-score"' in score_section(None)


def test_the_report_section_charts_validation_loss_when_there_is_one() -> None:
    doc = report_of(None, "r")
    checkpoints = tuple(
        msgspec.structs.replace(c, validation_loss=v) for c, v in zip(doc.checkpoints, (0.12, 0.11, 0.13), strict=True)
    )
    doc = msgspec.structs.replace(doc, checkpoints=checkpoints)
    assert re.search(r'<polyline id="score-validation" class="val" data-points="3"', score_section(doc))


def test_a_score_json_of_the_first_version_still_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # score.json as the first scoring wrote it: no copying flag, confidence, close, left_out, match_distance
    first = {
        "schema": 1,
        "checkpoints": [
            {"step": 250, "samples": 3, "faces": 3, "likeness": 0.6, "matches": 2, "copies": 0, "distance": 0.4,
             "variety": 0.5, "checkpoint": "x-step00000250.safetensors", "validation_loss": None, "images": []},
            {"step": 500, "samples": 3, "faces": 3, "likeness": 0.7, "matches": 3, "copies": 2, "distance": 0.3,
             "variety": 0.4, "checkpoint": "x.safetensors", "validation_loss": 0.1, "images": []},
        ],
        "recommended": {"step": 250, "checkpoint": "x-step00000250.safetensors", "likeness": 0.6, "matches": 2,
                        "samples": 3, "faces": 3, "copies": 0},
        "reason": "step 250: why",
        "references": {"where": "/photos", "photos": 4, "faces": 4},
        "samples": "/run/output/sample",
        "model": {"id": "dlib-x", "same_person_distance": 0.6, "likeness": "clip(1 - median distance / 1.2, 0, 1)",
                  "copy_correlation": 0.8},
        "seconds": 1.5,
        "cache": {"hits": 0, "misses": 10},
    }  # fmt: skip
    (tmp_path / "score.json").write_text(json.dumps(first), encoding="utf-8")
    report = load_score(tmp_path)
    assert report is not None and recommended_step(report) == 250 and report.checkpoints[1].copying is None
    assert report.match_distance == 0.6 and report.model.copy_correlation == 0.8 and report.left_out == ()
    assert recommended_line(report) == (
        "recommended: step 250 (x-step00000250.safetensors), likeness 0.6, 2/3 samples the person, no copies"
    )
    assert 'data-step="250"' in score_section(report)


def test_a_score_json_with_a_wrong_field_reads_as_not_scored_or_names_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kohya_wrap.codec import RecordError
    from kohya_wrap.score import read_score

    (tmp_path / "score.json").write_text(json.dumps({"checkpoints": [{"step": "late"}]}), encoding="utf-8")
    assert load_score(tmp_path) is None
    with pytest.raises(RecordError, match=r"score\.json: checkpoints\[0\]\.step: Expected int"):
        read_score(tmp_path)
