"""Which images score looks at: grouping samples by step, the run's photos and checkpoints (no dlib needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from report_run_fixture import OUTPUT_NAME, make_run

from kohya_wrap.score.collect import (
    ScoreError,
    collect_run_samples,
    collect_samples_dir,
    folder_references,
    folder_step,
    group_run_samples,
    group_samples_dir,
    run_references,
)
from kohya_wrap.sdscripts.samples import (
    checkpoint_steps,
    parse_sample_name,
    sample_step,
)


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 120, 150)).save(path)
    return path


def test_samples_grouped_by_sd_scripts_file_names(tmp_path: Path) -> None:
    for name in (
        "my_lora_v2_000250_00_20261201101010_42.png",
        "my_lora_v2_000250_01_20261201101011.png",
        "my_lora_v2_000500_00_20261201102020_7.png",
        "my_lora_v2_000750_00_20261201103030.png",
    ):
        png(tmp_path / name)
    png(tmp_path / "notes.png")  # not a sample name: left out, and said
    found = collect_samples_dir(tmp_path)
    assert [(g.step, [p.name for p in g.images]) for g in found.groups] == [
        (250, ["my_lora_v2_000250_00_20261201101010_42.png", "my_lora_v2_000250_01_20261201101011.png"]),
        (500, ["my_lora_v2_000500_00_20261201102020_7.png"]),
        (750, ["my_lora_v2_000750_00_20261201103030.png"]),
    ]
    assert all(g.checkpoint is None for g in found.groups)
    assert [(Path(x.file).name, x.kind) for x in found.left_out] == [("notes.png", "sample")]
    assert "does not say a step" in found.left_out[0].why
    assert group_samples_dir(tmp_path) == found.groups


def test_samples_of_two_runs_in_one_folder_are_refused_not_merged(tmp_path: Path) -> None:
    # Behaviour change (issue 17): these used to be merged into the same steps.
    for name in (
        "ohwx_000250_00_20261201101010_42.png",
        "ohwx_000500_00_20261201101011.png",
        "other_run_000250_00_20261201102020_7.png",
    ):
        png(tmp_path / name)
    with pytest.raises(ScoreError) as e:
        collect_samples_dir(tmp_path)
    assert "samples of 2 runs in one folder" in e.value.message
    assert "ohwx (2 files)" in e.value.message and "other_run (1 files)" in e.value.message
    assert "one run's samples per folder" in str(e.value.hint)


def test_samples_grouped_by_one_subfolder_per_checkpoint(tmp_path: Path) -> None:
    png(tmp_path / "step-000500" / "a.png")
    png(tmp_path / "step-000500" / "nested" / "b.jpg")
    png(tmp_path / "1000" / "c.png")
    png(tmp_path / "ohwx-step00001500" / "d.webp".replace(".webp", ".png"))
    png(tmp_path / "step-000250" / ".hidden.png")  # hidden files are not samples
    (tmp_path / "empty-250").mkdir()
    groups = group_samples_dir(tmp_path)
    assert [(g.step, sorted(p.name for p in g.images)) for g in groups] == [
        (500, ["a.png", "b.jpg"]),
        (1000, ["c.png"]),
        (1500, ["d.png"]),
    ]


def test_folder_step_is_the_last_number_of_the_name() -> None:
    assert [folder_step(n) for n in ("step-000500", "500", "ohwx-step00001500", "v2-ckpt-300", "final")] == [
        500,
        500,
        1500,
        300,
        None,
    ]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "no images"),
        (lambda d: png(d / "IMG_0001.png"), "1 images whose names do not say a step"),
        (lambda d: png(d / "final" / "a.png"), "subfolders without a step number in their name: final"),
    ],
)
def test_samples_that_say_no_step_are_an_error(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    with pytest.raises(ScoreError, match=message) as e:
        group_samples_dir(tmp_path)
    assert "step-000500" in (e.value.hint or "")


def test_a_missing_samples_or_reference_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScoreError, match="no such folder"):
        group_samples_dir(tmp_path / "nope")
    with pytest.raises(ScoreError, match="no such folder"):
        folder_references(tmp_path / "nope")


def test_reference_folders_are_read_recursively_without_hidden_files(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "more" / "b.jpg")
    png(tmp_path / ".thumbs" / "c.png")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    assert [p.name for p in folder_references(tmp_path)] == ["a.png", "b.jpg"]


def test_epoch_named_samples_are_placed_at_the_step_their_epoch_ended() -> None:
    first = parse_sample_name("ohwx_e000000_00_20261201101010.png")
    third = parse_sample_name("ohwx_e000003_01_20261201101010_5.png")
    stepped = parse_sample_name("ohwx_000250_00_20261201101010.png")
    assert first is not None and third is not None and stepped is not None
    assert sample_step(first, 40, 100) == 0  # --sample_at_first
    assert sample_step(third, 40, 100) == 100  # 120, capped at the run's length
    assert sample_step(third, 40, None) == 120
    assert sample_step(third, None, 100) is None
    assert sample_step(stepped, None, None) == 250


def test_checkpoint_steps_from_metadata_name_or_the_final_file(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    out = tmp_path / "output"
    out.mkdir()
    t = {"lora_unet_x.alpha": np.ones((1,), dtype=np.float32)}
    save_file(t, str(out / "ohwx-step00000250.safetensors"), metadata={"ss_steps": "250"})
    save_file(t, str(out / "ohwx-000002.safetensors"), metadata={"ss_steps": "500"})  # epoch-named: metadata says
    (out / "ohwx-step00000750.safetensors").write_bytes(b"\xff" * 16)  # unreadable: the name says
    save_file(t, str(out / "ohwx.safetensors"))  # no metadata: the final step
    save_file(t, str(out / "other.safetensors"), metadata={"ss_steps": "1"})  # another output name
    assert {s: p.name for s, p in checkpoint_steps(out, "ohwx", 1000).items()} == {
        250: "ohwx-step00000250.safetensors",
        500: "ohwx-000002.safetensors",
        750: "ohwx-step00000750.safetensors",
        1000: "ohwx.safetensors",
    }


def test_a_runs_samples_are_grouped_with_the_lora_saved_at_each_step(tmp_path: Path) -> None:
    run = make_run(tmp_path, sample_steps=(0, 2, 4))
    groups, where = group_run_samples(run)
    assert where == str(run / "output" / "sample")
    assert [(g.step, len(g.images), g.checkpoint.name if g.checkpoint else None) for g in groups] == [
        (0, 2, None),
        (2, 2, f"{OUTPUT_NAME}-step00000002.safetensors"),
        (4, 2, f"{OUTPUT_NAME}.safetensors"),
    ]


def test_a_runs_other_images_in_its_sample_folder_are_reported_as_left_out(tmp_path: Path) -> None:
    run = make_run(tmp_path, sample_steps=(2, 4))
    png(run / "output" / "sample" / "another_run_000002_00_20261201101010.png")
    png(run / "output" / "sample" / "upscaled.png")
    found = collect_run_samples(run)
    assert [g.step for g in found.groups] == [2, 4]
    why = {Path(x.file).name: x.why for x in found.left_out}
    assert why["another_run_000002_00_20261201101010.png"].startswith("another run's sample (output name another_run")
    assert why["upscaled.png"] == "not named by sd-scripts: its name does not say a step"


def test_a_run_without_samples_is_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path, sample_steps=())
    with pytest.raises(ScoreError, match="no samples to score"):
        group_run_samples(run)


def test_a_runs_references_are_its_training_images_not_regularization(tmp_path: Path) -> None:
    import json

    run = make_run(tmp_path, sample_steps=(2,))
    train = tmp_path / "dataset" / "img" / "10_ohwx man"
    reg = tmp_path / "dataset" / "reg" / "1_man"
    png(train / "0001.png")
    png(train / "0002.jpg")
    (train / "0001.txt").write_text("ohwx man", encoding="utf-8")
    png(reg / "r.png")
    doc = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    doc["dataset"]["subsets"].append(
        {"dir": str(reg), "images": 1, "repeats": 1, "class_tokens": "man", "is_reg": True}
    )
    (run / "plan.json").write_text(json.dumps(doc), encoding="utf-8")
    photos, where = run_references(run)
    assert [p.name for p in photos] == ["0001.png", "0002.jpg"] and where == str(train)
    for p in list(train.iterdir()):
        p.unlink()
    train.rmdir()
    with pytest.raises(ScoreError, match="training images are gone"):
        run_references(run)
