"""sources.discover: recursion, extensions, hidden files, symlinks inside and outside, exclusions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kohya_wrap.prepare.sources import discover


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def codes(discovery) -> dict[str, str]:
    return {f.file: f.code for f in discovery.findings}


def test_recursive_case_insensitive_sorted_with_non_ascii_names(tmp_path: Path) -> None:
    src = tmp_path / "my photos"
    for name in (
        "b.JPG",
        "a.jpeg",
        "sub dir/c.PnG",
        "sub dir/deeper/d.webp",
        "e.Bmp",
        "f.TIFF",
        "g.tif",
        "Ünïcödé 写真.jpg",
    ):
        touch(src / name)
    found = discover(src)
    assert [f.rel for f in found.files] == [
        "a.jpeg",
        "b.JPG",
        "e.Bmp",
        "f.TIFF",
        "g.tif",
        "sub dir/c.PnG",
        "sub dir/deeper/d.webp",
        "Ünïcödé 写真.jpg",
    ]
    assert all(f.path.is_file() for f in found.files)
    assert found.findings == ()


def test_hidden_files_are_passed_over_and_others_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    touch(src / ".DS_Store")
    touch(src / "._a.jpg")
    touch(src / ".hidden" / "x.jpg")
    touch(src / "a.jpg")
    touch(src / "clip.mov")
    touch(src / "README")
    touch(src / "a.txt")
    found = discover(src)
    assert [f.rel for f in found.files] == ["a.jpg"]
    assert codes(found) == {
        "clip.mov": "skipped_unsupported",
        "README": "skipped_unsupported",
        "a.txt": "ignored_sidecar",
    }
    levels = {f.file: f.level for f in found.findings}
    assert levels["a.txt"] == "info" and levels["clip.mov"] == "warning"


def test_heic_without_pillow_heif_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kohya_wrap.prepare.sources as sources

    monkeypatch.setattr(sources, "heif_support", lambda: frozenset())
    touch(tmp_path / "src" / "IMG_1.HEIC")
    found = discover(tmp_path / "src")
    assert found.files == ()
    (finding,) = found.findings
    assert finding.code == "skipped_unsupported" and "pillow-heif" in finding.message
    assert "kohya-wrap[heic]" in finding.action


def test_symlinks_followed_only_inside_the_source_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    outside = touch(tmp_path / "elsewhere" / "secret.jpg")
    inside = touch(src / "real" / "a.jpg")
    (src / "link-in.jpg").symlink_to(inside)
    (src / "link-out.jpg").symlink_to(outside)
    (src / "dir-out").symlink_to(outside.parent, target_is_directory=True)
    (src / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (src / "real" / "loop").symlink_to(src, target_is_directory=True)
    found = discover(src)
    assert [f.rel for f in found.files] == ["link-in.jpg", "real/a.jpg"]
    assert codes(found) == {
        "broken.jpg": "skipped_broken_link",
        "dir-out": "skipped_link_outside",
        "link-out.jpg": "skipped_link_outside",
    }


def test_excluded_folder_is_not_entered(tmp_path: Path) -> None:
    src = tmp_path / "src"
    touch(src / "a.jpg")
    touch(src / "dataset" / "img" / "1_x y" / "0001.png")
    assert [f.rel for f in discover(src, exclude=src / "dataset").files] == ["a.jpg"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unlistable_folder_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    locked = src / "locked"
    touch(locked / "a.jpg")
    locked.chmod(0)
    try:
        found = discover(src)
    finally:
        locked.chmod(0o755)
    assert codes(found) == {"locked": "skipped_unreadable"}
