"""`runs`: one row per run folder, whatever state each run is in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_run_fixture import make_run

from kohya_wrap.cli import cli
from kohya_wrap.errors import RunDirError
from kohya_wrap.report.runs import list_runs


def _runs_dir(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    make_run(runs, name="b-finished")
    planned = make_run(runs, name="a-planned", with_run_json=False, with_lora=False, sample_steps=())
    (planned / "events.jsonl").unlink()
    plan = json.loads((planned / "plan.json").read_text())
    plan["created_at"] = "2026-11-24T08:00:00.000Z"
    plan["preset"]["name"] = "likeness-sd15"
    (planned / "plan.json").write_text(json.dumps(plan))
    broken = runs / "c-broken"
    broken.mkdir()
    (broken / "plan.json").write_text("{oops")
    (runs / "not-a-run").mkdir()
    (runs / "notes.txt").write_text("x")
    return runs


def test_rows(tmp_path: Path) -> None:
    rows = list_runs(_runs_dir(tmp_path))
    assert [r.run_dir.name for r in rows] == ["a-planned", "b-finished", "c-broken"]
    planned, finished, broken = rows
    assert (
        planned.preset,
        planned.outcome,
        planned.steps_done,
        planned.steps_total,
        planned.final_loss,
        planned.output,
    ) == ("likeness-sd15", "planned", None, 4, None, None)
    assert (finished.preset, finished.outcome, finished.steps_done, finished.steps_total, finished.final_loss) == (
        "smoke",
        "finished",
        4,
        4,
        1.12,
    )
    assert finished.output == tmp_path / "runs" / "b-finished" / "output" / "tinylora.safetensors"
    assert finished.when == "2026-11-25T09:14:38.901Z"
    assert broken.outcome == "unreadable" and "not valid JSON" in broken.problem


def test_a_run_folder_itself(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    assert [r.run_dir for r in list_runs(run_dir)] == [run_dir]


def test_empty_and_missing(tmp_path: Path) -> None:
    assert list_runs(tmp_path) == []
    with pytest.raises(RunDirError, match="absent does not exist") as e:
        list_runs(tmp_path / "absent")
    assert "./runs" in (e.value.hint or "")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunDirError, match="a-file is not a folder"):
        list_runs(tmp_path / "a-file")


def test_cli_table_and_json(tmp_path: Path) -> None:
    runs = _runs_dir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["runs", str(runs), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["outcome"] for r in data] == ["planned", "finished", "unreadable"]
    assert data[1]["final_loss"] == 1.12 and data[1]["steps_done"] == 4
    table = runner.invoke(cli, ["runs", str(runs)], terminal_width=200)
    assert table.exit_code == 0
    for expected in ("a-planned", "b-finished", "finished", "1.12", "4/4", "likeness-sd15"):
        assert expected in table.output
    missing = runner.invoke(cli, ["runs", str(tmp_path / "absent")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no runs in" in runner.invoke(cli, ["runs", str(empty)]).output


def test_a_run_stopped_early_shows_the_checkpoint_export_takes(tmp_path: Path) -> None:
    import numpy as np
    from report_run_fixture import OUTPUT_NAME
    from safetensors.numpy import save_file

    run = make_run(tmp_path, with_run_json=False, with_lora=False)
    events = run / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for event in lines:
        if event["type"] == "finished":
            event.update(outcome="stopped_early", exit_code=0)
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    for step in (2, 4):
        save_file(
            {"lora_unet_a.alpha": np.array([4.0], dtype=np.float32)},
            str(run / "output" / f"{OUTPUT_NAME}-step{step:08d}.safetensors"),
            metadata={"ss_steps": str(step)},
        )
    (row,) = list_runs(run)
    assert row.outcome == "stopped_early"
    assert row.output == run / "output" / f"{OUTPUT_NAME}-step00000004.safetensors"  # not scored: the last
    score = {"checkpoints": [], "recommended": {"step": 2}, "reason": "r", "model": {"id": "dlib-x"}}
    (run / "score.json").write_text(json.dumps(score))
    (row,) = list_runs(run)
    assert row.output == run / "output" / f"{OUTPUT_NAME}-step00000002.safetensors"  # the recommended one
