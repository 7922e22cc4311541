import json
import subprocess
import sys

from click.testing import CliRunner

from kohya_wrap import __version__
from kohya_wrap.cli import COMMANDS, cli
from kohya_wrap.sdscripts import PINNED_COMMIT, PINNED_TAG

HEAVY = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "PIL", "numpy", "cv2", "safetensors")


def test_version_names_ours_and_the_pinned_trainer():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kohya-wrap {__version__} (sd-scripts {PINNED_TAG}, {PINNED_COMMIT[:12]})"


def test_help_lists_every_registered_command_that_exists():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output
    for name in COMMANDS:
        module, _ = COMMANDS[name].split(":")
        try:
            __import__(f"kohya_wrap.cli.{module}")
        except ModuleNotFoundError:
            continue
        assert name in result.output


def _modules_loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_imports_no_training_or_imaging_package():
    loaded = _modules_loaded_by("import kohya_wrap.cli")
    assert not loaded & set(HEAVY)


def test_help_of_every_command_imports_no_heavy_package():
    for name in COMMANDS:
        code = (
            "import sys\nfrom kohya_wrap.cli import cli\n"
            f"try:\n    cli(['{name}', '--help'], prog_name='kohya-wrap')\nexcept SystemExit:\n    pass"
        )
        loaded = _modules_loaded_by(code)
        assert not loaded & set(HEAVY), f"`kohya-wrap {name} --help` imported {sorted(loaded & set(HEAVY))}"


def test_a_folder_you_may_not_write_to_is_exit_1_with_a_sentence(tmp_path, monkeypatch):
    import errno

    import kohya_wrap.report.html as html
    from kohya_wrap.errors import ExitCode

    def refused(run_dir, out=None):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "report.html"))

    monkeypatch.setattr(html, "write_report", refused)
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "run")])
    said = " ".join(result.output.split())
    assert result.exit_code == ExitCode.ERROR, result.output
    assert f"cannot open {tmp_path / 'report.html'}: permission denied" in said and "permissions" in said
    assert "bug" not in said


def test_the_constants_the_cli_keeps_to_stay_light_agree_with_their_stages():
    # cli/options.py spells these itself so that --help imports no stage; they must say what the stages say
    from kohya_wrap.cli import options
    from kohya_wrap.prepare import records
    from kohya_wrap.preset import MAX_STEPS

    assert options.MAX_REPEATS == MAX_STEPS
    assert options.SKIP_KINDS == records.SKIP_KINDS
    assert options.DEFAULT_CAPTION == records.DEFAULT_CAPTION
    assert options.PREPARE_SIZES == tuple(str(size) for size in records.SIZES)


def test_a_folder_that_does_not_exist_is_bad_input_exit_1_for_every_command(tmp_path):
    """A mistyped folder, or a file where a folder goes, is bad input (exit 1, naming the argument and the path),
    whichever command gets it."""
    gone, a_file = tmp_path / "gone", tmp_path / "file.txt"
    a_file.write_text("not a folder")
    runner = CliRunner()
    for args, words in (
        (["train", "--resume", str(gone)], f"--resume {gone} does not exist"),
        (["train", str(gone)], f"{gone} does not exist"),
        (["train", "--extend", "10", str(gone)], f"--extend: {gone} does not exist"),
        (
            ["run", str(gone), "--token", "t", "--class", "c", "--preset", "smoke", "--base-model", "m"],
            "does not exist",
        ),
        (
            ["run", str(a_file), "--token", "t", "--class", "c", "--preset", "smoke", "--base-model", "m"],
            "not a folder",
        ),
        (["score", str(gone)], f"RUN_DIR {gone} does not exist"),
        (["export", str(gone), "-o", str(tmp_path / "x.safetensors")], f"RUN_DIR {gone} does not exist"),
        (
            ["prepare", str(tmp_path), "-o", str(tmp_path / "o"), "--token", "t", "--class", "c", "--reg", str(gone)],
            "--reg",
        ),
        (["prepare", str(tmp_path), "-o", str(a_file), "--token", "t", "--class", "c"], f"-o {a_file} is not a folder"),
        (["plan", str(a_file), "--preset", "smoke", "--base-model", "m", "-o", str(gone)], "DATASET_DIR"),
        (["doctor", "--sd-scripts", str(a_file)], f"--sd-scripts {a_file} is not a folder"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert words in result.output and "Traceback" not in result.output, (args, result.output)


def test_an_output_path_through_a_file_is_exit_1_with_a_sentence(tmp_path):
    """`-o notes.txt/out`: a path whose folder is a file is the user's to fix (exit 1), not a bug (exit 3)."""
    from PIL import Image

    from kohya_wrap.errors import ExitCode, path_through_a_file

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (600, 600), (120, 90, 60)).save(photos / "a.jpg")
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    result = CliRunner().invoke(cli, ["prepare", str(photos), "-o", str(notes / "ds"), "--token", "t", "--class", "c"])
    said = " ".join(result.output.split())
    assert result.exit_code == ExitCode.ERROR, result.output
    assert f"{notes} is a file, not a folder" in said and "bug" not in said
    try:
        notes.mkdir(parents=True, exist_ok=True)  # mkdir's EEXIST on the file
    except OSError as e:
        problem = path_through_a_file(e)
        assert problem is not None and problem.message == f"cannot write into {notes}: it is a file, not a folder"
    assert path_through_a_file(FileExistsError(17, "File exists", str(tmp_path))) is None  # a folder: not this case


def test_a_mistyped_command_gets_a_suggestion():
    result = CliRunner().invoke(cli, ["trian", "runs/x"])
    assert result.exit_code == 2 and "No such command 'trian'. Did you mean 'train'?" in result.output
    assert "Did you mean" not in CliRunner().invoke(cli, ["zzz"]).output
