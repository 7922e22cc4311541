"""plan says what, train says where: a run directory planned from one virtualenv trains from another one,
at another path, with the interpreter, checkout and device flags resolved where it trains."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import FAKE_LAUNCHER, make_dataset  # noqa: E402
from sd15_stub import write_sd15_stub  # noqa: E402


def _virtualenv(path: Path) -> Path:
    """A virtualenv of its own path that sees this one's packages (kohya-wrap included) through a .pth file."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    Path(purelib, "parent-env.pth").write_text(lines)
    return python


def test_a_run_planned_in_one_virtualenv_trains_in_another(tmp_path, fake_checkout):
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    planner = _virtualenv(tmp_path / "laptop" / "venv")
    trainer = _virtualenv(tmp_path / "gpu-box" / "env")
    dataset = make_dataset(tmp_path / "data")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    write_tokenizer(tmp_path / "tok")
    run_dir = tmp_path / "runs" / "ohwx"

    planned = subprocess.run(
        [
            str(planner),
            "-m",
            "kohya_wrap",
            "plan",
            str(dataset),
            "--preset",
            "smoke",
            "--base-model",
            str(model),
            "--tokenizer-cache-dir",
            str(tmp_path / "tok"),
            "-o",
            str(run_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert planned.returncode == 0, planned.stderr
    plan_text = (run_dir / "plan.json").read_text()
    assert str(tmp_path / "laptop") not in plan_text and sys.executable not in plan_text
    assert "--cpu" not in plan_text and "num_cpu_threads" not in plan_text
    assert not (run_dir / "accelerate.yaml").exists()

    launches = tmp_path / "launches.jsonl"
    env = {
        **os.environ,
        "KOHYA_WRAP_SD_SCRIPTS": str(fake_checkout),
        "PYTHONPATH": str(FAKE_LAUNCHER),
        "FAKE_LAUNCH_LOG": str(launches),
    }
    dry = subprocess.run(
        [str(trainer), "-m", "kohya_wrap", "train", str(run_dir), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["argv"][0] == str(trainer) and shown["machine"]["device"] == "cpu" and "--cpu" in shown["argv"]

    trained = subprocess.run(
        [str(trainer), "-m", "kohya_wrap", "train", str(run_dir)], capture_output=True, text=True, timeout=300, env=env
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "finished" and manifest["verification"]["ok"]
    assert manifest["machine"]["python"] == str(trainer)
    assert manifest["machine"]["sd_scripts"] == str(fake_checkout.resolve())
    assert manifest["machine"]["device"] == "cpu" and manifest["machine"]["mixed_precision"] == "no"
    assert manifest["attempts"][-1]["argv"][0] == str(trainer)
    (launch,) = [json.loads(line) for line in launches.read_text().splitlines()]
    assert launch[0].endswith("launch.py") and str(fake_checkout.resolve() / "train_network.py") in launch
    assert "use_cpu: true" in (run_dir / "accelerate.yaml").read_text()  # resolved at launch, on this machine
