import subprocess
from pathlib import Path

import pytest

from kohya_wrap.errors import TrainerNotFound
from kohya_wrap.sdscripts import PINNED_COMMIT, checkout


def make_checkout(path: Path, git: bool = False) -> Path:
    path.mkdir(parents=True)
    (path / "train_network.py").write_text("# placeholder\n")
    if git:
        subprocess.run(["git", "init", "-q", str(path)], check=True)
        subprocess.run(["git", "-C", str(path), "add", "."], check=True)
        subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True
        )
    return path


def test_explicit_path_wins_over_environment(tmp_path, monkeypatch):
    explicit = make_checkout(tmp_path / "a")
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(make_checkout(tmp_path / "b")))
    found = checkout.locate(explicit)
    assert found.path == explicit.resolve()
    assert found.source == "--sd-scripts"


def test_environment_wins_over_submodule(tmp_path, monkeypatch):
    env = make_checkout(tmp_path / "b")
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(env))
    found = checkout.locate()
    assert (found.path, found.source) == (env.resolve(), "$KOHYA_WRAP_SD_SCRIPTS")


def test_submodule_is_the_last_resort(tmp_path, monkeypatch):
    monkeypatch.setattr(checkout, "source_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    sub = make_checkout(tmp_path / "third_party" / "sd-scripts")
    found = checkout.locate()
    assert (found.path, found.source) == (sub.resolve(), "submodule")


def test_empty_submodule_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(checkout, "source_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "third_party" / "sd-scripts").mkdir(parents=True)
    with pytest.raises(TrainerNotFound) as e:
        checkout.locate()
    assert "is empty" in e.value.message
    assert "git submodule update --init" in e.value.hint
    assert "--sd-scripts PATH" in e.value.hint


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(TrainerNotFound, match="does not exist"):
        checkout.locate(tmp_path / "nowhere")


def test_commit_is_read_from_git_and_compared_with_the_pin(tmp_path):
    found = checkout.locate(make_checkout(tmp_path / "git", git=True))
    assert found.commit is not None and len(found.commit) == 40
    assert found.matches_pin is (found.commit == PINNED_COMMIT)


def test_a_folder_inside_another_work_tree_has_no_commit_of_its_own(tmp_path):
    outer = make_checkout(tmp_path / "outer", git=True)
    inner = make_checkout(outer / "inner")
    assert checkout.locate(inner).commit is None
