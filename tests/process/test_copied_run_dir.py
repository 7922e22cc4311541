"""A run directory trains where it is: `cp -r A B` of a planned run, then train both; each writes its own
output, and B's run.json names B's LoRA (config.toml's plan-time paths never send B's output into A)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.fsutil import sha256_file  # noqa: E402
from kohya_wrap.rundir import read_plan  # noqa: E402
from kohya_wrap.train.runner import prepare_run, run_training  # noqa: E402


def test_a_copied_run_directory_trains_into_itself(tmp_path):
    a = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2)
    b = tmp_path / "copy"
    shutil.copytree(a, b)
    plan = read_plan(b)
    assert plan.output_dir == b / "output" and plan.lora_file == b / "output" / "face.safetensors"

    result_b = run_training(b)
    assert result_b.outcome == "finished", result_b.tail
    assert not (a / "output").exists()  # nothing of B went into A
    assert any("planned at" in w for w in result_b.warnings)
    doc_b = json.loads((b / "run.json").read_text())
    assert doc_b["lora"]["path"] == str(b / "output" / "face.safetensors")
    assert all(c["path"].startswith(str(b)) for c in doc_b["checkpoints"])

    result_a = run_training(a)  # A still trains, into A
    assert result_a.outcome == "finished"
    assert json.loads((a / "run.json").read_text())["lora"]["path"] == str(a / "output" / "face.safetensors")
    assert doc_b["lora"]["sha256"] == sha256_file(b / "output" / "face.safetensors")  # B's LoRA untouched by A


def test_status_of_a_copied_trained_run_names_the_copys_files(tmp_path):
    from kohya_wrap.status import read_status

    a = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2, sample_every_n_steps=2)
    assert run_training(a).outcome == "finished"
    b = tmp_path / "copy"
    shutil.copytree(a, b)
    status = read_status(b)
    shown = [status.last_checkpoint, status.last_state, status.last_sample]
    assert all(f is not None and f.path.startswith(str(b) + "/") and Path(f.path).exists() for f in shown), shown
    assert status.lora_file == str(b / "output" / "face.safetensors")
    assert all(f is not None and f.path.startswith(str(a) + "/") for f in (read_status(a).last_checkpoint,))


def test_a_copied_run_directory_says_where_it_trains_in_a_dry_run(tmp_path):
    a = make_run_dir(tmp_path)
    b = tmp_path / "moved"
    shutil.copytree(a, b)
    prepared = prepare_run(b, fetch_models=False)
    argv = list(prepared.argv)
    assert argv[argv.index("--output_dir") + 1] == str(b / "output")
    assert str(a) not in " ".join(argv)
    assert not [x for x in prepare_run(a, fetch_models=False).argv if x == "--output_dir"]  # in place: as planned


def test_a_moved_run_directory_reads_the_dataset_it_holds_where_it_is_now(tmp_path):
    from run_dir import make_dataset

    from kohya_wrap.sdscripts.configs import DatasetSubset, render_dataset_toml

    a = make_run_dir(tmp_path, max_train_steps=2, save_every_n_steps=None)
    dataset = make_dataset(a / "dataset")  # where `kohya-wrap run` prepares it
    subset = dataset / "img" / "1_ohwx man"
    (a / "dataset.toml").write_text(
        render_dataset_toml(
            [DatasetSubset(str(subset), 1, "ohwx man", False)], resolution="64", batch_size=1, enable_bucket=False
        )
    )
    plan = json.loads((a / "plan.json").read_text())
    plan["dataset"]["subsets"] = [
        {"dir": str(subset), "images": 4, "repeats": 1, "class_tokens": "ohwx man", "is_reg": False}
    ]
    (a / "plan.json").write_text(json.dumps(plan))
    b = tmp_path / "moved"
    a.rename(b)
    assert read_plan(b).subsets[0].dir == str(b / "dataset" / "img" / "1_ohwx man")
    assert run_training(b).outcome == "finished"
    import tomllib

    doc = tomllib.loads((b / "dataset.toml").read_text())
    assert doc["datasets"][0]["subsets"][0]["image_dir"] == str(b / "dataset" / "img" / "1_ohwx man")
