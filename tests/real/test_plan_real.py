"""sd-scripts itself accepts what `plan` writes, and counts the steps as we do.

1. Without a model (about 20 s): sd-scripts' own parser, --config_file merge, dataset-config sanitizer
   (voluptuous), dataset construction and bucketing run on our config.toml + dataset.toml, and its
   prompt-line parser on our sample_prompts.txt; the dataset length it computes is our batch count.
2. With the random SD 1.5 model of the smoke builder (about 40 s, 7 GB): the planned command starts
   training, and the "running training" summary prints the total steps the plan computed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from kohya_wrap.plan import PlanRequest, make_plan
from kohya_wrap.rundir import read_plan, write_plan
from kohya_wrap.sdscripts.checkout import locate
from kohya_wrap.train.runner import prepare_run

PROBE = r"""
import json, sys
from library import config_util, train_util
import train_network

for config_toml in sys.argv[1:]:
    sys.argv = ["train_network.py", "--config_file", config_toml]  # read_config_from_file parses sys.argv again
    parser = train_network.setup_parser()
    args = parser.parse_args()
    args = train_util.read_config_from_file(args, parser)
    train_util.prepare_dataset_args(args, True)
    user_config = config_util.load_user_config(str(args.dataset_config))
    sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
    blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
    group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    prompts = [train_util.line_to_prompt_dict(line) for line in open(args.sample_prompts, encoding="utf-8")
               if line.strip() and not line.startswith("#")] if args.sample_prompts else []
    print("PROBE " + json.dumps({
        "config": config_toml, "num_train_images": group.num_train_images, "num_reg_images": group.num_reg_images,
        "batches_per_epoch": len(group), "max_train_steps": args.max_train_steps, "learning_rate": args.learning_rate,
        "network_alpha": args.network_alpha, "mixed_precision": args.mixed_precision,
        "prompts": [{k: p.get(k) for k in ("prompt", "width", "height", "seed", "sample_steps", "scale")} for p in prompts],
    }), flush=True)
"""


def fake_model(path: Path) -> Path:
    from sd15_stub import write_sd15_stub

    return write_sd15_stub(path)


def square_dataset(
    root: Path, images: int, repeats: int = 1, explicit: bool = False, reg: int = 0, size: int = 64
) -> Path:
    sub = root / "img" / f"{repeats}_ohwx man"
    sub.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (size, size), (40 + i, 90, 120)).save(sub / f"{i:04d}.png")
        (sub / f"{i:04d}.txt").write_text("ohwx man, a photo\n", encoding="utf-8")
    if reg:
        rsub = root / "reg" / "1_man"
        rsub.mkdir(parents=True)
        for i in range(reg):
            Image.new("RGB", (size, size), (90, 40 + i, 120)).save(rsub / f"r{i:04d}.png")
    (root / "prepare.json").write_text(
        json.dumps(
            {
                "parameters": {
                    "token": "ohwx",
                    "class": "man",
                    "size": size,
                    "repeats": repeats,
                    "repeats_explicit": explicit,
                }
            }
        )
    )
    return root


def tokenizer(root: Path) -> Path:
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    write_tokenizer(root)
    return root


def test_sd_scripts_accepts_our_configs_and_counts_the_same_batches(tmp_path):
    checkout = locate()
    model = fake_model(tmp_path / "model.safetensors")  # never loaded: the probe stops before the model
    tok = tokenizer(tmp_path / "tok")
    cases = {
        "likeness": dict(dataset=square_dataset(tmp_path / "d1", 20, size=512), preset="likeness-sd15", overrides=()),
        "likeness_reg": dict(
            dataset=square_dataset(tmp_path / "d2", 7, reg=30, size=512),
            preset="likeness-sd15",
            overrides=("caption_dropout_rate=0.0",),
        ),
        "explicit": dict(
            dataset=square_dataset(tmp_path / "d3", 9, repeats=3, explicit=True, size=512),
            preset="likeness-sd15-768",
            overrides=("train_batch_size=4",),
        ),
        "smoke": dict(dataset=square_dataset(tmp_path / "d4", 4, size=128), preset="smoke", overrides=()),
    }
    plans = {}
    for name, case in cases.items():
        plan = make_plan(
            PlanRequest(
                case["dataset"],
                preset=case["preset"],
                base_model=str(model),
                run_dir=tmp_path / f"run-{name}",
                overrides=case["overrides"],
                tokenizer_cache_dir=tok,
            )
        )
        write_plan(plan)
        plans[str(plan.run_dir / "config.toml")] = read_plan(plan.run_dir)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *plans],
        cwd=checkout.path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(checkout.path), "COLUMNS": "1000"},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    results = [json.loads(line[6:]) for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    assert len(results) == len(plans)
    for r in results:
        plan = plans[r["config"]]
        steps = plan.steps
        assert r["num_train_images"] == steps.train_images_x_repeats, r
        raw_reg = sum(s.images * s.repeats for s in plan.subsets if s.is_reg)
        assert r["num_reg_images"] == raw_reg, r
        assert r["batches_per_epoch"] == steps.steps_per_epoch, r  # one process, no accumulation
        assert r["max_train_steps"] == plan.max_train_steps
        assert r["learning_rate"] == plan.values["learning_rate"] and type(r["network_alpha"]) is float
        # an automatic precision is train's, on its command line; the config alone gives sd-scripts' default
        assert r["mixed_precision"] == plan.values.get("mixed_precision", "no")
        assert len(r["prompts"]) == len(plan.ours["prompts"])
        for i, p in enumerate(r["prompts"]):
            side = int(plan.values["resolution"].split(",")[0])
            assert (p["width"], p["height"], p["seed"], p["sample_steps"]) == (
                side,
                side,
                plan.ours["sample_seed"] + i,
                plan.ours["sample_steps"],
            )
            assert "ohwx man" in p["prompt"] and "--" not in p["prompt"]


@pytest.mark.slow
def test_smoke_plan_starts_real_training_with_the_planned_total(tmp_path, real_cache_dir):
    from kohya_wrap.smoke.basemodel import ensure_base_model
    from kohya_wrap.smoke.images import write_face_images

    model = ensure_base_model(real_cache_dir / "models", verify_hash=False)
    tok = tokenizer(real_cache_dir / "tokenizer")
    dataset = tmp_path / "ds"
    write_face_images(dataset / "img" / "1_ohwx man", count=4)
    plan = make_plan(
        PlanRequest(
            dataset, preset="smoke", base_model=str(model.path), run_dir=tmp_path / "run", tokenizer_cache_dir=tok
        )
    )
    write_plan(plan)
    launch = prepare_run(plan.run_dir)  # the command train resolves on this machine
    launch.files.accelerate_config.write_text(launch.accelerate_config)

    proc = subprocess.Popen(
        list(launch.argv),
        cwd=plan.run_dir,
        env={**os.environ, **launch.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    summary: dict[str, int] = {}
    seen: list[str] = []
    deadline = time.monotonic() + 480
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            m = re.search(
                r"(num train images \* repeats|num batches per epoch|num epochs|total optimization steps)"
                r"[^:]*: (\d+)",
                line,
            )
            if m:
                summary[m.group(1)] = int(m.group(2))
            if "total optimization steps" in summary or time.monotonic() > deadline:
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "total optimization steps" in summary, "".join(seen[-60:])
    assert summary["total optimization steps"] == plan.max_train_steps == 4
    assert summary["num train images * repeats"] == plan.steps.train_images_x_repeats
    assert summary["num batches per epoch"] == plan.steps.steps_per_epoch
    assert summary["num epochs"] == plan.steps.epochs
