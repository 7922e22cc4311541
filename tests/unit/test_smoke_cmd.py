"""`kohya-wrap smoke` where CI runs it: without an sd-scripts checkout it fails fast, with the
"get sd-scripts" message, before building anything. The full run is in tests/real/test_smoke_real.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohya_wrap.cli import cli
from kohya_wrap.errors import ExitCode


def _cache_files() -> list[Path]:
    home = Path(os.environ["KOHYA_WRAP_HOME"])
    return sorted(p for p in home.rglob("*")) if home.exists() else []


@pytest.fixture()
def no_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "sd-scripts"
    empty.mkdir()
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(empty))
    return empty


def test_without_the_trainer_it_fails_with_the_get_it_message_and_builds_nothing(no_checkout: Path) -> None:
    result = CliRunner().invoke(cli, ["smoke"])
    assert result.exit_code == ExitCode.ERROR
    assert "sd-scripts not found" in result.stderr and str(no_checkout) in result.stderr
    assert "fix the variable" in result.stderr  # the checkout came from $KOHYA_WRAP_SD_SCRIPTS
    assert "Traceback" not in result.output + result.stderr
    assert _cache_files() == []


def test_json_on_the_same_failure_is_one_object_on_stdout(no_checkout: Path) -> None:
    result = CliRunner().invoke(cli, ["smoke", "--json"])
    assert result.exit_code == ExitCode.ERROR
    doc = json.loads(result.stdout)  # the whole of stdout is the one object
    assert doc["verdict"] == "failed" and doc["exit_code"] == ExitCode.ERROR
    assert doc["failure"]["stage"] == "setup"
    assert "sd-scripts not found" in doc["failure"]["message"]
    assert "fix the variable" in doc["failure"]["hint"]
    assert doc["stages"] == {} and doc["base_model"] is None and doc["lora"] is None
    assert doc["work_dir"] is None and doc["kept"] is False
    assert "fix the variable" in result.stderr
    assert _cache_files() == []


def test_sd_scripts_option_is_used_before_the_environment(tmp_path: Path) -> None:
    missing = tmp_path / "not-here"
    result = CliRunner().invoke(cli, ["smoke", "--json", "--sd-scripts", str(missing)])
    assert result.exit_code == ExitCode.ERROR
    doc = json.loads(result.stdout)
    assert f"{missing} (from --sd-scripts) does not exist" in doc["failure"]["message"]
    assert _cache_files() == []


def test_keep_folder_with_files_is_refused_before_the_model_is_built(tmp_path: Path) -> None:
    from kohya_wrap.errors import TrainerNotFound
    from kohya_wrap.sdscripts.checkout import locate
    from kohya_wrap.smoke import run as smoke_run

    try:
        locate()
        smoke_run.check_train_packages()
    except TrainerNotFound as e:
        pytest.skip(f"the keep check runs after the trainer checks: {e.message}")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("not smoke's")
    result = CliRunner().invoke(cli, ["smoke", "--json", "--keep", str(keep)])
    assert result.exit_code == ExitCode.ERROR
    doc = json.loads(result.stdout)
    assert doc["failure"]["stage"] == "setup" and "--keep" in doc["failure"]["message"]
    assert (keep / "mine.txt").read_text() == "not smoke's"
    assert sorted(p.name for p in keep.iterdir()) == ["mine.txt"]
    assert _cache_files() == []


def test_missing_train_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from kohya_wrap.errors import TrainerNotFound
    from kohya_wrap.smoke import run as smoke_run

    # torch and diffusers missing, everything else present, whatever this machine has installed
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "diffusers") else object()
    )
    with pytest.raises(TrainerNotFound) as e:
        smoke_run.check_train_packages()
    # torch is the user's to install for the platform; diffusers comes with the [train] extra
    assert "missing here: torch (install torch and torchvision for your platform" in e.value.message
    assert "the [train] extra's diffusers" in e.value.message
    assert "pip install -e '.[train]'" in (e.value.hint or "")


def test_steps_below_one_are_a_usage_error(no_checkout: Path) -> None:
    result = CliRunner().invoke(cli, ["smoke", "--steps", "0"])
    assert result.exit_code == ExitCode.USAGE
    assert _cache_files() == []


def test_verdict_line_names_every_stage_and_the_lora() -> None:
    from kohya_wrap.cli.smoke_cmd import verdict_line
    from kohya_wrap.codec import to_builtins
    from kohya_wrap.smoke.basemodel import SmokeModel
    from kohya_wrap.smoke.run import LoraSummary, SmokeResult

    reused = SmokeModel(Path("/c/m.safetensors"), "ab" * 32, 2_000_000_000, False, None, None, 3.8)
    stages = (("base_model", 3.8), ("images", 0.1), ("prepare", 0.4), ("plan", 0.1), ("train", 64.0), ("verify", 0.3))
    lora = LoraSummary(Path("/w/run/output/ohwx.safetensors"), True, 192, 72, 4, (("opens", True, "x"),))
    result = SmokeResult(
        ok=True,
        exit_code=0,
        seconds=71.2,
        stage_seconds=stages,
        base_model=reused,
        work_dir=Path("/w"),
        kept=False,
        run_dir=Path("/w/run"),
        lora=lora,
        device="cpu",
    )
    assert verdict_line(result) == (
        "smoke ok in 71.2 s: base model reused 3.8 s | images 0.1 s | prepare 0.4 s | plan 0.1 s | "
        "train 64.0 s | verify 0.3 s; LoRA verified: 264 modules, 4 steps"
    )
    doc = to_builtins(result.report())
    assert doc["stages"] == dict(stages) and doc["failure"] is None and doc["lora"]["modules"] == 264

    built = SmokeModel(reused.path, reused.sha256, reused.size, True, "missing", 45.0, 0.0)
    first = SmokeResult(
        ok=True,
        exit_code=0,
        seconds=116.2,
        stage_seconds=(("base_model", 45.0), *stages[1:]),
        base_model=built,
        work_dir=None,
        kept=False,
        run_dir=None,
        lora=lora,
        device="cpu",
    )
    assert verdict_line(first).startswith(
        "smoke ok in 116.2 s (71.2 s without building the base model): base model built 45.0 s | images"
    )
    assert to_builtins(first.report())["seconds_without_model_build"] == 71.2


def test_drawn_faces_prepare_at_the_smoke_presets_size(tmp_path: Path) -> None:
    """The prepare stage takes the smoke preset's 64 px (the CLI offers only 512 and 768)."""
    from PIL import Image

    from kohya_wrap.prepare import PrepareOptions, prepare_dataset
    from kohya_wrap.preset import load_preset
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.run import CLASS_WORD, IMAGE_COUNT, TOKEN

    ours = load_preset("smoke").ours
    size = ours["size"].value
    assert size == 64
    write_face_images(tmp_path / "photos", count=IMAGE_COUNT)
    result = prepare_dataset(
        PrepareOptions(
            src_dir=tmp_path / "photos",
            dataset_dir=tmp_path / "dataset",
            token=TOKEN,
            class_word=CLASS_WORD,
            size=size,
            crop=ours["crop"].value,
            jobs=1,
        )
    )
    assert len(result.images) == IMAGE_COUNT and result.skipped == 0
    for image in result.images:
        with Image.open(tmp_path / "dataset" / image.output) as opened:
            assert opened.size == (size, size)


def test_a_run_in_a_deleted_temporary_folder_says_so_and_how_to_keep_it(capsys: pytest.CaptureFixture[str]) -> None:
    from kohya_wrap.cli.smoke_cmd import _STAGE_NOTES, _render
    from kohya_wrap.smoke.run import SmokeResult

    result = SmokeResult(
        ok=True,
        exit_code=0,
        seconds=230.0,
        stage_seconds=(("train", 221.0),),
        base_model=None,
        work_dir=Path("/tmp/kohya-wrap-smoke-x"),
        kept=False,
        run_dir=Path("/tmp/kohya-wrap-smoke-x/run"),
        lora=None,
        device="cpu",
    )
    _render(result)
    said = " ".join(capsys.readouterr().out.split())
    assert "/tmp/kohya-wrap-smoke-x, a temporary folder now deleted" in said and "--keep DIR" in said
    # what a 2-core CPU took (221 s), not "about a minute"
    assert "about 4 minutes on a 2-core CPU" in _STAGE_NOTES["train"]
