"""The train stage with the real sd-scripts on the CPU: the smoke preset end to end (plan, train,
events, verified LoRA, run.json), and a run stopped after its first saved state, resumed to the
right final step. About 75 s and 7 GB per training run (the smoke base model is built once)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kohya_wrap.events import Checkpoint, Phase, Progress, StateSaved, Summary, read_events


@pytest.fixture(scope="module")
def smoke_model(real_cache_dir: Path) -> Path:
    from kohya_wrap.smoke.basemodel import ensure_base_model

    return ensure_base_model(real_cache_dir / "models").path


@pytest.fixture()
def smoke_dataset(tmp_path: Path) -> tuple[Path, Path]:
    from kohya_wrap.sdscripts.layout import CAPTION_EXTENSION, TRAIN_DIR, subset_dir_name
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer

    dataset = tmp_path / "dataset"
    folder = dataset / TRAIN_DIR / subset_dir_name(1, "ohwx man")
    for image in write_face_images(folder, count=4):
        image.with_suffix(CAPTION_EXTENSION).write_text("a photo of ohwx man\n")
    tokenizer_cache = tmp_path / "tokenizer_cache"
    write_tokenizer(tokenizer_cache)
    return dataset, tokenizer_cache


def _plan(tmp_path: Path, dataset: Path, tokenizer_cache: Path, model: Path, name: str) -> Path:
    from kohya_wrap.plan import PlanRequest, make_plan
    from kohya_wrap.rundir import write_plan

    plan = make_plan(
        PlanRequest(
            dataset,
            preset="smoke",
            base_model=str(model),
            run_dir=tmp_path / name,
            overrides=["save_state=true"],
            tokenizer_cache_dir=tokenizer_cache,
        )
    )
    write_plan(plan)
    return plan.run_dir


def test_smoke_training_end_to_end(tmp_path: Path, smoke_dataset: tuple[Path, Path], smoke_model: Path) -> None:
    from kohya_wrap.fsutil import sha256_file
    from kohya_wrap.train.runner import run_training

    run_dir = _plan(tmp_path, *smoke_dataset, smoke_model, "run")
    result = run_training(run_dir)
    assert result.outcome == "finished", "\n".join(result.tail)
    assert result.verification is not None and result.verification.ok, result.verification
    events = list(read_events(run_dir / "events.jsonl"))
    phases = [e.phase for e in events if isinstance(e, Phase)]
    for phase in ("preparing", "loading_model", "caching_latents", "training", "sampling", "saving", "finished"):
        assert phase in phases
    assert [e.total_steps for e in events if isinstance(e, Summary)] == [4]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].step == 4 and progress[-1].total == 4 and progress[-1].avr_loss is not None
    checkpoints = [e for e in events if isinstance(e, Checkpoint)]
    assert [c.step for c in checkpoints] == [2, 4, None]  # sd-scripts saves the step file at the last step too
    assert Path(checkpoints[-1].path) == result.lora_file

    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["outcome"] == "finished"
    assert manifest["base_model"]["sha256"] == sha256_file(smoke_model)
    assert manifest["environment"]["torch"] and manifest["environment"]["accelerate"] == "1.6.0"
    assert all(len(c["sha256"]) == 64 for c in manifest["checkpoints"])
    assert manifest["verification"]["ok"] is True
    print("\n".join(result.tail[-15:]))


def test_stopped_run_resumes_to_the_final_step(
    tmp_path: Path, smoke_dataset: tuple[Path, Path], smoke_model: Path
) -> None:
    from kohya_wrap.train.runner import TrainOptions, run_training

    run_dir = _plan(tmp_path, *smoke_dataset, smoke_model, "run")

    def ctrl_c_after_first_state(event: object) -> None:
        if isinstance(event, StateSaved) and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C does to kohya-wrap

    first = run_training(run_dir, on_event=ctrl_c_after_first_state)
    assert first.outcome == "interrupted"
    assert first.last_state is not None and first.last_state.step == 2
    second = run_training(run_dir, TrainOptions(resume=True))
    assert second.outcome == "finished", "\n".join(second.tail)
    events = list(read_events(run_dir / "events.jsonl"))
    finished_at = [i for i, e in enumerate(events) if e.type == "finished"]
    resumed = [e for e in events[finished_at[0] + 1 :] if isinstance(e, Progress)]
    assert (resumed[0].step, resumed[0].total) == (2, 4)
    assert (resumed[-1].step, resumed[-1].total) == (4, 4)
    assert second.verification is not None and second.verification.ok
    manifest = json.loads((run_dir / "run.json").read_text())
    assert [a["outcome"] for a in manifest["attempts"]] == ["interrupted", "finished"]


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, read with safetensors itself."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return dict(f.metadata() or {})


def test_extend_a_finished_smoke_run_by_two_steps(
    tmp_path: Path, smoke_dataset: tuple[Path, Path], smoke_model: Path
) -> None:
    """`train --extend 2` of a finished 4-step run: from its LoRA weights (the smoke preset saves no
    state, and its one epoch ends at step 4), numbered on to a verified checkpoint at step 6."""
    from kohya_wrap.rundir import read_plan
    from kohya_wrap.train.runner import TrainOptions, run_training

    run_dir = _plan(tmp_path, *smoke_dataset, smoke_model, "run")
    first = run_training(run_dir, TrainOptions())
    assert first.outcome == "finished", "\n".join(first.tail)
    name = read_plan(run_dir).output_name
    step4 = run_dir / "output" / f"{name}-step00000004.safetensors"
    step4_bytes = step4.read_bytes()

    extended = run_training(run_dir, TrainOptions(extend=2))
    assert extended.outcome == "finished", "\n".join(extended.tail)
    assert extended.verification is not None and extended.verification.ok, extended.verification
    step6 = run_dir / "output" / f"{name}-step00000006.safetensors"
    assert step6.is_file() and read_metadata(step6)["ss_steps"] == "6"
    assert read_metadata(run_dir / "output" / f"{name}.safetensors")["ss_steps"] == "6"
    assert step4.read_bytes() == step4_bytes  # the earlier checkpoints stay as they were
    events = list(read_events(run_dir / "events.jsonl"))
    finished_at = [i for i, e in enumerate(events) if e.type == "finished"]
    after = events[finished_at[0] + 1 :]
    progress = [e for e in after if isinstance(e, Progress)]
    assert (progress[-1].step, progress[-1].total) == (6, 6)
    assert [c.step for c in after if isinstance(c, Checkpoint)] == [6, None]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["lora"]["step"] == 6 and manifest["steps"]["extended_to"] == 6
    assert manifest["attempts"][-1]["extend_steps"] == 2 and manifest["attempts"][-1]["resumed_at_step"] == 4
    assert "--network_weights" in manifest["attempts"][-1]["argv"]
    print("\n".join(extended.tail[-15:]))
