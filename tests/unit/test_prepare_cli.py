"""`kohya-wrap prepare` through click: JSON output, exit codes, errors, light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from kohya_wrap.cli import cli
from kohya_wrap.errors import ExitCode
from kohya_wrap.sdscripts import layout


def make_src(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True)
    for n in range(count):
        rng = np.random.default_rng(n)
        base = np.asarray(Image.fromarray(rng.integers(0, 255, (9, 12, 3), np.uint8)).resize((800, 600)), np.int16)
        noisy = np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"p{n}.jpg", quality=92)
    return folder


def invoke(*args: str):
    return CliRunner().invoke(cli, ["prepare", *args], catch_exceptions=False)


def test_json_output_and_layout(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
    out = tmp_path / "dataset"
    result = invoke(
        str(src),
        "-o",
        str(out),
        "--token",
        "ohwx",
        "--class",
        "woman",
        "--crop",
        "center",
        "--repeats",
        "3",
        "--jobs",
        "1",
        "--json",
    )
    assert result.exit_code == ExitCode.OK, result.output
    data = json.loads(result.stdout)
    subset = f"{layout.TRAIN_DIR}/{layout.subset_dir_name(3, 'ohwx woman')}"
    assert data["subsets"] == [
        {"dir": subset, "is_reg": False, "repeats": 3, "class_tokens": "ohwx woman", "images": 2}
    ]
    assert data["counts"]["images"] == 2 and data["counts"]["processed"] == 2 and data["counts"]["reused"] == 0
    assert data["manifest"] == str(out / "prepare.json")
    assert {f["code"] for f in data["findings"]} - {"identity_unchecked"} == {"count_low"}  # the note without dlib
    assert (out / subset / "0002.txt").read_text() == "photo of ohwx woman\n"
    again = json.loads(
        invoke(
            str(src),
            "-o",
            str(out),
            "--token",
            "ohwx",
            "--class",
            "woman",
            "--crop",
            "center",
            "--repeats",
            "3",
            "--jobs",
            "1",
            "--json",
        ).stdout
    )
    assert again["counts"]["reused"] == 2 and again["counts"]["processed"] == 0


def test_strict_turns_warnings_into_exit_4(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
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
    assert invoke(*args).exit_code == ExitCode.OK
    strict = invoke(*args, "--strict")
    assert strict.exit_code == ExitCode.WARNINGS == 4
    assert "2 training images" in strict.output and "warnings" in strict.output


def test_user_errors_exit_1_with_message_and_hint(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
    bad = invoke(str(src), "-o", str(tmp_path / "out"), "--token", "ohwx", "--class", "man", "--caption", "a {tokn}")
    assert bad.exit_code == ExitCode.ERROR
    assert "unknown placeholder {tokn}" in bad.output and "hint:" in bad.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    refused = invoke(str(src), "-o", str(foreign), "--token", "ohwx", "--class", "man")
    assert refused.exit_code == ExitCode.ERROR and "--force" in refused.output
    assert (foreign / "x.txt").read_text() == "mine"
    missing = invoke(str(tmp_path / "nope"), "-o", str(tmp_path / "o2"), "--token", "ohwx", "--class", "man")
    assert missing.exit_code == ExitCode.ERROR and "does not exist" in missing.output


def test_usage_errors_are_click_usage_errors(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos", 1)
    assert invoke(str(src), "-o", str(tmp_path / "o"), "--token", "x", "--class", "y", "--size", "640").exit_code == 2
    assert invoke(str(src), "--token", "x", "--class", "y").exit_code == 2  # no -o


def test_help_and_import_stay_light() -> None:
    help_text = CliRunner().invoke(cli, ["prepare", "--help"]).output
    for option in (
        "--token",
        "--class",
        "--size",
        "--crop",
        "--caption",
        "--repeats",
        "--reg",
        "--allow-upscale",
        "--skip-multiple-faces",
        "--strict",
        "--force",
        "--json",
    ):
        assert option in help_text
    code = (
        "import sys; from kohya_wrap.cli import cli; cli.get_command(None, 'prepare'); "
        "heavy = [m for m in ('PIL', 'numpy', 'cv2', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_progress_is_reported_per_photo(tmp_path: Path) -> None:
    from kohya_wrap.prepare import PrepareOptions, prepare_dataset

    src = make_src(tmp_path / "photos", 3)
    seen: list[tuple[int, int]] = []
    prepare_dataset(
        PrepareOptions(
            src_dir=src, dataset_dir=tmp_path / "out", token="ohwx", class_word="man", crop="center", jobs=2
        ),
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_an_empty_photo_folder_is_an_error_that_names_it(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "notes.txt").write_text("not a photo\n")
    out = tmp_path / "dataset"
    result = invoke(str(src), "-o", str(out), "--token", "ohwx", "--class", "woman", "--jobs", "1")
    assert result.exit_code == ExitCode.ERROR, result.output
    assert f"no photos found in {src}" in " ".join(result.output.split())
    assert not (out / "img").exists() and not (out / "prepare.json").exists()


def test_a_dataset_folder_inside_the_photo_folder_is_refused(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    for out in (src / "dataset", src / "deeper" / "dataset"):
        result = invoke(str(src), "-o", str(out), "--token", "ohwx", "--class", "woman", "--jobs", "1")
        assert result.exit_code == ExitCode.ERROR, result.output
        assert f"the dataset folder {out} is inside SRC_DIR {src}" in " ".join(result.output.split())
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # nothing written among the photos


def test_a_photo_left_out_by_skip_on_a_second_prepare_counts_as_removed(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
    Image.new("RGB", (800, 600), (120, 120, 120)).save(src / "flat.jpg")  # no detail at all: blurred
    out = tmp_path / "dataset"
    first = invoke(str(src), "-o", str(out), "--token", "ohwx", "--class", "woman", "--crop", "center", "--jobs", "1")
    assert first.exit_code == 0, first.output
    again = invoke(
        *(str(src), "-o", str(out), "--token", "ohwx", "--class", "woman", "--crop", "center", "--jobs", "1"),
        *("--skip", "blurred", "--json"),
    )
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["counts"]["images"] == 2 and data["counts"]["removed"] == 1  # flat.jpg left the dataset


def test_strict_says_which_warnings_made_it_exit_4(tmp_path: Path) -> None:
    src = make_src(tmp_path / "photos")
    out = tmp_path / "dataset"
    for extra in ((), ("--json",), ("-q",)):
        result = invoke(
            str(src), "-o", str(out), "--token", "ohwx", "--class", "woman", "--crop", "center", "--strict", *extra
        )
        assert result.exit_code == ExitCode.WARNINGS, result.output
        said = " ".join(result.stderr.split())
        assert "--strict: exit 4 because of 1 warning: 1 count low" in said


def test_run_strict_stops_after_prepare_and_names_no_manifest_it_removes(tmp_path: Path) -> None:
    from sd15_stub import write_sd15_stub

    src, run_dir = make_src(tmp_path / "photos"), tmp_path / "r1"
    model = write_sd15_stub(tmp_path / "model.safetensors")
    args = ["--token", "t", "--class", "c", "--preset", "smoke", "--base-model", str(model), "--crop", "center"]
    result = CliRunner().invoke(cli, ["run", str(src), *args, "--strict", "-o", str(run_dir)])
    assert result.exit_code == ExitCode.WARNINGS, result.output
    assert "--strict: exit 4 because of 3 warnings" in result.output and "nothing was trained" in result.output
    # the run this call created is removed with its dataset: the summary points at no prepare.json
    assert not run_dir.exists() and "manifest:" not in result.output and "prepare.json" not in result.output
