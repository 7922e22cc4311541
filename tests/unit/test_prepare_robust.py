"""prepare against odd names, a second prepare, a full or read-only disk; plan against what an
interrupted prepare leaves. Exit 1 and a sentence, never exit 3; a dataset never looks finished early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kohya_wrap.cli import cli
from kohya_wrap.dataset import scan_dataset
from kohya_wrap.errors import DatasetError, ExitCode
from kohya_wrap.prepare.pipeline import dataset_lock

WORDS = ("--token", "ohwx", "--class", "man", "--crop", "center", "--jobs", "1")


def make_photos(folder: Path, count: int = 2, side: int = 600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        rng = np.random.default_rng(n)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)).save(folder / f"p{n}.jpg", quality=80)
    return folder


def prepare(*args: str):
    return CliRunner().invoke(cli, ["prepare", *args])


def test_a_photo_whose_name_is_not_utf8_is_prepared_and_recorded(tmp_path):
    photos = make_photos(tmp_path / "photos")
    os.rename(photos / "p0.jpg", os.fsencode(photos) + b"/caf\xe9.jpg")
    out = tmp_path / "ds"
    result = prepare(str(photos), "-o", str(out), *WORDS)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    assert sorted(i["source"] for i in doc["images"]) == ["caf\\xe9.jpg", "p1.jpg"]
    assert not (out / ".kohya-wrap-prepare").exists()
    assert scan_dataset(out).subsets[0].images == 2


def test_plan_refuses_a_dataset_an_interrupted_prepare_left(tmp_path):
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "ds"
    assert prepare(str(photos), "-o", str(out), *WORDS).exit_code == 0
    (out / "prepare.json").unlink()
    (out / ".kohya-wrap-prepare").mkdir()  # what a prepare killed between its swap and its manifest leaves
    with pytest.raises(DatasetError, match="prepare did not finish"):
        scan_dataset(out)


def test_a_prepare_interrupted_after_its_swap_is_finished_by_the_next_one(tmp_path):
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "ds"
    assert prepare(str(photos), "-o", str(out), *WORDS).exit_code == 0
    (out / "prepare.json").unlink()
    (out / ".kohya-wrap-prepare").mkdir()
    result = prepare(str(photos), "-o", str(out), *WORDS)  # no --force needed: the folder is prepare's own
    assert result.exit_code == 0, result.output
    assert scan_dataset(out).manifest_sha256 is not None and not (out / "img.before-prepare").exists()


def test_a_second_prepare_into_the_same_folder_is_refused_cleanly(tmp_path):
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "ds"
    out.mkdir()
    with dataset_lock(out):
        result = prepare(str(photos), "-o", str(out), *WORDS)
    assert result.exit_code == ExitCode.ERROR, result.output
    assert "another `kohya-wrap prepare`" in result.output and "Traceback" not in result.output
    assert not (out / "img").exists()
    assert prepare(str(photos), "-o", str(out), *WORDS).exit_code == 0  # the lock left nothing behind


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m to mount a small tmpfs")


def _in_small_fs(tmp_path: Path, mount: Path, size: str, script: str, ro: bool = False) -> subprocess.CompletedProcess:
    mount.mkdir()
    remount = f" && mount -o remount,ro {mount}" if ro else ""
    shell = f"mount -t tmpfs -o size={size} tmpfs {mount}{remount} && {script}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


@needs_mount
@pytest.mark.parametrize("ro", [False, True], ids=["full", "read-only"])
def test_prepare_onto_a_full_or_read_only_disk_is_exit_1_with_a_sentence(tmp_path, ro):
    photos = make_photos(tmp_path / "photos", count=3, side=900)
    mount = tmp_path / "small"
    result = _in_small_fs(
        tmp_path,
        mount,
        "300k",
        f"{sys.executable} -m kohya_wrap prepare {photos} -o {mount}/ds " + " ".join(WORDS) + " --size 768",
        ro=ro,
    )
    assert result.returncode == ExitCode.ERROR, result.stdout + result.stderr
    words = "read-only" if ro else "no space left"
    assert words in (result.stdout + result.stderr).lower()
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr


@pytest.mark.parametrize("damage", ["[" * 100_000 + "]" * 100_000, "null", "[1, 2]", '{"parameters": [5]}'])
def test_a_damaged_prepare_json_is_exit_1_for_plan_and_prepare(tmp_path, damage):
    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "ds"
    assert prepare(str(photos), "-o", str(out), *WORDS).exit_code == 0
    (out / "prepare.json").write_text(damage)
    with pytest.raises(DatasetError):
        scan_dataset(out)
    again = prepare(str(photos), "-o", str(out), *WORDS)
    assert again.exit_code == ExitCode.ERROR and "Traceback" not in again.output, again.output


def test_a_dataset_prepared_from_other_photos_is_not_replaced_unasked(tmp_path):
    first, other = make_photos(tmp_path / "first"), make_photos(tmp_path / "other", count=3, side=640)
    out = tmp_path / "ds"
    assert prepare(str(first), "-o", str(out), *WORDS).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "img").rglob("*.png")}
    refused = prepare(str(other), "-o", str(out), *WORDS)
    assert refused.exit_code == ExitCode.ERROR, refused.output
    assert f"was prepared from {first}, not {other}" in refused.output and "--force" in refused.output
    assert {p.name: p.read_bytes() for p in (out / "img").rglob("*.png")} == before  # nothing replaced
    assert prepare(str(first), "-o", str(out), *WORDS).exit_code == 0  # the same photos again: reused
    assert prepare(str(other), "-o", str(out), *WORDS, "--force").exit_code == 0
    assert scan_dataset(out).subsets[0].images == 3
