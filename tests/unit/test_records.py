"""plan.json, run.json and the lock file as codec records: files of the previous version read unchanged,
what is written keeps the shape docs/run-directory.md gives."""

import json
import math
import shutil
from pathlib import Path

import pytest

from kohya_wrap import codec
from kohya_wrap.errors import RunDirError
from kohya_wrap.events import Error
from kohya_wrap.rundir import FileEntry, RunManifest, read_manifest, read_plan, write_manifest
from kohya_wrap.rundir.lock import RunLock, lock_holder

A_CLI = Path(__file__).resolve().parents[1] / "data" / "status" / "A_cli"

# run.json as the previous kohya-wrap (dict-walking to_json) wrote it
OLD_RUN_JSON = {
    "schema": 1,
    "kohya_wrap_version": "0.1.0",
    "run_dir": "/r",
    "outcome": "nan",
    "exit_code": 15,
    "started_at": "2026-11-25T09:14:39.000123+00:00",
    "ended_at": "2026-11-25T09:15:52.500+00:00",
    "preset": {"name": "smoke", "sha256": "ab"},
    "values": {"network_dim": 4, "learning_rate": 0.0001, "network_args": ["conv_dim=4"], "cache_latents": True},
    "value_sources": {"network_dim": "preset:smoke"},
    "dataset_manifest_sha256": None,
    "base_model": {"path": "/m.safetensors", "sha256": None},
    "sd_scripts": {"path": "/sd", "commit": "ae72efb"},
    "machine": {"python": "/py", "device": "cpu", "gpus": [], "num_processes": 1, "memory_fit": None},
    "environment": {"python": "3.11.7", "torch": None, "gpu": []},
    "steps": {"planned": 4, "reached": 3, "trainer_total": 4},
    "mean_it_per_s": 0.2512,
    "final_loss": "nan",
    "checkpoints": [
        {"path": "/r/output/x-step00000002.safetensors", "step": 2, "exists": True, "bytes": 9, "sha256": "c"},
        {"path": "/r/output/x-step00000004.safetensors", "step": 4, "exists": True, "complete": False},
        {"path": "/r/output/gone.safetensors", "step": 1, "exists": False},
    ],
    "states": [{"path": "/r/output/x-step00000002-state", "step": 2}],
    "samples": [{"path": "/r/output/sample/a.png", "step": 2, "prompt_index": 0}],
    "lora": None,
    "verification": None,
    "score": None,
    "errors": [{"t": "2026-11-25T09:15:50.000Z", "type": "error", "message": "loss is nan", "kind": "nan"}],
    "attempts": [
        {
            "started_at": "2026-11-25T09:14:39.000123+00:00",
            "ended_at": "2026-11-25T09:15:52.500+00:00",
            "duration_s": 73.5,
            "outcome": "nan",
            "exit_code": 15,
            "returncode": -2,
            "stop_reason": "nan",
            "resumed_from": None,
            "resumed_at_step": None,
            "argv": ["/py", "-m", "accelerate.commands.launch"],
            "machine": {"python": "/py", "device": "cpu"},
        }
    ],
}


def test_a_run_json_of_the_previous_version_reads_typed(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(OLD_RUN_JSON))
    m = read_manifest(path)
    assert m is not None and m.outcome == "nan" and math.isnan(m.final_loss)
    assert m.values["network_args"] == ["conv_dim=4"] and m.values["cache_latents"] is True
    assert m.errors == (Error(message="loss is nan", kind="nan"),)
    assert m.attempts[0].extend_steps is None and m.attempts[0].argv[0] == "/py"
    assert m.steps.extended_to is None and m.stopped_early is None
    assert codec.parse_time(m.attempts[0].started_at) < codec.parse_time(m.ended_at or "")
    # written again, the file keeps its keys: an entry's bytes/sha256/complete only where they were
    write_manifest(path, m)
    again = json.loads(path.read_text())
    assert again["checkpoints"][2] == OLD_RUN_JSON["checkpoints"][2]
    assert again["checkpoints"][1] == OLD_RUN_JSON["checkpoints"][1]
    assert again["final_loss"] == "nan" and again["errors"][0]["kind"] == "nan"
    assert list(again)[:4] == ["schema", "kohya_wrap_version", "run_dir", "outcome"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("outcome", "exploded"), ("steps", []), ("final_loss", "lots"), ("checkpoints", [{"path": 5, "step": 1}])],
)
def test_a_run_json_with_a_wrong_field_is_unreadable_not_a_crash(tmp_path, key, value):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**OLD_RUN_JSON, key: value}))
    assert read_manifest(path) is None
    with pytest.raises(codec.RecordError, match=f"run.json: {key}"):
        codec.read(path, RunManifest, what="run.json")


def test_a_file_entry_is_written_as_before(tmp_path):
    lora = tmp_path / "x.safetensors"
    assert codec.to_builtins(FileEntry.of(lora, 3)) == {"path": str(lora), "step": 3, "exists": False}
    lora.write_bytes(b"not a safetensors file")
    entry = codec.to_builtins(FileEntry.of(lora, 3))
    assert list(entry) == ["path", "step", "exists", "bytes", "sha256", "complete", "problem"]
    assert entry["complete"] is False and entry["bytes"] == 22


def test_a_schema_1_plan_reads_with_its_launch_upgraded(tmp_path):
    run = tmp_path / "A_cli"
    shutil.copytree(A_CLI, run)
    plan = read_plan(run)
    assert plan.launch.gpus == 1 and plan.launch.machines.count == 1 and plan.launch.machines.main_port == 29500
    assert dict(plan.env) == {"PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    assert plan.max_train_steps == 4 and plan.steps.steps_per_epoch == 40 and plan.base_model.kind == "file"
    assert plan.sd_scripts.commit == "ae72efb92babe89ff8e70f057e42db68440e8d61" and plan.sd_scripts.matches_pin
    assert plan.values["max_train_steps"] == 4 and plan.sources["network_dim"] == "preset:smoke"
    doc = codec.to_builtins(plan.document())
    assert doc["schema"] == 2 and doc["launch"]["num_machines"] == 1 and "argv" not in doc["launch"]


def test_a_schema_1_plan_with_a_bad_command_line_is_a_clean_error(tmp_path):
    run = tmp_path / "A_cli"
    shutil.copytree(A_CLI, run)
    doc = json.loads((run / "plan.json").read_text())
    doc["launch"]["argv"] += ["--num_machines", "two"]
    (run / "plan.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="plan.json: launch.argv"):
        read_plan(run)


def test_the_lock_file_says_who_holds_it(tmp_path):
    with RunLock(tmp_path, "train"):
        line = (tmp_path / ".lock").read_text()
        assert list(json.loads(line)) == ["pid", "since", "what", "host"]
        holder = lock_holder(tmp_path)
        # this process holds the flock, so a second descriptor cannot take it: the holder is read back
        assert holder is not None and holder.what == "train" and holder.since and holder.since.endswith("Z")
    assert lock_holder(tmp_path) is None
