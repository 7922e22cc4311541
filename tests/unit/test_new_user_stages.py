"""What a new user hit (issue 19), at the level of the stages: a Kohya GUI folder's repeats, ..."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from sd15_stub import write_sd15_stub

from kohya_wrap.plan import PlanRequest, make_plan


def kohya_gui_folder(root: Path, repeats: int = 10, images: int = 5) -> Path:
    """A Kohya GUI project: img/10_ohwx woman/ with images and captions, and no prepare.json."""
    sub = root / "img" / f"{repeats}_ohwx woman"
    sub.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (512, 512), (i * 40, 90, 140)).save(sub / f"{i:04d}.png")
        (sub / f"{i:04d}.txt").write_text("ohwx woman\n")
    return root


def test_a_kohya_gui_folders_repeats_are_replaced_loudly_and_kept_on_request(tmp_path: Path) -> None:
    project = kohya_gui_folder(tmp_path / "project")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    plan = make_plan(PlanRequest(project, preset="likeness-sd15", base_model=str(model), run_dir=tmp_path / "run"))
    chosen = plan.subsets[0].repeats
    assert chosen != 10
    said = [w for w in plan.warnings if w.startswith("10_ohwx woman:")]
    assert len(said) == 1
    assert f"the folder name's 10 repeats become {chosen}" in said[0]
    assert "no prepare.json" in said[0] and "--set keep_repeats=true" in said[0]

    kept = make_plan(
        PlanRequest(
            project,
            preset="likeness-sd15",
            base_model=str(model),
            run_dir=tmp_path / "kept",
            overrides=["keep_repeats=true"],
        )
    )
    assert kept.subsets[0].repeats == 10
    assert not [w for w in kept.warnings if "repeats become" in w]


def test_a_prepared_dataset_whose_repeats_plan_chose_gets_no_such_warning(tmp_path: Path) -> None:
    project = kohya_gui_folder(tmp_path / "project", repeats=1)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    plan = make_plan(PlanRequest(project, preset="likeness-sd15", base_model=str(model), run_dir=tmp_path / "run"))
    assert plan.subsets[0].repeats != 1 and not [w for w in plan.warnings if "repeats become" in w]


def test_prepare_of_a_kohya_gui_folder_says_its_number_is_not_the_repeats(tmp_path: Path) -> None:
    from kohya_wrap.prepare import PrepareOptions, prepare_dataset

    photos = kohya_gui_folder(tmp_path / "project") / "img" / "10_ohwx woman"
    options = PrepareOptions(photos, tmp_path / "data", "ohwx", "woman", crop="center", jobs=1)
    result = prepare_dataset(options)
    [finding] = [f for f in result.findings if f.code == "kohya_folder_name"]
    assert finding.level == "warning" and "10 repeats" in finding.message and "--repeats 10" in finding.action
    again = prepare_dataset(PrepareOptions(photos, tmp_path / "data10", "ohwx", "woman", crop="center", repeats=10))
    assert not [f for f in again.findings if f.code == "kohya_folder_name"]
    assert again.subsets[0].repeats == 10


def test_plan_of_a_photo_folder_hints_a_prepare_command_that_runs(tmp_path: Path) -> None:
    import shlex

    import pytest

    from kohya_wrap.errors import DatasetError

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "a.jpg")
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    for folder in (photos, tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(DatasetError) as e:
            make_plan(PlanRequest(folder, preset="smoke", base_model=str(model), run_dir=tmp_path / "run"))
        hint = str(e.value.hint)
        command = hint[hint.index("kohya-wrap prepare") :].split(" first")[0].split(" (TOKEN")[0]
        argv = shlex.split(command)
        # every option prepare requires is there
        assert "-o" in argv and "--token" in argv and "--class" in argv, hint


def test_a_value_out_of_range_is_explained_in_a_sentence() -> None:
    import pytest

    from kohya_wrap.errors import KohyaWrapError
    from kohya_wrap.preset import load_preset

    with pytest.raises(KohyaWrapError) as e:
        load_preset("smoke", ["train_batch_size=0"])
    assert e.value.hint == (
        "train_batch_size: the images of one batch, at least one; sd-scripts divides by it or takes a modulo by it; "
        "give a value >= 1"
    )
    with pytest.raises(KohyaWrapError) as e:
        load_preset("smoke", ["save_every_n_steps=0"])
    assert str(e.value.hint).startswith("save_every_n_steps: sd-scripts divides by it")


def test_one_repeat_is_said_in_the_singular(tmp_path: Path, capsys) -> None:
    from kohya_wrap.cli.plan_cmd import render_plan

    project = kohya_gui_folder(tmp_path / "project", repeats=1, images=4)
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    # 4 images x 1 repeat, batch 1, 4 steps: the smoke preset's 4 steps in one epoch
    plan = make_plan(PlanRequest(project, preset="smoke", base_model=str(model), run_dir=tmp_path / "run"))
    assert plan.subsets[0].repeats == 1
    assert plan.steps.arithmetic.startswith("4 images x 1 repeat / batch 1")
    render_plan(plan)
    assert "4 images x 1 repeat\n" in capsys.readouterr().out
