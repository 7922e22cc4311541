"""The train stage driven through the fake trainer (tests/fakes/fake_trainer.py): every event kind,
every failure class, NaN, resume, the files it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir, set_fake_args  # noqa: E402

from kohya_wrap.errors import ExitCode, KohyaWrapError, RunDirError, TrainerNotFound  # noqa: E402
from kohya_wrap.events import (  # noqa: E402
    Checkpoint,
    Epoch,
    Error,
    Finished,
    Phase,
    Progress,
    Sample,
    StateSaved,
    Summary,
    Warning_,
    read_events,
)
from kohya_wrap.train.runner import TrainOptions, run_training  # noqa: E402


def events_of(run_dir: Path):
    return list(read_events(run_dir / "events.jsonl"))


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_finished_run_emits_every_event_kind_and_writes_everything(tmp_path):
    run_dir = make_run_dir(tmp_path, sample_every_n_steps=2, fake_args=("--step-delay", "0.05"))
    seen = []
    result = run_training(run_dir, on_event=seen.append)
    assert result.outcome == "finished" and result.exit_code == 0 and result.returncode == 0
    events = events_of(run_dir)
    assert [type(e) for e in events] == [type(e) for e in seen]  # the callback saw what the file holds
    kinds = {e.type for e in events}
    assert kinds == {
        "phase",
        "summary",
        "epoch",
        "progress",
        "checkpoint",
        "state_saved",
        "sample",
        "warning",
        "finished",
    }
    assert [p.phase for p in of(events, Phase)][0] == "preparing" and of(events, Phase)[-1].phase == "finished"
    assert of(events, Summary)[0].total_steps == 4
    assert of(events, Epoch) == [Epoch(epoch=1, total=1)]
    assert of(events, Progress)[-1].step == 4 and of(events, Progress)[-1].total == 4
    out = run_dir / "output"
    assert [(Path(c.path).name, c.step) for c in of(events, Checkpoint)] == [
        ("face-step00000002.safetensors", 2),
        ("face-step00000004.safetensors", 4),
        ("face.safetensors", None),
    ]
    assert [(Path(s.path).name, s.step) for s in of(events, StateSaved)] == [
        ("face-step00000002-state", 2),
        ("face-step00000004-state", 4),
        ("face-state", 4),
    ]
    assert sorted((s.step, s.prompt_index) for s in of(events, Sample)) == [(2, 0), (4, 0)]
    assert all(Path(s.path).is_file() for s in of(events, Sample))
    assert of(events, Warning_) == [Warning_(message="no regularization images")]
    assert events[-1] == Finished(outcome="finished", exit_code=0, returncode=0)

    log = (run_dir / "train.log").read_bytes()
    assert b"\rsteps: 100%" in log and b"saving checkpoint: " in log and "正則化画像".encode() in log

    assert result.verification is not None and result.verification.ok
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "finished" and manifest["exit_code"] == 0
    assert manifest["preset"] == {"name": "test-preset", "sha256": "0" * 64}
    assert manifest["dataset_manifest_sha256"] == "1" * 64
    assert manifest["values"]["network_dim"] == 4
    assert len(manifest["base_model"]["sha256"]) == 64
    assert manifest["environment"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "torch" in manifest["environment"] and "gpu" in manifest["environment"]
    assert [Path(c["path"]).name for c in manifest["checkpoints"]] == [
        "face-step00000002.safetensors",
        "face-step00000004.safetensors",
        "face.safetensors",
    ]
    assert all(len(c["sha256"]) == 64 for c in manifest["checkpoints"])
    assert manifest["lora"]["path"] == str(out / "face.safetensors")
    assert manifest["final_loss"] == pytest.approx(of(events, Progress)[-1].avr_loss)
    assert manifest["steps"] == {"planned": 4, "reached": 4, "trainer_total": 4, "extended_to": None}
    assert manifest["verification"]["ok"] is True
    assert len(manifest["attempts"]) == 1 and manifest["attempts"][0]["argv"][0] == sys.executable


def test_plain_run_without_launcher(tmp_path):
    result = run_training(make_run_dir(tmp_path, launcher=False))
    assert result.outcome == "finished"


@pytest.mark.parametrize(
    "fake_args, outcome, exit_code, returncode",
    [
        (("--replay", "F1_missing_base"), "model_missing", ExitCode.TRAIN_MODEL_MISSING, 1),
        (("--replay", "F2_empty_data"), "no_data", ExitCode.TRAIN_NO_DATA, 0),
        (("--replay", "F3c_dataset_unknown_key"), "config_rejected", ExitCode.TRAIN_CONFIG_REJECTED, 1),
        (("--replay", "F3d_dataset_wrong_type"), "config_rejected", ExitCode.TRAIN_CONFIG_REJECTED, 1),
        (("--replay", "F3b_train_wrong_type"), "crashed", ExitCode.TRAIN_CRASHED, 1),
        (("--replay", "F4_corrupt_image"), "crashed", ExitCode.TRAIN_CRASHED, 1),
        (("--missing-package",), "missing_package", ExitCode.TRAIN_MISSING_PACKAGE, 1),
        (("--oom-at", "3"), "oom", ExitCode.TRAIN_OOM, 1),
        (("--crash-at", "3"), "crashed", ExitCode.TRAIN_CRASHED, 1),
        (
            ("--kill-self-at", "3"),
            "killed",
            ExitCode.TRAIN_KILLED,
            1,
        ),  # accelerate: exit 1, "died with <Signals.SIGKILL: 9>"
        (("--zero-up",), "verify_failed", ExitCode.TRAIN_VERIFY_FAILED, 0),
    ],
)
def test_failure_classes(tmp_path, fake_args, outcome, exit_code, returncode):
    run_dir = make_run_dir(tmp_path, fake_args=fake_args)
    result = run_training(run_dir)
    assert (result.outcome, result.exit_code, result.returncode) == (outcome, exit_code, returncode)
    assert events_of(run_dir)[-1] == Finished(outcome=outcome, exit_code=exit_code, returncode=returncode)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == outcome and manifest["exit_code"] == exit_code
    assert result.advice


def test_killed_without_launcher_is_a_negative_returncode(tmp_path):
    result = run_training(make_run_dir(tmp_path, launcher=False, fake_args=("--kill-self-at", "2")))
    assert (result.outcome, result.returncode) == ("killed", -9)


def test_crash_keeps_the_last_40_lines_and_the_log(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--replay", "F4_corrupt_image"))
    result = run_training(run_dir)
    assert 0 < len(result.tail) <= 40
    assert any("ZeroDivisionError" in line for line in result.tail)
    assert result.log_path == run_dir / "train.log"
    raw = (Path(__file__).parents[1] / "data/transcripts/F4_corrupt_image.pipe.stderr.txt").read_bytes()
    assert raw in (run_dir / "train.log").read_bytes() or len((run_dir / "train.log").read_bytes()) == len(raw)


def test_train_log_keeps_every_byte_of_both_streams(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--replay", "A_cli"))
    run_training(run_dir, TrainOptions(verify=False))
    transcripts = Path(__file__).parents[1] / "data/transcripts"
    stderr = (transcripts / "A_cli.pipe.stderr.txt").read_bytes()
    stdout = (transcripts / "A_cli.pipe.stdout.txt").read_bytes()
    log = (run_dir / "train.log").read_bytes()
    assert len(log) == len(stderr) + len(stdout)
    assert sorted(log) == sorted(stderr + stdout)


def test_nan_stops_the_run(tmp_path):
    run_dir = make_run_dir(
        tmp_path, max_train_steps=40, save_every_n_steps=100, fake_args=("--nan-at", "3", "--step-delay", "0.1")
    )
    result = run_training(run_dir)
    assert (result.outcome, result.exit_code) == ("nan", ExitCode.TRAIN_NAN)
    events = events_of(run_dir)
    assert [e.kind for e in of(events, Error)][0] == "nan"
    assert of(events, Progress)[-1].step < 40  # stopped, not trained to the end
    assert "bf16" in result.advice


def test_allow_nan_keeps_training(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, fake_args=("--nan-at", "3"))
    result = run_training(run_dir, TrainOptions(allow_nan=True))
    assert result.outcome == "finished" and of(events_of(run_dir), Progress)[-1].step == 6


def test_resume_continues_to_the_right_final_step(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, save_every_n_steps=2, fake_args=("--crash-at", "5"))
    first = run_training(run_dir)
    assert first.outcome == "crashed"
    assert first.last_state is not None and first.last_state.step == 4
    assert first.resume_command == f"kohya-wrap train --resume {run_dir}"
    # the second attempt must not crash: take the fault out of the plan, as a user would fix a cause
    set_fake_args(run_dir, ())
    second = run_training(run_dir, TrainOptions(resume=True))
    assert second.outcome == "finished", second.tail
    assert second.resumed_from == str(run_dir / "output" / "face-step00000004-state")
    events = events_of(run_dir)
    last_attempt = events[[i for i, e in enumerate(events) if isinstance(e, Finished)][0] + 1 :]
    progress = of(last_attempt, Progress)
    assert (progress[0].step, progress[0].total) == (4, 6)
    assert [p.step for p in progress][-1] == 6
    manifest = json.loads((run_dir / "run.json").read_text())
    assert [a["outcome"] for a in manifest["attempts"]] == ["crashed", "finished"]
    assert manifest["attempts"][1]["argv"][-3:] == ["--resume", second.resumed_from, "--skip_until_initial_step"]
    assert manifest["verification"]["ok"] is True


def test_finished_run_is_never_overwritten_or_resumed(tmp_path):
    run_dir = make_run_dir(tmp_path)
    assert run_training(run_dir).outcome == "finished"
    with pytest.raises(RunDirError, match="finished run"):
        run_training(run_dir)
    with pytest.raises(RunDirError, match="finished run"):
        run_training(run_dir, TrainOptions(resume=True))


def test_started_run_dir_needs_resume(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--crash-at", "3"))  # after the state of step 2
    run_training(run_dir)
    with pytest.raises(RunDirError, match="already holds a training attempt") as e:
        run_training(run_dir)
    assert "--resume" in e.value.hint
    before_a_save = make_run_dir(tmp_path / "early", fake_args=("--crash-at", "1"))
    run_training(before_a_save)
    with pytest.raises(RunDirError, match="already holds a training attempt") as e:
        run_training(before_a_save)
    assert "--resume" not in e.value.hint and "it stopped before its first save" in e.value.hint


def test_resume_without_a_saved_state_says_so(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--crash-at", "1"))
    run_training(run_dir)
    with pytest.raises(RunDirError, match="no saved state"):
        run_training(run_dir, TrainOptions(resume=True))


def test_missing_trainer_is_a_clear_error(tmp_path, monkeypatch):
    run_dir = make_run_dir(tmp_path)
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(tmp_path / "no-such-checkout"))
    with pytest.raises(TrainerNotFound, match="no-such-checkout"):
        run_training(run_dir)
    assert not (run_dir / "train.log").exists()  # refused before anything started


def test_not_a_planned_run_dir(tmp_path):
    with pytest.raises(RunDirError, match="has no plan.json"):
        run_training(tmp_path)


def test_after_saving_hook_runs_at_each_checkpoint_and_at_the_end(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2)
    calls = []

    def hook(path):
        # what the run has recorded by then: run.json exists only for the last call
        calls.append(((path / "events.jsonl").read_text().count('"checkpoint"'), (path / "run.json").exists()))

    result = run_training(run_dir, on_saved=hook)
    assert result.outcome == "finished" and result.warnings == ()
    checkpoints = len(of(events_of(run_dir), Checkpoint))
    assert checkpoints == 3  # steps 2 and 4, and the final file
    assert calls == [(i, False) for i in range(1, checkpoints + 1)] + [(checkpoints, True)]


def test_a_failing_hook_is_a_warning_not_a_failed_run(tmp_path):
    run_dir = make_run_dir(tmp_path)

    def hook(path):
        raise OSError("disk full")

    result = run_training(run_dir, on_saved=hook)
    assert result.outcome == "finished"
    assert result.warnings == ("after saving: OSError: disk full",)
    assert any("disk full" in w.message for w in of(events_of(run_dir), Warning_))


def _crash_then_fix(run_dir: Path) -> None:
    set_fake_args(run_dir, ())


def test_resume_when_the_local_base_model_is_gone_stops_before_launch(tmp_path):
    from kohya_wrap.errors import ModelGone

    run_dir = make_run_dir(tmp_path, fake_args=("--crash-at", "3"))
    assert run_training(run_dir).outcome == "crashed"
    _crash_then_fix(run_dir)
    (tmp_path / "base.safetensors").unlink()
    log_size = (run_dir / "train.log").stat().st_size
    with pytest.raises(ModelGone, match="no longer exists") as e:
        run_training(run_dir, TrainOptions(resume=True))
    assert e.value.exit_code == ExitCode.TRAIN_MODEL_MISSING == 11
    assert (run_dir / "train.log").stat().st_size == log_size  # nothing was launched


def test_resume_fetches_a_hub_model_whose_cached_file_is_gone(tmp_path, monkeypatch):
    """A new Colab runtime has an empty Hugging Face cache; the run folder on Drive names the old file."""
    import kohya_wrap.models as models

    run_dir = make_run_dir(tmp_path, fake_args=("--crash-at", "3"))
    plan = json.loads((run_dir / "plan.json").read_text())
    old = tmp_path / "hf-cache" / "snapshots" / "aaa" / "v1-5.safetensors"
    plan["base_model"] = {"source": "stable-diffusion-v1-5/stable-diffusion-v1-5", "path": str(old), "kind": "hub"}
    (run_dir / "plan.json").write_text(json.dumps(plan))
    old.parent.mkdir(parents=True)
    old.write_bytes(_tiny_safetensors())
    assert run_training(run_dir).outcome == "crashed"
    _crash_then_fix(run_dir)
    old.unlink()  # the runtime was recycled: the cache is gone
    fresh = tmp_path / "hf-cache" / "snapshots" / "bbb" / "v1-5.safetensors"
    fetched = []

    def fake_hub_file(repo, filename, what):  # the network boundary
        fetched.append((repo, filename))
        fresh.parent.mkdir(parents=True)
        fresh.write_bytes(_tiny_safetensors())
        return fresh

    monkeypatch.setattr(models, "_hub_file", fake_hub_file)
    result = run_training(run_dir, TrainOptions(resume=True))
    assert result.outcome == "finished", result.tail
    assert fetched == [("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors")]
    manifest = json.loads((run_dir / "run.json").read_text())
    argv = manifest["attempts"][-1]["argv"]
    assert argv[argv.index("--pretrained_model_name_or_path") + 1] == str(fresh)
    assert manifest["base_model"]["path"] == str(fresh)
    assert any("fetched again" in w.message for w in of(events_of(run_dir), Warning_))


def _tiny_safetensors() -> bytes:
    import tempfile

    from sd15_stub import write_sd15_stub

    with tempfile.TemporaryDirectory() as tmp:
        return write_sd15_stub(Path(tmp) / "m.safetensors").read_bytes()


def test_resume_past_the_first_epoch_is_refused_and_nothing_is_overwritten(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, save_every_n_steps=2, fake_args=("--crash-at", "5"))
    plan = json.loads((run_dir / "plan.json").read_text())
    plan["steps"].update(steps_per_epoch=3, epochs=2)  # the state of step 4 is in epoch 2
    (run_dir / "plan.json").write_text(json.dumps(plan))
    assert run_training(run_dir).outcome == "crashed"
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "output").iterdir()}
    log_size = (run_dir / "train.log").stat().st_size
    with pytest.raises(RunDirError, match="past the first epoch") as e:
        run_training(run_dir, TrainOptions(resume=True))
    assert "face-step00000004-state, step 4" in e.value.message and "plan a new run" in e.value.hint
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "output").iterdir()} == before
    assert (run_dir / "train.log").stat().st_size == log_size


def test_an_optimizer_whose_package_is_missing_where_it_trains_stops_before_launch(tmp_path):
    """Planned where bitsandbytes was installed, trained where it is not: train's pre-flight says so (exit 14)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    run_dir = make_run_dir(tmp_path)
    plan = json.loads((run_dir / "plan.json").read_text())
    plan["values"]["optimizer_type"] = {"value": "AdamW8bit", "source": "--set"}
    (run_dir / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(KohyaWrapError, match="bitsandbytes") as e:
        run_training(run_dir)
    assert e.value.exit_code == ExitCode.TRAIN_MISSING_PACKAGE == 14
    assert not (run_dir / "train.log").exists()
