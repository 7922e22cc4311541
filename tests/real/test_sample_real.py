"""`kohya-wrap sample` through sd-scripts' own gen_img.py, on a CPU, with the smoke builds.

A 2-step LoRA is trained on the full-size random SD1.5 model (a checkpoint at step 1 and the final
file at step 2), a run folder that follows the contract points at it, and `sample` draws 64 px
images in 2 denoising steps from each checkpoint; the run's report then shows them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kohya_wrap.sdscripts.checkout import locate

PROMPT = "a photo of ohwx man"


def _run(argv: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def smoke_run(real_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a LoRA trained for 2 steps on the smoke base model."""
    from kohya_wrap.smoke.basemodel import ensure_base_model
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    base_model = ensure_base_model(real_cache_dir / "models").path
    root = tmp_path_factory.mktemp("sample-real")
    run_dir = root / "run"
    output = run_dir / "output"
    images = root / "dataset" / "img" / "1_ohwx man"
    write_face_images(images, count=2)
    tokenizer_cache = root / "tokenizer_cache"
    write_tokenizer(tokenizer_cache)
    run_dir.mkdir(parents=True)
    (run_dir / "dataset.toml").write_text(
        "[[datasets]]\nresolution = 64\nbatch_size = 1\nenable_bucket = false\n"
        f"[[datasets.subsets]]\nimage_dir = '{images}'\nclass_tokens = 'ohwx man'\nnum_repeats = 1\n"
    )
    (run_dir / "config.toml").write_text(
        f"pretrained_model_name_or_path = '{base_model}'\ntokenizer_cache_dir = '{tokenizer_cache}'\n"
        f"dataset_config = '{run_dir / 'dataset.toml'}'\n"
        "cache_latents = true\nnetwork_module = 'networks.lora'\nnetwork_dim = 4\nnetwork_alpha = 1\n"
        "optimizer_type = 'AdamW'\nlearning_rate = 1e-3\nmax_train_steps = 2\nseed = 42\nsave_every_n_steps = 1\n"
        f"save_model_as = 'safetensors'\noutput_dir = '{output}'\noutput_name = 'smoke'\n"
    )
    checkout = locate()
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "2",
        str(checkout.train_script),
        "--config_file",
        str(run_dir / "config.toml"),
    ]
    result = _run(argv, checkout.path, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run_dir / "plan.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "kohya_wrap_version": "0.1.0",
                "created_at": "2026-11-25T10:00:00.000Z",
                "preset": {"name": "smoke", "sha256": "0" * 64, "files": []},
                "dataset": {
                    "dir": str(root / "dataset"),
                    "manifest_sha256": None,
                    "subsets": [
                        {"dir": str(images), "images": 2, "repeats": 1, "class_tokens": "ohwx man", "is_reg": False}
                    ],
                },
                "base_model": {"source": str(base_model), "path": str(base_model), "kind": "file"},
                "tokenizer_cache_dir": str(tokenizer_cache),
                "values": {},
                "ours": {},
                "steps": {
                    "train_images_x_repeats": 2,
                    "reg_images_x_repeats": 0,
                    "batch_size": 1,
                    "grad_accum": 1,
                    "num_processes": 1,
                    "steps_per_epoch": 2,
                    "epochs": 1,
                    "max_train_steps": 2,
                    "arithmetic": "",
                },
                "launch": {"argv": argv, "env": {}, "cwd": str(run_dir)},
                "output": {"dir": str(output), "name": "smoke", "lora_file": str(output / "smoke.safetensors")},
                "sd_scripts": {
                    "path": str(checkout.path),
                    "commit": checkout.commit,
                    "matches_pin": checkout.matches_pin,
                },
            }
        )
    )
    return run_dir


def test_sample_each_checkpoint_of_a_run(smoke_run: Path) -> None:
    result = _run(
        [
            sys.executable,
            "-m",
            "kohya_wrap",
            "sample",
            str(smoke_run),
            "--prompt",
            PROMPT,
            "--size",
            "64",
            "--sampler-steps",
            "2",
            "-n",
            "2",
            "--seed",
            "5",
            "--weight",
            "0.8",
            "--json",
        ],
        Path.cwd(),
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    made = json.loads(result.stdout)
    assert made["seed"] == 5
    rows = sorted((i["step"], i["prompt_index"], i["image_index"], i["seed"]) for i in made["images"])
    assert rows == [(1, 0, 0, 5), (1, 0, 1, 6), (2, 0, 0, 5), (2, 0, 1, 6)]
    for item in made["images"]:
        with Image.open(item["path"]) as image:
            assert image.size == (64, 64)
            assert image.text["seed"] == str(item["seed"])  # gen_img.py records the seed it used
            assert image.text["prompt"] == PROMPT
    session = Path(made["folder"])
    assert session.parent == smoke_run / "samples"
    assert (session / "samples.json").is_file() and (session / "gen.log").is_file()
    page = (smoke_run / "report.html").read_text(encoding="utf-8")
    assert 'id="sample-session-0" data-rows="2" data-columns="1"' in page
    assert page.count("data:image/jpeg;base64,") == 4


def test_sample_one_lora_file_with_the_base_model_given(smoke_run: Path, tmp_path: Path) -> None:
    lora = tmp_path / "elsewhere.safetensors"
    lora.write_bytes((smoke_run / "output" / "smoke.safetensors").read_bytes())
    plan = json.loads((smoke_run / "plan.json").read_text())
    result = _run(
        [
            sys.executable,
            "-m",
            "kohya_wrap",
            "sample",
            str(lora),
            "--prompt",
            PROMPT,
            "--prompt",
            "ohwx man smiling",
            "--size",
            "64",
            "--sampler-steps",
            "2",
            "--seed",
            "9",
            "--json",
            "--base-model",
            plan["base_model"]["path"],
            "--tokenizer-cache-dir",
            plan["tokenizer_cache_dir"],
        ],
        Path.cwd(),
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    made = json.loads(result.stdout)
    assert [(i["step"], i["prompt_index"], i["seed"]) for i in made["images"]] == [(2, 0, 9), (2, 1, 9)]
    assert Path(made["folder"]).parent == tmp_path / "elsewhere-samples"
    # a progress view, not the generator's own logging (1,000-column padded lines, warnings): that is in gen.log
    assert "sampled elsewhere.safetensors (2/2 images)" in result.stderr
    assert "SyntaxWarning" not in result.stderr and max(map(len, result.stderr.splitlines()), default=0) < 300


def test_inspect_a_lora_sd_scripts_trained(smoke_run: Path) -> None:
    lora = smoke_run / "output" / "smoke.safetensors"
    result = _run(
        [sys.executable, "-m", "kohya_wrap", "inspect", str(lora), "--json", "--strict"], Path.cwd(), timeout=120
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    data = json.loads(result.stdout)
    assert (data["naming"], data["unet_modules"], data["text_encoder_modules"]) == ("kohya", 192, 72)
    assert data["healthy"] is True and data["ranks"] == [4] and data["alphas"] == [1.0]
    training = data["training"]
    assert (training["network_module"], training["network_dim"], training["steps"]) == ("networks.lora", 4, 2)
    assert training["base_model_name"] == "sd15-random-fp16.safetensors"
    assert training["dataset_dirs"] == [{"name": "1_ohwx man", "repeats": 1, "images": 2}]
