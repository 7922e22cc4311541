"""Face detection in the core install; TensorBoard in [train] and logging into the run directory (issue 12)."""

from pathlib import Path

import tomllib

from kohya_wrap.rundir import TENSORBOARD_DIR
from kohya_wrap.sdscripts import arguments
from kohya_wrap.sdscripts.values import TrainerPaths, run_values

ROOT = Path(__file__).parents[2]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_face_detection_is_a_core_dependency_and_faces_stays_an_alias():
    project = _project()
    assert any(d.startswith("opencv-python-headless") for d in project["dependencies"])
    assert project["optional-dependencies"]["faces"] == []  # `pip install -e '.[train,faces]'` keeps working


def test_tensorboard_ships_in_the_train_extra():
    assert "tensorboard" in [d.split("=")[0].split(">")[0] for d in _project()["optional-dependencies"]["train"]]


def _values(tmp_path: Path, chosen=()) -> dict:
    return run_values(
        TrainerPaths(
            tmp_path / "out", tmp_path / "dataset.toml", tmp_path / "p.txt", tmp_path / "run" / TENSORBOARD_DIR
        ),
        model=tmp_path / "m.safetensors",
        tokenizer_cache_dir=tmp_path / "tok",
        output_name="ohwx",
        with_prompts=False,
        max_train_steps=10,
        chosen=chosen,
    )


def test_runs_log_to_tensorboard_in_the_run_directory(tmp_path):
    values = _values(tmp_path)
    assert values["log_with"] == "tensorboard"
    assert values["logging_dir"] == str(tmp_path / "run" / TENSORBOARD_DIR)
    for key in ("log_with", "logging_dir"):
        assert arguments.convert(key, values[key]) == values[key]
    assert not [p for p in arguments.cross_checks(values, packages=False) if p.severity == "error"]


def test_the_users_own_tracker_choice_is_kept(tmp_path):
    values = _values(tmp_path, chosen={"log_with": "wandb", "logging_dir": "/elsewhere"})
    assert "log_with" not in values and "logging_dir" not in values


def test_without_a_run_dir_nothing_changes(tmp_path):
    values = run_values(
        TrainerPaths(tmp_path, tmp_path / "d.toml", tmp_path / "p.txt", None),
        model=tmp_path / "m",
        tokenizer_cache_dir=tmp_path,
        output_name=None,
        with_prompts=False,
        max_train_steps=None,
    )
    assert "log_with" not in values and "logging_dir" not in values
