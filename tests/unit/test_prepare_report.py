"""prepare's report: near duplicates in clusters, a summary first, -q/-v, --skip, and which copy is kept (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image, ImageFilter

from kohya_wrap.cli import cli
from kohya_wrap.errors import ExitCode
from kohya_wrap.prepare import PrepareOptions, prepare_dataset
from kohya_wrap.prepare.sources import has_copy_suffix


def burst(folder: Path, count: int) -> Path:
    """A phone burst: one scene, each frame with its own sensor noise."""
    folder.mkdir(parents=True)
    base = np.asarray(
        Image.fromarray(np.random.default_rng(7).integers(0, 255, (9, 9, 3), np.uint8)).resize((600, 600)), np.int16
    )
    for n in range(count):
        noise = np.random.default_rng(100 + n).integers(-20, 20, base.shape)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"IMG_{n:04d}.jpg", quality=92)
    return folder


def invoke(*args: str):
    return CliRunner().invoke(cli, ["prepare", *args], catch_exceptions=False)


def test_a_burst_of_40_near_identical_photos_gives_a_short_report(tmp_path):
    src = burst(tmp_path / "photos", 40)
    out = tmp_path / "dataset"
    args = [str(src), "-o", str(out), "--token", "ohwx", "--class", "man", "--crop", "center", "--jobs", "2"]
    result = invoke(*args)
    assert result.exit_code == ExitCode.OK, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) < 27, result.output  # it was 1,186 lines, one per pair (780 pairs)
    assert "1 near-duplicate cluster (40 photos)" in lines[1]  # the summary leads
    findings = json.loads((out / "prepare.json").read_text())["findings"]
    clusters = [f for f in findings if f["code"] == "near_duplicate"]
    assert len(clusters) == 1 and len(clusters[0]["files"]) == 40  # the details are in prepare.json
    quiet = invoke(*args, "-q")
    assert "1 near-duplicate cluster (40 photos)" in quiet.output
    assert "near-identical photos" not in quiet.output and "findings" not in quiet.output  # no table
    verbose = invoke(*args, "-v")
    assert "IMG_0039.jpg" in verbose.output
    assert invoke(*args, "-q", "-v").exit_code == ExitCode.USAGE


def test_many_findings_of_one_kind_are_capped_without_v(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(3)
    for n in range(8):  # eight distinct, blurred photos
        img = Image.fromarray(rng.integers(0, 255, (6, 6, 3), np.uint8)).resize((600, 600), Image.Resampling.BICUBIC)
        img.filter(ImageFilter.GaussianBlur(6)).save(src / f"b{n}.png")
    args = [
        str(src),
        "-o",
        str(tmp_path / "out"),
        "--token",
        "ohwx",
        "--class",
        "man",
        "--crop",
        "center",
        "--jobs",
        "1",
    ]
    result = invoke(*args)
    assert "8 blurred" in result.output and "and 3 more blurred" in result.output
    skipped = invoke(*args, "--skip", "blurred", "--json")
    doc = json.loads(skipped.stdout)
    assert doc["counts"]["images"] == 0 and doc["counts"]["skipped"] == 8
    assert {f["code"] for f in doc["findings"] if f["code"].startswith("skipped_")} == {"skipped_blurred"}


def test_skip_no_face_leaves_out_photos_without_a_face(tmp_path):
    src = burst(tmp_path / "photos", 2)
    result = prepare_dataset(
        PrepareOptions(
            src_dir=src,
            dataset_dir=tmp_path / "out",
            token="ohwx",
            class_word="man",
            crop="face",
            skip=frozenset({"no-face"}),
            jobs=1,
        )
    )
    if result.face_detection.startswith("face detection unavailable"):
        return  # nothing detected, nothing to skip: the option needs the detector
    skipped = {f.code for f in result.findings if f.code.startswith("skipped_")}
    assert result.images == () and skipped == {"skipped_no_face"}


def test_skip_rejects_an_unknown_kind(tmp_path):
    src = burst(tmp_path / "photos", 1)
    result = invoke(
        str(src), "-o", str(tmp_path / "out"), "--token", "ohwx", "--class", "man", "--skip", "no-face,faces"
    )
    assert result.exit_code == ExitCode.USAGE and "faces: not one of no-face, multi-face, blurred" in result.output


def test_of_byte_identical_files_the_one_without_a_copy_suffix_is_kept(tmp_path):
    src = burst(tmp_path / "photos", 1)
    original = src / "IMG_1004.jpg"
    (src / "IMG_0000.jpg").rename(original)
    for copy in ("IMG_1004 (1).jpg", "IMG_1004 copy.jpg", "IMG_1004-1.jpg"):
        shutil.copyfile(original, src / copy)
    result = prepare_dataset(
        PrepareOptions(src_dir=src, dataset_dir=tmp_path / "out", token="ohwx", class_word="man", crop="center", jobs=1)
    )
    assert [i.source for i in result.images] == ["IMG_1004.jpg"]
    dupes = {f.file: f.message for f in result.findings if f.code == "skipped_duplicate"}
    assert set(dupes) == {"IMG_1004 (1).jpg", "IMG_1004 copy.jpg", "IMG_1004-1.jpg"}
    assert all(m == "exact duplicate of IMG_1004.jpg" for m in dupes.values())


def test_copy_suffixes_are_only_the_unambiguous_ones():
    for name in (
        "IMG_1 (1).jpg",
        "IMG_1 copy.jpg",
        "IMG_1 Copy 2.png",
        "IMG_1 - Copy.jpg",
        "IMG_1 - Copy (3).jpg",
        "Copy of IMG_1.jpg",
        "sub/IMG_1 (2).heic",
    ):
        assert has_copy_suffix(name), name
    for name in ("IMG_1.jpg", "IMG_1-1.jpg", "IMG_1_1.jpg", "copy.jpg", "photocopy.jpg", "(1).jpg"):
        assert not has_copy_suffix(name), name
