"""What a new user hit (issue 19): `run` prepares as its preset asks and shows every plan warning, a
truncated base model is caught before training, and the other first-walk surprises, each through the CLI."""

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


def kohya_wrap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join((done.stdout + done.stderr).split())


def test_run_prepares_at_the_presets_size_and_crop_and_shows_the_plans_warnings(tmp_path):
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    photos = tmp_path / "photos"
    write_face_images(photos, count=3)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    write_tokenizer(tmp_path / "tok")
    common = ["--preset", "smoke", "--base-model", str(model), "--tokenizer-cache-dir", str(tmp_path / "tok")]
    words = ["--token", "ohwx", "--class", "man"]
    # no --size, no --crop: the smoke preset's 64 px and centre crop (no photo dropped as "smaller than 512 px")
    target = tmp_path / "runs" / "preset"
    done = kohya_wrap("run", str(photos), *words, *common, "-o", str(target), env={"PYTHONPATH": str(FAKE_LAUNCHER)})
    assert done.returncode == 0, done.stdout + done.stderr
    parameters = json.loads((target / "dataset" / "prepare.json").read_text())["parameters"]
    assert (parameters["size"], parameters["crop"]) == (64, "center")
    assert "(resized)" not in said(done)  # the images are what the plan trains at

    # given on the command line, --size wins; the plan's warning (resized to 64 px) reaches the terminal
    target = tmp_path / "runs" / "given"
    done = kohya_wrap(
        "run",
        str(photos),
        *words,
        "--size",
        "512",
        "--allow-upscale",
        *common,
        "-o",
        str(target),
        env={"PYTHONPATH": str(FAKE_LAUNCHER)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((target / "dataset" / "prepare.json").read_text())["parameters"]["size"] == 512
    assert "warning: 1_ohwx man: images are 512x512 px, trained at 64 (resized)" in said(done)


def sweep(env, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    from sweep_env import ROOT, kohya_wrap_argv, sweep_process_env

    return subprocess.run(
        kohya_wrap_argv("sweep", *env.args(), *extra, "-o", str(out)),
        cwd=ROOT,
        env={**sweep_process_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_sweep_shows_its_plan_warnings_runs_lists_its_runs_and_its_report_tells_scored_from_not(tmp_path):
    from sweep_env import make_sweep_env

    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    done = sweep(env, out, "--grid", "network_dim=4,8")
    assert done.returncode == 0, done.stderr
    names = ("ohwx__network_dim-4", "ohwx__network_dim-8")
    for name in names:
        assert f"warning: {name}: 1_ohwx man: images are" in said(done)

    # `runs SWEEP_DIR` lists the sweep's runs
    listed = kohya_wrap("runs", str(out), "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(Path(r["run_dir"]).name for r in json.loads(listed.stdout)) == list(names)
    table = kohya_wrap("runs", str(out))
    assert all(name in table.stdout for name in names) and "no runs" not in table.stdout

    # every variant scored, no sample drew a face: the report says so, not "not scored yet"
    reason = "no face in any of the 2 samples: the model draws no faces yet"
    for name in names:
        score = {"schema": 1, "checkpoints": [{"step": 2, "samples": 1, "faces": 0, "likeness": None}]}
        score.update(recommended=None, reason=reason)
        (out / "runs" / name / "score.json").write_text(json.dumps(score))
    report = kohya_wrap("report", str(out))
    assert report.returncode == 0, report.stderr
    page = " ".join((out / "report.html").read_text().split())
    assert "Every variant was scored, and no sample of any checkpoint drew a face" in page
    assert "not been scored yet" not in page and reason in page
    assert "no variant has a score yet" not in page


def test_a_truncated_base_model_is_refused_by_plan_and_by_trains_preflight(tmp_path):
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    dataset = make_dataset(tmp_path / "data")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    write_tokenizer(tmp_path / "tok")
    common = ["--preset", "smoke", "--tokenizer-cache-dir", str(tmp_path / "tok")]
    whole = model.read_bytes()
    model.write_bytes(whole[:-10])  # an interrupted download: the whole header, part of the data
    run_dir = tmp_path / "runs" / "cut"
    planned = kohya_wrap("plan", str(dataset), *common, "--base-model", str(model), "-o", str(run_dir))
    assert planned.returncode == ExitCode.ERROR, planned.stdout + planned.stderr
    assert "truncated" in said(planned) and "get it again" in said(planned)
    assert "Traceback" not in planned.stderr and not run_dir.exists()

    # planned while whole, cut before training: train's pre-flight stops it, no trainer starts
    model.write_bytes(whole)
    assert kohya_wrap("plan", str(dataset), *common, "--base-model", str(model), "-o", str(run_dir)).returncode == 0
    model.write_bytes(whole[:-10])
    trained = kohya_wrap("train", str(run_dir), env={"PYTHONPATH": str(FAKE_LAUNCHER)})
    assert trained.returncode == ExitCode.TRAIN_MODEL_MISSING, trained.stdout + trained.stderr
    assert "truncated" in said(trained) and "get it again" in said(trained)
    assert "Traceback" not in trained.stderr and not (run_dir / "train.log").exists()


def test_sample_of_a_run_that_is_training_names_the_process_holding_it(tmp_path):
    import signal
    import time

    from run_dir import make_run_dir

    from kohya_wrap.rundir import lock_holder

    # no checkpoint for a long while: the refusal must not be "no LoRA files yet"
    run_dir = make_run_dir(tmp_path, max_train_steps=2000, save_every_n_steps=None, fake_args=("--step-delay", "0.25"))
    trainer = subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "train", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while lock_holder(run_dir) is None:
            assert time.monotonic() < deadline and trainer.poll() is None
            time.sleep(0.05)
        done = kohya_wrap("sample", str(run_dir), "--prompt", "x")
        assert done.returncode == ExitCode.ERROR
        assert f"is in use by pid {trainer.pid} (train)" in said(done) and "no LoRA files" not in said(done)
    finally:
        trainer.send_signal(signal.SIGINT)
        trainer.communicate(timeout=60)


def test_run_dry_run_shows_what_prepare_found_and_the_plans_warnings(tmp_path):
    from kohya_wrap.smoke.images import write_face_images

    photos = tmp_path / "photos"
    write_face_images(photos, count=3)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    args = ["run", str(photos), "--token", "ohwx", "--class", "man", "--preset", "smoke", "--base-model", str(model)]
    done = kohya_wrap(*args, "-o", str(tmp_path / "run"), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    text = said(done)
    assert "prepare: 3 training images, 0 skipped, 1 warning " in text and "count low" in text
    assert "img/1_ohwx man: 3 images, 1 repeat," in text  # named in the dataset: its temporary folder is gone
    assert "kohya-wrap-dry-run-" not in text and "manifest:" not in text
    assert "prepared into a temporary folder, now deleted" in text
    assert str(tmp_path / "run" / "dataset" / "img" / "1_ohwx man") in done.stdout  # where `run` would prepare it
    # the plan's warnings too
    done = kohya_wrap(*args, "--size", "512", "--allow-upscale", "-o", str(tmp_path / "run"), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: 1_ohwx man: images are 512x512 px, trained at 64 (resized)" in said(done)
    assert not (tmp_path / "run").exists()

    as_json = kohya_wrap(*args, "-o", str(tmp_path / "run"), "--dry-run", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["prepare"]["counts"]["images"] == 3
    assert [f["code"] for f in doc["prepare"]["findings"]] == ["count_low"]


def test_presets_show_into_a_pipe_cuts_no_value():
    done = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "presets", "show", "likeness-sd15"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},  # rich would assume 80 columns
    )
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert "'constant_with_warmup'" in rows["lr_scheduler"]
    assert "'lowres, blurry, deformed, bad anatomy, watermark, text'" in rows["negative_prompt"]


def test_the_runs_table_never_breaks_a_file_name(tmp_path):
    import re

    from report_run_fixture import make_run

    runs = tmp_path / "runs"
    runs.mkdir()
    for n in range(2):
        make_run(runs, name=f"20261204-13501{n}-likeness-sd15-768-a-long-name")
    names = [f"20261204-13501{n}-likeness-sd15-768-a-long-name" for n in range(2)]
    piped = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "runs", str(runs)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},  # rich would assume 80 columns
    )
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    for name in names:
        assert any(name in line and "tinylora.safetensors" in line for line in lines), piped.stdout
    # a terminal too narrow for the table: one block per run, the names whole
    narrow = kohya_wrap("runs", str(runs), env={"FORCE_COLOR": "1", "COLUMNS": "60"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", narrow.stdout)
    assert narrow.returncode == 0 and "…" not in text
    assert all(name in text.splitlines() for name in names), text
    assert text.count("tinylora.safetensors") == 2
