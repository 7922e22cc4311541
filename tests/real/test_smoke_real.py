"""The smoke builders against the real sd-scripts: its own loader takes the full-size random model
with every key matched, and `kohya-wrap smoke` trains on it end to end and verifies the LoRA.

The base model is built once into real_cache_dir (about 45 s, 4 GB peak) and reused by later sessions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_wrap.sdscripts.checkout import locate
from kohya_wrap.sdscripts.sd15 import ALL_KEYS_MATCHED


@pytest.fixture(scope="module")
def smoke_model(real_cache_dir: Path) -> Path:
    from kohya_wrap.smoke.basemodel import ensure_base_model

    return ensure_base_model(real_cache_dir / "models").path


def _run(argv: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_sd_scripts_loader_matches_every_key(smoke_model: Path) -> None:
    checkout = locate()
    code = (
        "import sys\n"
        "from library import model_util\n"
        "model_util.load_models_from_stable_diffusion_checkpoint(False, sys.argv[1])\n"
    )
    result = _run([sys.executable, "-c", code, str(smoke_model)], checkout.path, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for component in ("loading u-net", "loading vae", "loading text encoder"):
        line = next((line for line in output.splitlines() if component in line), "")
        assert ALL_KEYS_MATCHED in line, f"{component}: {line!r}"


def test_smoke_command_end_to_end(smoke_model: Path, real_cache_dir: Path, tmp_path: Path) -> None:
    """`kohya-wrap smoke --json` as CI runs it: the cached model reused, a verified LoRA, exit 0."""
    keep = tmp_path / "keep"
    env = {**os.environ, "KOHYA_WRAP_HOME": str(real_cache_dir)}
    env.pop("KOHYA_WRAP_SD_SCRIPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "smoke", "--json", "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads(result.stdout)  # stdout holds the one object and nothing else
    assert doc["verdict"] == "ok" and doc["exit_code"] == 0 and doc["failure"] is None
    assert list(doc["stages"]) == ["base_model", "images", "prepare", "plan", "train", "verify"]
    assert all(seconds >= 0 for seconds in doc["stages"].values())
    assert doc["base_model"]["path"] == str(smoke_model) and doc["base_model"]["built"] is False
    lora = doc["lora"]
    assert lora["verified"] is True and all(check["ok"] for check in lora["checks"])
    assert lora["modules"] == 264 and lora["steps"] == 4
    assert Path(lora["path"]).is_file() and Path(lora["path"]).is_relative_to(keep)
    assert doc["kept"] is True and doc["work_dir"] == str(keep)
    run = json.loads((Path(doc["run_dir"]) / "run.json").read_text())
    assert run["outcome"] == "finished" and run["steps"]["reached"] == 4
    assert run["base_model"]["sha256"] == doc["base_model"]["sha256"]
    assert "[training]" in result.stderr  # the plain training view goes to stderr under --json
