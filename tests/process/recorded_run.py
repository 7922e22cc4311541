"""A copy of the recorded run tests/data/status/A_cli whose paths point into the copy."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

RECORDED = Path(__file__).parents[1] / "data" / "status" / "A_cli"
RECORDED_PREFIX = "/data/runs/A_cli"

# a complete safetensors file with no tensors: a stand-in LoRA that passes the completeness check
STAND_IN_LORA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "


def recorded_lines() -> list[str]:
    return (RECORDED / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def copy_recorded_run(
    run_dir: Path,
    *,
    events: int | None = None,
    age_s: float | None = None,
    with_files: bool = False,
    base_model: Path | None = None,
) -> Path:
    """The recorded run in run_dir, its first `events` events only when given.

    age_s: shift the timestamps so that the last event copied happened age_s seconds ago.
    with_files: also create the sample PNGs, LoRA files and state folders the events name (stand-ins).
    base_model: the plan's base model becomes this file (the recorded one is not on this machine).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("plan.json", "events.jsonl"):
        text = (RECORDED / name).read_text(encoding="utf-8").replace(RECORDED_PREFIX, str(run_dir))
        if name == "events.jsonl":
            lines = text.splitlines(keepends=True)[:events]
            text = "".join(_shifted(lines, age_s) if age_s is not None else lines)
        if name == "plan.json" and base_model is not None:
            plan = json.loads(text)
            plan["base_model"].update(source=str(base_model), path=str(base_model))
            text = json.dumps(plan, indent=2)
        (run_dir / name).write_text(text, encoding="utf-8")
    if with_files:
        from PIL import Image

        for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event["type"] == "sample":
                path = Path(event["path"])
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (60 * event["step"], 90, 160)).save(path)
            elif event["type"] == "state_saved":
                # what the trainer's state folder holds for a resume to find it (see tests/fakes)
                Path(event["path"]).mkdir(parents=True, exist_ok=True)
                Path(event["path"], "train_state.json").write_text(
                    json.dumps({"current_epoch": 1, "current_step": event["step"]}), encoding="utf-8"
                )
                # and what accelerate writes after it: a state folder without these was cut short
                for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
                    Path(event["path"], name).write_bytes(b"stand-in")
            elif event["type"] == "checkpoint":
                Path(event["path"]).parent.mkdir(parents=True, exist_ok=True)
                Path(event["path"]).write_bytes(STAND_IN_LORA)
    return run_dir


def _shifted(lines: list[str], age_s: float) -> list[str]:
    events = [json.loads(line) for line in lines]
    last = _parse(events[-1]["t"])
    delta = datetime.now(timezone.utc) - timedelta(seconds=age_s) - last
    for event in events:
        event["t"] = (_parse(event["t"]) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [json.dumps(event, ensure_ascii=False) + "\n" for event in events]


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))
