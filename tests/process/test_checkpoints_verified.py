"""Every checkpoint is verified (every tensor its header declares is in the file) before it is exported,
recommended or listed as good: a trainer killed mid-save leaves a file cut short."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.cli import cli  # noqa: E402
from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.safetensors_header import incomplete  # noqa: E402
from kohya_wrap.score.collect import group_run_samples  # noqa: E402
from kohya_wrap.train.runner import run_training  # noqa: E402


def torn_run(tmp_path: Path) -> Path:
    run_dir = make_run_dir(
        tmp_path, max_train_steps=6, save_every_n_steps=2, sample_every_n_steps=2, fake_args=("--torn-save-at", "4")
    )
    result = run_training(run_dir)
    assert result.outcome == "killed"
    return run_dir


def test_run_json_lists_a_checkpoint_cut_short_as_incomplete(tmp_path):
    run_dir = torn_run(tmp_path)
    torn = run_dir / "output" / "face-step00000004.safetensors"
    assert incomplete(torn) and "cut short" in incomplete(torn)
    doc = json.loads((run_dir / "run.json").read_text())
    by_step = {c["step"]: c for c in doc["checkpoints"]}
    assert by_step[2]["complete"] is True and "problem" not in by_step[2]
    assert by_step[4]["complete"] is False and "cut short" in by_step[4]["problem"]


def test_export_never_ships_a_checkpoint_cut_short(tmp_path):
    run_dir = torn_run(tmp_path)
    out = tmp_path / "exported"
    out.mkdir()
    result = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["step"] == 2 and incomplete(Path(doc["path"])) is None
    assert CliRunner().invoke(cli, ["inspect", doc["path"]]).exit_code == 0
    asked = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "x.safetensors"), "--step", "4"])
    assert asked.exit_code == ExitCode.ERROR and "incomplete" in asked.output and "Traceback" not in asked.output
    assert not (tmp_path / "x.safetensors").exists()


def test_a_recommended_checkpoint_cut_short_is_not_exported_and_says_why(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=3)
    assert run_training(run_dir).outcome == "finished"
    final = run_dir / "output" / "face.safetensors"
    final.write_bytes(final.read_bytes()[:-64])  # a copy that did not finish
    score = {"checkpoints": [{"step": 4}], "recommended": {"step": 4, "checkpoint": final.name}, "reason": "best"}
    (run_dir / "score.json").write_text(json.dumps(score))
    result = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "x.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["step"] == 3 and "incomplete" in doc["note"]


def test_score_never_pairs_samples_with_a_checkpoint_cut_short(tmp_path):
    run_dir = make_run_dir(tmp_path, max_train_steps=4, save_every_n_steps=2, sample_every_n_steps=2)
    assert run_training(run_dir).outcome == "finished"
    torn = run_dir / "output" / "face-step00000002.safetensors"
    torn.write_bytes(torn.read_bytes()[:-16])
    groups, _ = group_run_samples(run_dir)
    by_step = {g.step: g for g in groups}
    assert by_step[4].checkpoint is not None
    assert by_step[2].checkpoint is None  # so `recommend(need_file=True)` can never choose it


def test_runs_and_status_never_list_a_final_lora_cut_short_as_the_output(tmp_path):
    from kohya_wrap.status import read_status

    run_dir = make_run_dir(tmp_path, max_train_steps=2, save_every_n_steps=None)
    assert run_training(run_dir).outcome == "finished"
    final = run_dir / "output" / "face.safetensors"
    rows = json.loads(CliRunner().invoke(cli, ["runs", str(run_dir.parent), "--json"]).stdout)
    assert rows[0]["output"] == str(final) and read_status(run_dir).lora_exists
    final.write_bytes(final.read_bytes()[:-100])
    rows = json.loads(CliRunner().invoke(cli, ["runs", str(run_dir.parent), "--json"]).stdout)
    assert rows[0]["output"] is None and not read_status(run_dir).lora_exists
