import json

import pytest

from kohya_wrap.errors import ExitCode
from kohya_wrap.events import Error
from kohya_wrap.sdscripts.resume import latest_state, resume_args, saved_states
from kohya_wrap.train.outcome import ADVICE, EXIT_CODES, TrainingFailed, classify


def errs(*kinds):
    return [Error(message=k, kind=k) for k in kinds]


@pytest.mark.parametrize(
    "returncode, stop, kinds, lora, outcome",
    [
        (0, None, (), True, "finished"),
        (0, None, (), False, "crashed"),  # exit 0 but no LoRA: not a success
        (0, None, ("no_data",), False, "no_data"),  # sd-scripts exits 0 on "No data found"
        (1, None, ("exception", "launcher"), False, "crashed"),
        (1, None, ("oom", "launcher"), False, "oom"),
        (1, None, ("config_rejected", "config_rejected", "launcher"), False, "config_rejected"),
        (1, None, ("model_missing", "launcher"), False, "model_missing"),
        (1, None, ("missing_package",), False, "missing_package"),
        (1, None, ("killed",), False, "killed"),  # accelerate: "died with <Signals.SIGKILL: 9>"
        (-9, None, (), False, "killed"),
        (-2, "interrupt", ("interrupted", "interrupted"), False, "interrupted"),
        (-2, "nan", ("nan", "interrupted"), False, "nan"),
        (1, "orphaned", (), False, "killed"),
        (1, None, ("interrupted",), False, "interrupted"),  # someone sent SIGINT to the trainer itself
    ],
)
def test_classify(returncode, stop, kinds, lora, outcome):
    assert classify(returncode, stop, errs(*kinds), lora) == outcome


def test_every_outcome_has_a_distinct_exit_code_and_advice():
    ended_well = ("finished", "stopped_early")  # live scoring stopping a run early is a success
    codes = [int(c) for o, c in EXIT_CODES.items() if o not in ended_well]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert all(EXIT_CODES[o] == 0 for o in ended_well)
    assert EXIT_CODES["interrupted"] == ExitCode.INTERRUPTED == 130
    assert all(ADVICE[o] for o in EXIT_CODES if o not in (*ended_well, "interrupted"))
    e = TrainingFailed("oom", "training oom at step 3/4")
    assert e.exit_code == ExitCode.TRAIN_OOM and e.outcome == "oom"


def test_a_stop_for_live_scoring_is_stopped_early_unless_the_trainer_finished_first():
    assert classify(-2, "early", errs("interrupted"), False) == "stopped_early"
    assert classify(1, "early", errs("interrupted"), False) == "stopped_early"
    assert classify(0, "early", [], True) == "finished"


def _state(out, name, step, epoch=1, complete=True):
    (out / name).mkdir(parents=True)
    (out / name / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": step}))
    for file in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")[: 4 if complete else 1]:
        (out / name / file).write_bytes(b"")


def test_latest_state_and_resume_args(tmp_path):
    out = tmp_path / "output"
    _state(out, "face-step00000002-state", 2)
    _state(out, "face-step00000004-state", 4)
    _state(out, "other-step00000009-state", 9)  # another output name
    (out / "face-step00000006-state").mkdir()  # interrupted while saving: no train_state.json
    _state(out, "face-step00000008-state", 8, complete=False)  # Ctrl-C after train_state.json, before the rest
    state = latest_state(out, "face")
    assert state.path.name == "face-step00000004-state" and state.step == 4 and not state.is_final
    assert resume_args(state.path) == ["--resume", str(state.path), "--skip_until_initial_step"]
    assert resume_args(state.path, 44)[-2:] == ["--initial_step", "44"]
    # our events know the true step of a state saved after a resume past epoch 1 (docs/sd-scripts.md#step-counter-after-a-resume)
    assert latest_state(out, "face", {str(out / "face-step00000002-state"): 42}).step == 42
    _state(out, "face-state", 4)
    assert latest_state(out, "face").is_final  # the end-of-training state: nothing to resume
    assert len(saved_states(out, "face")) == 3
    assert latest_state(tmp_path / "missing", "face") is None
