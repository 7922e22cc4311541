"""`kohya-wrap train` as a user runs it: --json event stream, plain output off a terminal, exit codes, --dry-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.events import parse_event  # noqa: E402

ROOT = Path(__file__).parents[2]


def kohya_wrap(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_json_streams_events_on_stdout(tmp_path):
    run_dir = make_run_dir(tmp_path, sample_every_n_steps=2)
    done = kohya_wrap("train", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    *lines, last = done.stdout.splitlines()
    events = [parse_event(line) for line in lines]  # every line is one event, then the result
    assert events[0].type == "phase" and events[-1].type == "finished" and events[-1].outcome == "finished"
    assert {e.type for e in events} >= {"summary", "progress", "checkpoint", "state_saved", "sample", "epoch"}
    assert lines == (run_dir / "events.jsonl").read_text().splitlines()
    result = json.loads(last)
    assert result["type"] == "result" and result["outcome"] == "finished" and result["exit_code"] == 0


def test_plain_output_and_where_the_lora_goes(tmp_path):
    run_dir = make_run_dir(tmp_path)
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == 0, done.stderr
    text = " ".join((done.stdout + done.stderr).split())
    assert "step 4/4" in text and "checkpoint:" in text
    assert "models/Lora/" in text and "models/loras/" in text and "<lora:face:0.8>" in text
    assert "ok trained" in text


def test_no_data_fails_with_its_own_exit_code(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--replay", "F2_empty_data"))
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == ExitCode.TRAIN_NO_DATA
    assert "training no_data" in done.stderr and "train.log" in done.stderr
    assert "prepare" in done.stderr  # the advice


def test_crash_shows_the_tail_and_the_log(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--replay", "F3b_train_wrong_type"))
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == ExitCode.TRAIN_CRASHED
    output = done.stdout + done.stderr
    assert "TypeError: unsupported operand type(s) for -: 'str' and 'int'" in output
    assert str(run_dir / "train.log") in " ".join(output.split()).replace(" ", "") or "train.log" in output


def test_resume_needs_a_saved_state(tmp_path):
    run_dir = make_run_dir(tmp_path, fake_args=("--crash-at", "1"))
    kohya_wrap("train", str(run_dir))
    done = kohya_wrap("train", "--resume", str(run_dir))
    assert done.returncode == ExitCode.ERROR and "no saved state" in done.stderr


def test_dry_run_prints_command_env_and_configs_and_starts_nothing(tmp_path):
    from sd15_stub import write_sd15_stub

    from kohya_wrap.sdscripts.layout import TRAIN_DIR, subset_dir_name
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    dataset = tmp_path / "dataset"
    for image in write_face_images(dataset / TRAIN_DIR / subset_dir_name(1, "ohwx man"), count=4):
        image.with_suffix(".txt").write_text("a photo of ohwx man\n")
    model = write_sd15_stub(tmp_path / "model.safetensors")
    write_tokenizer(tmp_path / "tok")
    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")
    runs = tmp_path / "runs"
    done = kohya_wrap(
        "train",
        str(dataset),
        "--preset",
        "smoke",
        "--base-model",
        str(model),
        "-o",
        str(runs),
        "--tokenizer-cache-dir",
        str(tmp_path / "tok"),
        "--sd-scripts",
        str(checkout),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "train_network.py" in done.stdout and "--config_file" in done.stdout
    assert "PYTHONUNBUFFERED=1" in done.stdout
    assert "config.toml" in done.stdout and "dataset.toml" in done.stdout and "[[datasets]]" in done.stdout
    assert not runs.exists()  # nothing written, nothing started
    as_json = kohya_wrap(
        "train",
        str(dataset),
        "--preset",
        "smoke",
        "--base-model",
        str(model),
        "-o",
        str(runs),
        "--tokenizer-cache-dir",
        str(tmp_path / "tok"),
        "--sd-scripts",
        str(checkout),
        "--dry-run",
        "--json",
    )
    data = json.loads(as_json.stdout)
    assert "--config_file" in data["argv"] and "config.toml" in data["files"] and data["env"]["PYTHONUNBUFFERED"] == "1"
    assert not runs.exists()


def test_run_prepares_plans_and_dry_runs(tmp_path):
    from sd15_stub import write_sd15_stub

    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    photos = tmp_path / "photos"
    write_face_images(photos, count=4)
    model = write_sd15_stub(tmp_path / "model.safetensors")
    write_tokenizer(tmp_path / "tok")
    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")
    runs = tmp_path / "runs"
    done = kohya_wrap(
        "run",
        str(photos),
        "--token",
        "ohwx",
        "--class",
        "man",
        "--crop",
        "center",
        "--allow-upscale",
        "--preset",
        "smoke",
        "--base-model",
        str(model),
        "--runs-dir",
        str(runs),
        "--tokenizer-cache-dir",
        str(tmp_path / "tok"),
        "--sd-scripts",
        str(checkout),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "train_network.py" in done.stdout and "[[datasets]]" in done.stdout
    # prepared into a scratch folder (the plan needs a dataset to count), then nothing kept, nothing started
    assert not runs.exists()


def test_train_writes_the_report_and_names_it(tmp_path):
    run_dir = make_run_dir(tmp_path, sample_every_n_steps=2)
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == 0, done.stderr
    report = run_dir / "report.html"
    assert report.is_file() and "report:" in done.stdout
    page = report.read_text()
    assert 'data-outcome="finished"' in page and "data:image/jpeg;base64," in page


def test_a_stopped_run_has_a_report_too(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, fake_args=("--crash-at", "5"))
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == ExitCode.TRAIN_CRASHED
    assert 'data-outcome="crashed"' in (run_dir / "report.html").read_text()


def test_dry_run_of_a_planned_run_dir_and_of_a_resume_starts_nothing(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, fake_args=("--crash-at", "5"))
    planned = kohya_wrap("train", str(run_dir), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    checkout = Path(os.environ["KOHYA_WRAP_SD_SCRIPTS"])  # the process tier's stand-in checkout
    assert str(checkout / "train_network.py") in planned.stdout and "nothing started" in planned.stdout
    assert not (run_dir / "train.log").exists() and not (run_dir / "events.jsonl").exists()
    kohya_wrap("train", str(run_dir))  # crashes at step 5 after saving the state of step 4
    log = (run_dir / "train.log").read_bytes()
    resume = kohya_wrap("train", "--resume", str(run_dir), "--dry-run")
    assert resume.returncode == 0, resume.stderr
    state = run_dir / "output" / "face-step00000004-state"
    assert f"--resume {state} --skip_until_initial_step" in resume.stdout
    assert f"resumes from {state} at step 4" in " ".join(resume.stdout.split())
    as_json = json.loads(kohya_wrap("train", "--resume", str(run_dir), "--dry-run", "--json").stdout)
    assert as_json["argv"][-3:] == ["--resume", str(state), "--skip_until_initial_step"]
    assert (run_dir / "train.log").read_bytes() == log  # nothing ran


def test_resume_with_the_base_model_gone_exits_11_before_launch(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=6, fake_args=("--crash-at", "5"))
    kohya_wrap("train", str(run_dir))
    (tmp_path / "base.safetensors").unlink()
    done = kohya_wrap("train", "--resume", str(run_dir))
    assert done.returncode == ExitCode.TRAIN_MODEL_MISSING
    assert "base.safetensors" in done.stderr and "no longer exists" in done.stderr and "Traceback" not in done.stderr


def test_planning_options_are_refused_for_a_planned_run(tmp_path):
    run_dir = make_run_dir(tmp_path)
    for extra in (["--set", "network_dim=8"], ["--gpus", "2"], ["--num-machines", "2"]):
        done = kohya_wrap("train", str(run_dir), *extra)
        assert done.returncode == 2 and "trains as planned" in done.stderr, extra
    assert not (run_dir / "train.log").exists()


def test_train_scores_a_finished_run_and_says_why_nothing_is_recommended(tmp_path):
    pytest.importorskip("dlib", reason="score's identity model (the [score] extra) is not installed")
    run_dir = make_run_dir(tmp_path, sample_every_n_steps=2)
    reference = tmp_path / "dataset" / "img" / "1_ohwx man"
    reference.mkdir(parents=True)
    plan = json.loads((run_dir / "plan.json").read_text())
    plan["dataset"]["subsets"] = [
        {"dir": str(reference), "images": 1, "repeats": 1, "class_tokens": "ohwx man", "is_reg": False}
    ]
    (run_dir / "plan.json").write_text(json.dumps(plan))
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 180, 160)).save(reference / "0001.png")
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert "score: no checkpoint recommended: no face" in said  # the fake trainer's samples are noise
    score = json.loads((run_dir / "score.json").read_text())
    assert score["recommended"] is None and [c["step"] for c in score["checkpoints"]] == [2, 4]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "finished" and manifest["score"]["recommended"] is None
    assert manifest["score"]["reason"] == score["reason"]
    assert 'id="score' in (run_dir / "report.html").read_text()
    status = json.loads(kohya_wrap("status", str(run_dir), "--json").stdout)
    assert status["score"].startswith("no checkpoint recommended") and status["recommended_step"] is None


def test_a_stopped_run_that_cannot_resume_says_plan_a_new_run_everywhere(tmp_path):
    """train's next step after a stop agrees with what `train` and `train --resume` then do: no resume command for a
    run stopped before its first save, nor for one whose last state is past the first epoch."""
    early = make_run_dir(tmp_path / "early", max_train_steps=6, save_every_n_steps=4, fake_args=("--crash-at", "2"))
    first = kohya_wrap("train", str(early))
    assert first.returncode == ExitCode.TRAIN_CRASHED
    assert "resume with" not in first.stdout and "it stopped before its first save" in first.stdout
    again = kohya_wrap("train", str(early))
    assert again.returncode == 1 and "--resume" not in again.stderr and "plan a new run" in again.stderr

    late = make_run_dir(tmp_path / "late", max_train_steps=6, save_every_n_steps=2, fake_args=("--crash-at", "5"))
    plan = json.loads((late / "plan.json").read_text())
    plan["steps"].update(steps_per_epoch=3, epochs=2)  # the state of step 4 is in epoch 2
    (late / "plan.json").write_text(json.dumps(plan))
    first = kohya_wrap("train", str(late))
    assert first.returncode == ExitCode.TRAIN_CRASHED
    assert "resume with" not in first.stdout and "past the first epoch" in " ".join(first.stdout.split())
    again = kohya_wrap("train", str(late))
    assert again.returncode == 1 and "--resume" not in again.stderr and "plan a new run" in again.stderr
    assert kohya_wrap("train", "--resume", str(late)).returncode == 1


def test_a_dataset_folder_gone_since_the_plan_stops_train_before_launch(tmp_path):
    photos = tmp_path / "dataset" / "img" / "1_ohwx man"
    photos.mkdir(parents=True)
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (64, 64), (i * 90, 90, 140)).save(photos / f"{i:04d}.png")
    run_dir = make_run_dir(tmp_path, photos=photos)
    photos.rename(tmp_path / "moved")
    done = kohya_wrap("train", str(run_dir))
    assert done.returncode == ExitCode.TRAIN_NO_DATA == 12
    assert f"dataset folder {photos} (planned for this run) no longer exists" in done.stderr
    assert "Traceback" not in done.stderr and not (run_dir / "train.log").exists()
    dry = kohya_wrap("train", str(run_dir), "--dry-run")  # starts nothing: says it
    assert dry.returncode == 0 and "train would stop here" in " ".join(dry.stdout.split())
