"""A full disk: train still writes run.json (the space it set aside is freed for it) and exits with the
training's outcome, not 3; export onto a full or read-only disk is exit 1 with a sentence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.cli import cli  # noqa: E402
from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.train.runner import run_training  # noqa: E402

ROOT = Path(__file__).parents[2]


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m to mount a small tmpfs")


def in_small_fs(mount: Path, size: str, script: str, ro: bool = False) -> subprocess.CompletedProcess:
    mount.mkdir()
    remount = f" && mount -o remount,ro {mount}" if ro else ""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mount}{remount} && {script}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'fakes'}"},
    )


def test_a_disk_that_fills_up_during_training_keeps_run_json(tmp_path, fake_checkout):
    mount = tmp_path / "disk"
    script = textwrap.dedent(
        f"""
        import json, subprocess, sys
        from pathlib import Path
        from run_dir import make_run_dir
        run_dir = make_run_dir(Path("{mount}"), max_train_steps=6, save_every_n_steps=2)
        done = subprocess.run([sys.executable, "-m", "kohya_wrap", "train", str(run_dir)], capture_output=True, text=True)
        print(json.dumps({{"rc": done.returncode, "err": done.stderr[-3000:], "run_json": (run_dir / "run.json").is_file(),
                          "reserve": (run_dir / ".run.json.reserve").exists(),
                          "manifest": json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None}}))
        """
    )
    (tmp_path / "script.py").write_text(script)
    done = in_small_fs(mount, "14m", f"{sys.executable} {tmp_path / 'script.py'}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rc"] not in (0, ExitCode.UNEXPECTED), report["err"]
    assert "unexpected error" not in report["err"]
    assert report["run_json"], report["err"]
    assert report["manifest"]["outcome"] == "crashed" and not report["reserve"]
    assert "No space left" in report["err"]  # the trainer's own last lines say why


@pytest.mark.parametrize("ro", [False, True], ids=["full", "read-only"])
def test_export_onto_a_full_or_read_only_disk_is_exit_1(tmp_path, ro):
    run_dir = make_run_dir(tmp_path, max_train_steps=2, save_every_n_steps=None)
    assert run_training(run_dir).outcome == "finished"
    mount = tmp_path / "usb"
    done = in_small_fs(
        mount, "1m", f"{sys.executable} -m kohya_wrap export {run_dir} -o {mount}/face.safetensors", ro=ro
    )
    assert done.returncode == ExitCode.ERROR, done.stdout + done.stderr
    assert ("read-only" if ro else "no space left") in done.stderr.lower()
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert CliRunner().invoke(cli, ["status", str(run_dir)]).exit_code == 0  # the run itself is untouched
