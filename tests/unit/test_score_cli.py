"""`kohya-wrap score` and `kohya-wrap export` from the command line: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from report_run_fixture import OUTPUT_NAME, make_run
from safetensors.numpy import save_file
from score_photos import needs_photos, put

from kohya_wrap.cli import cli


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KOHYA_WRAP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_both_commands_are_listed_and_need_their_arguments() -> None:
    assert {"score", "export"} <= set(invoke("--help").output.split())
    assert invoke("score").exit_code == 2
    assert "give RUN_DIR, or both --reference" in invoke("score").output
    assert invoke("score", "--samples", ".").exit_code == 2
    assert invoke("export", ".").exit_code == 2  # -o is required
    # the help says the order export_checkpoint follows: --step wins over the recommendation
    said = " ".join(invoke("export", "--help").output.split())
    assert "--step N when given, else the recommended checkpoint" in said


def test_samples_of_two_runs_in_one_folder_exit_1_naming_both(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "refs").mkdir()
    (tmp_path / "s").mkdir()
    for name in ("ohwx_000250_00_20261201101010.png", "ohwx_v2_000250_00_20261201101010.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "s" / name)
    result = invoke("score", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "samples of 2 runs in one folder (output names ohwx (1 files), ohwx_v2 (1 files))" in result.output


def test_without_the_identity_model_score_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kohya_wrap.score as score_mod

    monkeypatch.setattr(
        score_mod, "scorer_available", lambda: "the face identity model needs dlib: pip install 'kohya-wrap[score]'"
    )
    run = make_run(tmp_path, sample_steps=(2,))
    (tmp_path / "dataset" / "img" / "10_ohwx man").mkdir(parents=True)
    result = invoke("score", str(run))
    assert result.exit_code == 1
    assert "pip install 'kohya-wrap[score]'" in result.output and "Traceback" not in result.output


def test_bad_input_exits_1_with_the_message(tmp_path: Path) -> None:
    run = make_run(tmp_path, sample_steps=())
    result = invoke("score", str(run))
    assert result.exit_code == 1 and "no samples to score" in result.output
    (tmp_path / "refs").mkdir()
    result = invoke("score", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "no such folder" in result.output
    result = invoke("score", "--json", str(tmp_path))  # not a run directory
    assert result.exit_code == 1 and "plan.json" in result.output


@needs_photos
def test_score_json_and_exit_0_whatever_it_found(tmp_path: Path, cache_home: Path) -> None:
    put("obama2.jpg", tmp_path / "refs" / "a.jpg")
    put("obama3.jpg", tmp_path / "refs" / "b.jpg")
    put("obama.jpg", tmp_path / "s" / "step-000500" / "x.jpg")
    put("skimage:coffee.png", tmp_path / "s" / "step-000250" / "y.png")
    result = invoke("score", "--json", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [(c["step"], c["faces"], c["matches"]) for c in doc["checkpoints"]] == [(250, 0, 0), (500, 1, 1)]
    assert doc["recommended"]["step"] == 500 and doc["reason"].startswith("step 500")
    # Samples are cached too now (issue 17: scoring again as checkpoints land): 2 photos + 2 samples.
    assert doc["cache"] == {"hits": 0, "misses": 4} and list(cache_home.rglob("*.npz"))
    again = json.loads(
        invoke("score", "--json", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s")).output
    )
    assert again["cache"] == {"hits": 4, "misses": 0}
    text = invoke("score", "--no-cache", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s"))
    assert text.exit_code == 0 and "recommended: step 500" in text.output
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "refs" / name).unlink()
    put("skimage:chelsea.png", tmp_path / "refs" / "cat.png")
    faceless = invoke("score", "--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s"))
    assert faceless.exit_code == 1 and "shows a face" in faceless.output


@needs_photos
def test_score_a_run_then_export_its_recommendation(tmp_path: Path) -> None:
    run = make_run(tmp_path, sample_steps=())
    train = tmp_path / "dataset" / "img" / "10_ohwx man"
    put("obama2.jpg", train / "0001.jpg")
    put("obama3.jpg", train / "0002.jpg")
    put("obama.jpg", run / "output" / "sample" / f"{OUTPUT_NAME}_000002_00_20261125091531_42.png")
    put("32bit.png", run / "output" / "sample" / f"{OUTPUT_NAME}_000004_00_20261125091531_42.png")
    for stem, step in ((f"{OUTPUT_NAME}-step00000002", "2"), (OUTPUT_NAME, "4")):
        save_file(
            {"lora_unet_a.alpha": np.ones((1,), np.float32)},
            str(run / "output" / f"{stem}.safetensors"),
            metadata={"ss_steps": step},
        )
    result = invoke("score", str(run))
    assert result.exit_code == 0, result.output
    assert "recommended: step 2" in result.output and (run / "score.json").is_file()
    out = tmp_path / "ohwx-v1.safetensors"
    exported = invoke("export", str(run), "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert "exported step 2 (recommended)" in exported.output
    assert "models/Lora" in exported.output and "models/loras" in exported.output
    assert "<lora:ohwx-v1:0.8> photo of ohwx man" in exported.output
    refused = invoke("export", str(run), "-o", str(out))
    assert refused.exit_code == 1 and "never overwrites" in refused.output
    as_json = json.loads(invoke("export", "--json", str(run), "--step", "4", "-o", str(tmp_path / "b")).output)
    assert as_json["step"] == 4 and as_json["why"] == "--step" and as_json["score"]["copies"] == 1
    # a LoRA named like an emoji code is printed as named (rich would make `<lora:x:0.8>` a cross mark)
    named_x = invoke("export", str(run), "--step", "4", "-o", str(tmp_path / "x.safetensors"))
    assert named_x.exit_code == 0 and "<lora:x:0.8> photo of ohwx man" in named_x.output, named_x.output


@needs_photos
def test_what_was_left_out_is_said_and_not_fatal(tmp_path: Path, cache_home: Path) -> None:
    put("obama2.jpg", tmp_path / "refs" / "a.jpg")
    put("obama3.jpg", tmp_path / "refs" / "b.jpg")
    (tmp_path / "refs" / "broken.jpg").write_bytes(b"not a jpeg")  # used to abort the whole score
    put("obama.jpg", tmp_path / "s" / "ohwx_000500_00_20261201101010.png")
    put("biden.jpg", tmp_path / "s" / "ohwx-final.png")  # misnamed: used to be dropped without a word
    args = ("--reference", str(tmp_path / "refs"), "--samples", str(tmp_path / "s"))
    doc = json.loads(invoke("score", "--json", *args).output)
    assert [c["step"] for c in doc["checkpoints"]] == [500] and doc["recommended"]["step"] == 500
    left = {Path(x["file"]).name: (x["kind"], x["why"]) for x in doc["left_out"]}
    assert left["broken.jpg"][0] == "reference" and "cannot be read as an image" in left["broken.jpg"][1]
    assert left["ohwx-final.png"][0] == "sample" and "does not say a step" in left["ohwx-final.png"][1]
    assert doc["references"]["photos"] == 3 and doc["references"]["faces"] == 2
    text = invoke("score", *args)
    assert text.exit_code == 0 and "left out: 2 files" in text.output and "broken.jpg" in text.output
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "refs" / name).unlink()
    nothing = invoke("score", *args)  # nothing readable is left: that is fatal
    assert nothing.exit_code == 1 and "can be read as an image" in nothing.output
