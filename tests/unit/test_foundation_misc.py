import os

import pytest

from kohya_wrap import fsutil
from kohya_wrap.sdscripts import layout


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "config.toml"
    fsutil.atomic_write_text(target, "old\n")

    def fail(*_a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        fsutil.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("10_sks dog", (10, "sks dog")),
        ("5_sks_cat", (5, "sks_cat")),
        ("007_x", (7, "x")),
        ("3_", (3, "")),
    ],
)
def test_subset_folder_names_parse_as_sd_scripts_reads_them(name, expected):
    parsed = layout.parse_subset_dir_name(name)
    assert (parsed.repeats, parsed.class_tokens) == expected


@pytest.mark.parametrize("name", ["dog", "10 sks", ".hidden", "-1_x"])
def test_folders_sd_scripts_skips(name):
    assert layout.parse_subset_dir_name(name) is None


def test_subset_dir_name_round_trips():
    assert layout.subset_dir_name(10, "ohwx man") == "10_ohwx man"
    with pytest.raises(ValueError):
        layout.subset_dir_name(0, "x")
