"""The likeness loop's rules: when live scoring stops a run, the advice at its end, how sd-scripts is
asked to extend a run, and how score events fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from msgspec.structs import replace

from kohya_wrap import codec
from kohya_wrap.codec import decode, encode
from kohya_wrap.events import Finished, Score, StopEarly, event_line, parse_event
from kohya_wrap.rundir import FileEntry, RunFold, RunManifest
from kohya_wrap.score.advice import advise, is_copying, stop_decision
from kohya_wrap.score.records import CheckpointScore, Recommended, ScoreReport
from kohya_wrap.sdscripts.resume import SavedState, extension_args, extension_dataset_toml, plan_extension


def ckpt(step, likeness=None, matches=0, copies=0, samples=3, faces=3, checkpoint="x"):
    return CheckpointScore(
        step=step,
        samples=samples,
        faces=faces,
        likeness=likeness,
        matches=matches,
        copies=copies,
        checkpoint=checkpoint,
    )


# -- stop_decision ---------------------------------------------------------------------------


def test_copies_in_two_checkpoints_in_a_row_stop_at_any_step():
    run = [ckpt(250, 0.3), ckpt(500, 0.7, 3), ckpt(750, 0.8, 3, copies=2), ckpt(1000, 0.8, 3, copies=3)]
    decision = stop_decision(run, min_steps=2000)
    assert decision is not None and decision.step == 1000
    assert "copies persist" in decision.reason and "copies from step 750" in decision.reason


def test_one_copying_checkpoint_or_one_copy_a_checkpoint_does_not_stop():
    assert stop_decision([ckpt(250, 0.7, 3), ckpt(500, 0.8, 3, copies=3)], min_steps=0) is None
    # one sample of three is not "most": a single odd sample never stops a run
    assert stop_decision([ckpt(250, 0.7, 3, copies=1), ckpt(500, 0.8, 3, copies=1)], min_steps=0) is None


def test_the_score_s_own_copying_flag_wins_where_it_gives_one():
    assert is_copying(replace(ckpt(250, copies=1), copying=True))
    assert not is_copying(replace(ckpt(250, copies=3), copying=False))


def test_a_plateau_stops_only_past_the_minimum_steps():
    flat = [ckpt(s, 0.70, 3) for s in range(250, 2001, 250)]
    # 250 is the best (ties go to the earlier step); 2000 is the first checkpoint at the minimum
    assert stop_decision(flat[:7], min_steps=2000) is None
    assert stop_decision(flat, min_steps=2000) is None  # only one checkpoint at 2000 or later
    more = flat + [ckpt(2250, 0.70, 3), ckpt(2500, 0.705, 3)]
    decision = stop_decision(more, min_steps=2000)
    assert decision is not None and decision.step == 2500 and "not improved since step 250" in decision.reason


def test_a_rising_likeness_goes_on():
    rising = [ckpt(s, 0.3 + s / 10000, 3) for s in range(250, 3001, 250)]
    assert stop_decision(rising, min_steps=2000) is None


def test_an_extension_is_judged_on_its_own_checkpoints():
    before = [ckpt(250, 0.7, 3, copies=3), ckpt(500, 0.8, 3, copies=3)]  # why the run stopped
    assert stop_decision(before, min_steps=0, after_step=500) is None
    assert stop_decision([*before, ckpt(750, 0.8, 3, copies=3)], min_steps=0, after_step=500) is None
    after = [*before, ckpt(750, 0.8, 3, copies=3), ckpt(1000, 0.8, 3, copies=3)]
    assert stop_decision(after, min_steps=0, after_step=500) is not None


def test_no_face_never_stops():
    assert stop_decision([ckpt(s, None, faces=0) for s in range(2, 40, 2)], min_steps=2) is None


# -- advise ------------------------------------------------------------------------------------


def doc(checkpoints, recommended=None):
    rec = None
    if recommended is not None:
        rec = Recommended.of(next(c for c in checkpoints if c.step == recommended))
    return ScoreReport(checkpoints=tuple(checkpoints), recommended=rec, reason="...")


def test_advice_recommends_the_step_with_its_figures():
    advice = advise(doc([ckpt(250, 0.3), ckpt(500, 0.71, 3)], recommended=500), "runs/a b")
    assert advice.kind == "recommended" and advice.step == 500
    assert advice.text == "recommended step 500 (likeness 0.71, 3 of 3 samples the person, no copies)"
    assert advice.command == "kohya-wrap export 'runs/a b' --step 500 -o OUT.safetensors"


def test_advice_when_copies_set_in_after_the_good_step():
    scored = doc([ckpt(750, 0.69, 3), ckpt(1000, 0.69, 3), ckpt(1250, 0.75, 3, copies=3)], recommended=750)
    advice = advise(scored, "run")
    assert advice.kind == "copies" and advice.step == 750
    assert advice.text.startswith("copies from step 1250: export step 750 (likeness 0.69")
    assert advice.text.endswith("next time fewer steps or a lower learning rate")
    assert advise(doc([ckpt(250, 0.3), ckpt(500, 0.8, 3, copies=3)]), "run").kind == "copies"


def test_advice_when_nothing_is_the_person_yet():
    advice = advise(doc([ckpt(250, 0.31), ckpt(500, 0.42)]), "runs/r")
    assert advice.kind == "not_learnt" and advice.command == "kohya-wrap train --extend 1000 runs/r"
    assert (
        advice.text
        == "not learnt yet (the most alike is step 500 at likeness 0.42): `kohya-wrap train --extend 1000 runs/r`"
    )
    assert "no sample shows a face" in advise(doc([ckpt(2, None, faces=0)])).text
    assert advise(None, "r").kind == "not_scored"
    assert json.dumps(codec.to_builtins(advise(None, "r")))


# -- sd-scripts: extending ---------------------------------------------------------------------


def _state(tmp_path: Path, name: str, step: int, final: bool = False) -> SavedState:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": step}))
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        (folder / name).write_bytes(b"")
    return SavedState(folder, step, 1, final)


def test_an_early_stopped_run_continues_from_its_state_in_the_first_epoch(tmp_path):
    state = _state(tmp_path, "face-step00001500-state", 1500)
    ext = plan_extension(from_step=1500, steps=1000, weights=tmp_path / "w", states=[state], steps_per_epoch=3000)
    assert ext.state == state and ext.total_steps == 2500
    args = extension_args(ext, None)
    assert args == ["--max_train_steps", "2500", "--resume", str(state.path), "--skip_until_initial_step"]


def test_a_finished_run_continues_from_its_weights_in_one_longer_epoch(tmp_path):
    final = _state(tmp_path, "face-state", 3000, final=True)
    at_end = _state(tmp_path, "face-step00003000-state", 3000)  # past the first epoch's end: resume_problem
    weights = tmp_path / "face-step00003000.safetensors"
    ext = plan_extension(from_step=3000, steps=1000, weights=weights, states=[at_end, final], steps_per_epoch=3000)
    assert ext.state is None and ext.weights == weights and ext.repeats_factor == 3
    args = extension_args(ext, tmp_path / "dataset-extend.toml")
    assert args == [
        "--max_train_steps",
        "4000",
        "--network_weights",
        str(weights),
        "--initial_step",
        "3000",
        "--skip_until_initial_step",
        "--dataset_config",
        str(tmp_path / "dataset-extend.toml"),
    ]
    # within the first epoch the repeats stay
    assert plan_extension(from_step=4, steps=2, weights=weights, states=[], steps_per_epoch=40).repeats_factor == 1


def test_the_extension_s_dataset_config_multiplies_every_subset_s_repeats():
    import tomllib

    text = (
        '[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = 512\nbatch_size = 2\n\n'
        '[[datasets.subsets]]\nimage_dir = "/d/img/100_ohwx man"\nnum_repeats = 100\n\n'
        '[[datasets.subsets]]\nimage_dir = "/d/reg/1_man"\nis_reg = true\n'
    )
    doc = tomllib.loads(extension_dataset_toml(text, 3))
    subsets = doc["datasets"][0]["subsets"]
    assert [s["num_repeats"] for s in subsets] == [300, 3]
    assert doc["datasets"][0]["batch_size"] == 2 and doc["general"]["caption_extension"] == ".txt"


# -- records -----------------------------------------------------------------------------------


def test_score_events_round_trip_and_fold():
    score = Score(
        step=750, samples=3, faces=3, likeness=0.69, matches=3, copies=0, checkpoint="f.safetensors", recommended=750
    )
    assert parse_event(event_line(score)) == score
    stop = StopEarly(step=1500, reason="copies persist")
    fold = RunFold().feed_all([score, Score(step=500, samples=3, faces=3, likeness=None, matches=0, copies=0), stop])
    assert [s.step for s in fold.score_list] == [500, 750] and fold.stop_early == stop
    fold.feed(Finished(outcome="stopped_early", exit_code=0, returncode=-2))
    fold.feed(Score(step=1750, samples=3, faces=3, likeness=0.7, matches=3, copies=0))
    assert fold.stop_early is None and len(fold.scores) == 3  # a new segment: an extension


@pytest.mark.parametrize("final_exists", [True, False])
def test_the_last_checkpoint_of_a_run_prefers_the_step_file(tmp_path, final_exists):
    step_file, final = tmp_path / "face-step00000400.safetensors", tmp_path / "face.safetensors"
    step_file.write_bytes(b"x")
    if final_exists:
        final.write_bytes(b"x")
    manifest = RunManifest(
        run_dir=str(tmp_path),
        outcome="finished",
        exit_code=0,
        started_at=None,
        ended_at=None,
        checkpoints=(FileEntry(str(tmp_path / "face-step00000200.safetensors"), 200), FileEntry(str(step_file), 400)),
        lora=FileEntry(str(final), 400, exists=final_exists),
    )
    assert manifest.last_checkpoint is not None and manifest.last_checkpoint.path == str(step_file)
    assert manifest.ended_well and decode(encode(manifest), RunManifest, source="run.json").ended_well


def test_without_the_scorer_stop_early_says_it_is_off(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))
    from run_dir import make_run_dir

    from kohya_wrap import pipeline
    from kohya_wrap.events import Warning_

    run_dir = make_run_dir(tmp_path, sample_every_n_steps=2, ours={"stop_early": True})
    monkeypatch.setattr("kohya_wrap.score.scorer_available", lambda: "dlib is missing")
    note = pipeline.live_companion(run_dir, None)
    assert note is not None
    events = note.poll()
    assert len(events) == 1 and isinstance(events[0], Warning_) and "stop early: off" in events[0].message
    assert note.poll() == [] and note.close() == []
    assert pipeline.live_companion(run_dir, False) is None  # --no-stop-early: nothing to say


def test_ctrl_c_while_a_finished_run_is_scored_skips_the_score_and_keeps_the_run_finished(tmp_path, monkeypatch):
    """SIGINT in the end-of-run scoring (the trainer is gone: Python's KeyboardInterrupt) stops the scoring only."""
    from kohya_wrap import pipeline

    def interrupted(run_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr("kohya_wrap.score.scorer_available", lambda: None)
    monkeypatch.setattr("kohya_wrap.score.score_run", interrupted)
    score, note = pipeline.score_finished_run(tmp_path, pipeline.Stages())
    assert score is None and note is not None
    assert "interrupted" in note and "kohya-wrap score RUN_DIR" in note
