"""An untrusted preset cannot reach outside: file-name values are plain names, `extends` stays in the
preset's folder, absurd values are refused with their range, and `presets validate` runs plan's checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kohya_wrap.cli import cli
from kohya_wrap.errors import ModelError, PresetError
from kohya_wrap.models import check_base_model
from kohya_wrap.preset import load_preset


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


def validate(path: Path):
    return CliRunner().invoke(cli, ["presets", "validate", str(path)])


@pytest.mark.parametrize("key", ["output_name", "log_prefix"])
@pytest.mark.parametrize("value", ["/abs/dir/ohwx", "../../x", "a/b", "..", ".", "", "x\\y", "a\x00b", ".hidden"])
def test_a_file_name_value_must_be_a_plain_name(tmp_path, key, value):
    value_toml = value.replace("\\", "\\\\").replace("\x00", "\\u0000")
    path = write(tmp_path, "evil.toml", f'schema = 1\n[saving]\n{key} = "{value_toml}"\n')
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert key in e.value.message and "plain name" in e.value.message
    result = validate(path)
    assert result.exit_code == 1 and "plain name" in result.output


def test_a_file_name_value_from_the_command_line_is_a_plain_name_too(tmp_path):
    with pytest.raises(PresetError, match="plain name"):
        load_preset("smoke", ["output_name=../elsewhere/x"])
    assert load_preset("smoke", ["output_name=ohwx-v2.1"]).value("output_name") == "ohwx-v2.1"


@pytest.mark.parametrize("target", ["/abs/evil", "../outside/evil", "/etc/passwd", "sub/evil", "../outside/evil.toml"])
def test_extends_never_leaves_the_presets_folder(tmp_path, target):
    write(tmp_path / "outside", "evil", "schema = 1\n")
    write(tmp_path / "outside", "evil.toml", "schema = 1\n")
    write(tmp_path / "presets" / "sub", "evil", "schema = 1\n")
    path = write(tmp_path / "presets", "mine.toml", f'schema = 1\nextends = "{target}"\n')
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert "extends" in e.value.message and "same folder" in e.value.message
    assert "line" not in e.value.message  # /etc/passwd is never read, so no parse position of it is shown


def test_extends_reaches_a_sibling_and_a_shipped_preset(tmp_path):
    write(tmp_path, "root.toml", 'schema = 1\nextends = "smoke"\n[network]\nnetwork_dim = 8\n')
    child = write(tmp_path, "child.toml", 'schema = 1\nextends = "root.toml"\n')
    preset = load_preset(child)
    assert preset.value("network_dim") == 8 and [f.stem for f in preset.files][:3] == ["child", "root", "smoke"]


@pytest.mark.parametrize(
    "line, key",
    [
        ("network_dim = 9223372036854775807", "network_dim"),
        ('resolution = "99999999"', "resolution"),
        ('resolution = "512,99999999"', "resolution"),
        ("max_data_loader_n_workers = 1000000000", "max_data_loader_n_workers"),
    ],
)
def test_absurd_values_are_refused_with_their_range(tmp_path, line, key):
    path = write(tmp_path, "big.toml", f"schema = 1\n[t]\n{line}\n")
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert key in e.value.message and ("range" in e.value.message or "at most" in e.value.message)


@pytest.mark.parametrize(
    "prompt",
    ["photo of {subject} --n ugly", "#comment", "  ", "two\nlines", "photo of {nobody}"],
)
def test_validate_refuses_the_sample_prompts_plan_refuses(tmp_path, prompt):
    escaped = prompt.replace("\n", "\\n")
    path = write(tmp_path, "p.toml", f'schema = 1\nextends = "smoke"\n[kohya_wrap]\nprompts = ["{escaped}"]\n')
    with pytest.raises(PresetError, match="prompts"):
        load_preset(path)
    assert validate(path).exit_code == 1


def test_validate_refuses_a_negative_prompt_plan_refuses(tmp_path):
    path = write(tmp_path, "p.toml", 'schema = 1\nextends = "smoke"\n[kohya_wrap]\nnegative_prompt = "bad --d 1"\n')
    with pytest.raises(PresetError, match="negative_prompt"):
        load_preset(path)


def test_a_toml_nesting_bomb_is_a_preset_error(tmp_path):
    path = tmp_path / "bomb.toml"
    path.write_text("schema = 1\n[t]\nnetwork_args = " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(PresetError, match="nest"):
        load_preset(path)
    result = validate(path)
    assert result.exit_code == 1 and "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_as_base_model_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="not a regular file"):
        check_base_model(str(fifo))


def test_a_preset_or_sweep_file_that_is_not_utf8_says_so(tmp_path):
    from kohya_wrap.errors import KohyaWrapError
    from kohya_wrap.sweep.spec import load_file

    path = tmp_path / "latin1.toml"
    path.write_bytes('schema = 1\ndescription = "café"\n'.encode("latin-1"))
    result = validate(path)
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "not UTF-8 text (byte 29)" in said and "save it as UTF-8" in said
    with pytest.raises(KohyaWrapError, match="not UTF-8 text"):
        load_file(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_or_folder_as_preset_is_named_as_such_not_missing(tmp_path):
    fifo = tmp_path / "shared.toml"
    os.mkfifo(fifo)
    result = validate(fifo)
    assert result.exit_code == 1 and "is not a regular file" in result.output and "does not exist" not in result.output
    (tmp_path / "folder.toml").mkdir()
    child = write(tmp_path, "child.toml", 'schema = 1\nextends = "folder.toml"\n')
    with pytest.raises(PresetError, match="folder.toml is not a regular file"):
        load_preset(child)


@pytest.mark.parametrize(
    "override", ["network_args=" + "[" * 50000 + "]" * 50000, "prompts=" + "[" * 50000 + "]" * 50000]
)
def test_a_nesting_bomb_on_the_command_line_is_a_preset_error(override):
    with pytest.raises(PresetError):
        load_preset("smoke", [override])


def test_a_sweep_file_nesting_bomb_is_a_sweep_error(tmp_path):
    from kohya_wrap.sweep.spec import SweepError, load_file

    path = tmp_path / "sweep.toml"
    path.write_text("schema = 1\ngrid = " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(SweepError, match="nest"):
        load_file(path)


@pytest.mark.parametrize(
    "table, line",
    [
        ("kohya_wrap", "target_steps = 9223372036854775807"),
        ("kohya_wrap", "size = 99999999"),
        ("kohya_wrap", "sample_steps = 1000000000"),
        ("kohya_wrap", "max_repeats = 9223372036854775807"),
        ("t", "max_bucket_reso = 9223372036854775807"),
        ("t", "save_every_n_steps = 9223372036854775807"),
        ("t", "vae_batch_size = -9223372036854775807"),
    ],
)
def test_absurd_integers_anywhere_are_refused_with_their_range(tmp_path, table, line):
    path = write(tmp_path, "big.toml", f'schema = 1\nextends = "smoke"\n[{table}]\n{line}\n')
    with pytest.raises(PresetError, match="out of range|at least"):
        load_preset(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_or_folder_as_sweep_file_is_named_without_reading_it(tmp_path):
    fifo = tmp_path / "sweep.toml"
    os.mkfifo(fifo)  # reading it would block: nothing writes to it
    (tmp_path / "folder.toml").mkdir()
    for given in (fifo, tmp_path / "folder.toml"):
        result = CliRunner().invoke(cli, ["sweep", str(given), "-o", str(tmp_path / "out")])
        assert result.exit_code == 1, result.output
        assert f"{given}: not a regular file: a sweep file is a TOML file" in result.output
