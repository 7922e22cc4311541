"""What a new user meets first: plan never touches the network, train's pre-flight says what is missing
offline before anything starts, `run` checks its inputs before it prepares a photo, and -o is the run
directory for plan, train and run alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import FAKE_LAUNCHER, make_dataset  # noqa: E402
from sd15_stub import write_sd15_stub  # noqa: E402

from kohya_wrap.errors import ExitCode  # noqa: E402

# Nothing listens here: a client that tried the network would fail at once, on this machine only.
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1"}


def kohya_wrap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def test_plan_of_a_hub_model_without_a_tokenizer_touches_no_network_and_train_says_what_is_missing(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    run_dir = tmp_path / "runs" / "hub"
    env = {**NO_HUB, "HF_HUB_OFFLINE": "1"}
    planned = kohya_wrap(
        "plan",
        str(dataset),
        "--preset",
        "smoke",
        "--base-model",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "-o",
        str(run_dir),
        "--json",
        env=env,
    )
    assert planned.returncode == 0, planned.stderr
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["base_model"] == {"source": "stable-diffusion-v1-5/stable-diffusion-v1-5", "path": None, "kind": "hub"}
    assert plan["tokenizer_cache_dir"] is None  # kohya-wrap's own cache, filled by train where it trains
    assert not (tmp_path / "hf-home").exists() or not any((tmp_path / "hf-home").rglob("*.safetensors"))

    dry = kohya_wrap("train", str(run_dir), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "train takes it from the Hugging Face cache or downloads it" in " ".join(dry.stdout.split())

    trained = kohya_wrap("train", str(run_dir), env={**env, "PYTHONPATH": str(FAKE_LAUNCHER)})
    assert trained.returncode == ExitCode.TRAIN_MODEL_MISSING, trained.stderr
    said = " ".join(trained.stderr.split())
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in said and "HF_HUB_OFFLINE is set" in said
    assert "Traceback" not in trained.stderr
    assert not (run_dir / "train.log").exists()  # refused in the pre-flight: no trainer started


def test_a_missing_tokenizer_is_named_before_the_trainer_starts(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    run_dir = tmp_path / "runs" / "tok"
    env = {**NO_HUB, "HF_HUB_OFFLINE": "1"}
    assert (
        kohya_wrap(
            "plan", str(dataset), "--preset", "smoke", "--base-model", str(model), "-o", str(run_dir), env=env
        ).returncode
        == 0
    )
    trained = kohya_wrap("train", str(run_dir), env=env)
    assert trained.returncode == ExitCode.TRAIN_MODEL_MISSING
    assert "CLIP tokenizer" in trained.stderr and "--tokenizer-cache-dir" in trained.stderr
    assert not (run_dir / "train.log").exists()


def test_run_refuses_a_bad_preset_before_preparing_and_leaves_nothing(tmp_path):
    from kohya_wrap.smoke.images import write_face_images

    photos = tmp_path / "photos"
    write_face_images(photos, count=3)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    run_dir = tmp_path / "runs" / "mine"
    before = sorted(p.name for p in photos.iterdir())
    for bad, said in (
        (["--preset", "nope"], "nope"),
        (["--preset", "smoke", "--set", "epoch=10"], "max_train_epochs"),
        (["--preset", "smoke", "--set", "train_batch_size=0"], "train_batch_size"),
    ):
        done = kohya_wrap(
            "run",
            str(photos),
            "--token",
            "ohwx",
            "--class",
            "man",
            *bad,
            "--base-model",
            str(model),
            "-o",
            str(run_dir),
        )
        assert done.returncode == ExitCode.ERROR, done.stderr
        assert said in done.stderr and "preparing" not in done.stderr and "Traceback" not in done.stderr
        assert not run_dir.exists()  # nothing half-made
    assert sorted(p.name for p in photos.iterdir()) == before  # photos untouched


def test_run_that_fails_to_plan_after_preparing_removes_its_run_directory(tmp_path):
    from kohya_wrap.smoke.images import write_face_images

    photos = tmp_path / "photos"
    write_face_images(photos, count=3)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    run_dir = tmp_path / "runs" / "mine"
    # prepared at 512 px (not the preset's 64), trained at 64 px without resizing: only plan, after prepare, can know
    done = kohya_wrap(
        "run",
        str(photos),
        "--token",
        "ohwx",
        "--class",
        "man",
        "--crop",
        "center",
        "--size",
        "512",
        "--allow-upscale",
        "--preset",
        "smoke",
        "--set",
        "cache_latents=false",
        "--base-model",
        str(model),
        "-o",
        str(run_dir),
    )
    assert done.returncode == ExitCode.ERROR, done.stdout + done.stderr
    assert "sd-scripts refuses images of another size" in " ".join(done.stderr.split())
    assert not run_dir.exists()


def test_o_is_the_run_directory_for_plan_train_and_run(tmp_path):
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    dataset = make_dataset(tmp_path / "data")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    write_tokenizer(tmp_path / "tok")
    common = ["--preset", "smoke", "--base-model", str(model), "--tokenizer-cache-dir", str(tmp_path / "tok")]
    for command, source in (("plan", dataset), ("train", dataset)):
        target = tmp_path / command / "my run"
        args = [command, str(source), *common, "-o", str(target)] + (["--dry-run"] if command == "train" else [])
        done = kohya_wrap(*args)
        assert done.returncode == 0, done.stderr
        if command == "plan":
            assert (target / "plan.json").is_file()
        else:
            assert f"({target} would be the run directory)" in " ".join(done.stdout.split())
    photos = tmp_path / "photos"
    write_face_images(photos, count=3)
    target = tmp_path / "run" / "my run"
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
        *common,
        "-o",
        str(target),
        env={"PYTHONPATH": str(FAKE_LAUNCHER)},
    )
    # the smoke preset's 64 px against 512 px photos is resized by cached latents; the fake trainer trains it
    assert (target / "plan.json").is_file() and (target / "dataset" / "prepare.json").is_file(), done.stderr
