"""Small defects of issue 12: file modes, hints, exit codes."""

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from kohya_wrap.cli import cli
from kohya_wrap.dataset import scan_dataset
from kohya_wrap.errors import DatasetError, TrainerNotFound
from kohya_wrap.fsutil import atomic_write_text
from kohya_wrap.sdscripts.checkout import locate


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_keep_the_umasks_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == mode


def test_a_bad_sd_scripts_variable_says_fix_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(tmp_path / "nope"))
    with pytest.raises(TrainerNotFound) as e:
        locate()
    assert "fix the variable" in e.value.hint and "KOHYA_WRAP_SD_SCRIPTS" in e.value.hint
    assert "submodule update" not in e.value.hint


def test_doctor_names_the_variable_too(tmp_path, monkeypatch):
    from kohya_wrap.doctor import check_sd_scripts

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(tmp_path / "empty"))
    check = check_sd_scripts(None)
    assert "fix the variable" in check.fix


def test_planning_a_photo_folder_suggests_preparing_into_a_new_folder(tmp_path):
    photos = tmp_path / "my photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "IMG_1.jpg")
    with pytest.raises(DatasetError) as e:
        scan_dataset(photos)
    assert f"kohya-wrap prepare '{photos}' -o 'data/my photos'" in e.value.hint


def test_status_and_report_give_the_same_exit_code_for_a_missing_folder(tmp_path):
    missing = str(tmp_path / "gone")
    status = CliRunner().invoke(cli, ["status", missing])
    report = CliRunner().invoke(cli, ["report", missing])
    assert status.exit_code == report.exit_code == 1, (status.output, report.output)


def test_plan_prints_its_next_command_shell_quoted(tmp_path):
    import json
    import shlex
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from sd15_stub import write_sd15_stub

    sub = tmp_path / "ds" / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64)).save(sub / f"{i}.png")
    (tmp_path / "ds" / "prepare.json").write_text(json.dumps({"parameters": {"token": "ohwx", "class": "man"}}))
    tok = tmp_path / "tok" / "openai_clip-vit-large-patch14"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text("{}")
    (tok / "merges.txt").write_text("")
    run_dir = tmp_path / "runs" / "my run"
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            str(tmp_path / "ds"),
            "--preset",
            "smoke",
            "--base-model",
            str(write_sd15_stub(tmp_path / "m.safetensors")),
            "--tokenizer-cache-dir",
            str(tmp_path / "tok"),
            "-o",
            str(run_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"kohya-wrap train {shlex.quote(str(run_dir))}" in " ".join(result.output.split())


def test_a_prepare_json_with_a_wrong_field_names_it(tmp_path):
    import json

    import pytest

    from kohya_wrap.dataset import scan_dataset
    from kohya_wrap.errors import DatasetError

    sub = tmp_path / "ds" / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(sub / "0.png")
    manifest = tmp_path / "ds" / "prepare.json"
    manifest.write_text(json.dumps({"parameters": {"token": "ohwx", "class": "man", "size": "big"}}))
    with pytest.raises(DatasetError, match=r"prepare\.json: parameters\.size: Expected int \| null, got str"):
        scan_dataset(tmp_path / "ds")
    manifest.write_text(json.dumps({"parameters": {"token": "ohwx", "class": "man", "size": 512}}))
    found = scan_dataset(tmp_path / "ds")
    assert (found.token, found.class_word, found.size, found.repeats_explicit) == ("ohwx", "man", 512, False)


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_a_folder_that_cannot_hold_files_is_a_sentence_not_a_bug(tmp_path, where):
    from kohya_wrap.errors import DiskError, ExitCode
    from kohya_wrap.fsutil import atomic_write_text

    (tmp_path / "a_file").write_text("x")
    target = Path("/proc/kohya-wrap-report.html") if where == "proc" else tmp_path / "a_file" / "report.html"
    with pytest.raises(DiskError) as caught:
        atomic_write_text(target, "<html>")
    assert caught.value.exit_code == ExitCode.ERROR
    assert caught.value.message.startswith(f"cannot write {target}")
    assert caught.value.hint
