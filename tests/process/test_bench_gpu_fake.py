"""bench/gpu.py's whole orchestration with the fake trainer: every phase, its figures, the results it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fake_profile_runs_every_phase_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--fake", "--out", str(out), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    phases = {p["id"]: p for p in doc["phases"]}
    assert {p: phases[p]["status"] for p in phases} == {p: "ok" for p in phases}
    for pid, batch in (("a", 2), ("b", 3), ("c", 2)):
        run = phases[pid]
        assert run["exit_code"] == 0 and run["batch_size"] == batch
        assert run["it_per_s"] and run["it_per_s"] > 0
        assert (
            run["images_per_s"] == round(run["it_per_s"] * batch, 3)
            or abs(run["images_per_s"] - run["it_per_s"] * batch) < 0.01
        )
        assert run["time_to_first_step_s"] is not None and run["time_to_first_step_s"] >= 0
        assert run["steps_reached"] == 6
    # the likeness runs sample at their last step; the GUI preset has no prompts
    assert phases["a"]["samples"] and phases["c"]["samples"] and not phases["b"]["samples"]
    assert phases["a"]["mixed_precision_source"] == "auto" and phases["b"]["mixed_precision"] == "bf16"
    assert phases["c"]["command"][1:3] == ["-m", "accelerate.commands.launch"]
    oom = phases["d"]
    assert (oom["exit_code"], oom["outcome"], oom["advice_seen"], oom["batch_size"]) == (10, "oom", True, 512)
    # what comes back from the device: at most 8 files, the table printed last
    assert sorted(p.name for p in out.iterdir()) == ["bench.log", "phases.log", "results.json", "results.md"]
    logs = (out / "phases.log").read_text()
    assert all(f"===== {pid}: " in logs for pid in "abcdefg")
    # the memory runs: batch 1, 4, and 4 with gradient checkpointing, as rows for kohya_wrap's table
    figures = [(f["batch_size"], f["gradient_checkpointing"]) for f in doc["memory_figures"]]
    assert figures == [] and {phases[p]["batch_size"] for p in "efg"} == {1, 4}  # no GPU: no memory figures
    assert done.stdout.rstrip().splitlines()[-1].startswith("it/s: steady state")
    assert "| a: kohya-wrap train, likeness preset | ok |" in (out / "results.md").read_text()
