"""The smoke builders against the real sd-scripts: its own loader takes the full-size random model
with every key matched, and a 2-step training runs on it with the offline tokenizer and drawn faces.

The base model is built once into real_cache_dir (about 45 s, 4 GB peak) and reused by later sessions.
"""

from __future__ import annotations

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


def test_two_step_training_on_the_smoke_builds(smoke_model: Path, tmp_path: Path) -> None:
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    checkout = locate()
    images = tmp_path / "data" / "10_ohwx man"
    write_face_images(images, count=4)
    tokenizer_cache = tmp_path / "tokenizer_cache"
    tokenizer_dir = write_tokenizer(tokenizer_cache)
    out = tmp_path / "out"
    (tmp_path / "prompts.txt").write_text("a photo of ohwx man --w 64 --h 64 --s 2 --d 1\n")
    (tmp_path / "dataset.toml").write_text(
        "[[datasets]]\nresolution = 64\nbatch_size = 1\nenable_bucket = false\n"
        f"[[datasets.subsets]]\nimage_dir = '{images}'\nclass_tokens = 'ohwx man'\nnum_repeats = 1\n"
    )
    (tmp_path / "train.toml").write_text(
        f"pretrained_model_name_or_path = '{smoke_model}'\n"
        f"tokenizer_cache_dir = '{tokenizer_cache}'\n"
        f"dataset_config = '{tmp_path / 'dataset.toml'}'\n"
        "cache_latents = true\nnetwork_module = 'networks.lora'\nnetwork_dim = 4\nnetwork_alpha = 1\n"
        "optimizer_type = 'AdamW'\nlearning_rate = 1e-4\nmax_train_steps = 2\nseed = 42\n"
        f"save_model_as = 'safetensors'\noutput_dir = '{out}'\noutput_name = 'smoke'\n"
        f"sample_every_n_steps = 2\nsample_prompts = '{tmp_path / 'prompts.txt'}'\n"
    )
    argv = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "2",
        str(checkout.train_script), "--config_file", str(tmp_path / "train.toml"),
    ]
    result = _run(argv, checkout.path, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"load tokenizer from cache: {tokenizer_dir}" in output
    assert output.count(ALL_KEYS_MATCHED) == 3
    assert (out / "smoke.safetensors").is_file()
    assert len(list((out / "sample").glob("*.png"))) == 1
