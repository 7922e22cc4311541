"""Nonsense values are refused at load time, naming the key, the value and the allowed range (issue 12)."""

import json

import pytest
from click.testing import CliRunner

from kohya_wrap.cli import cli
from kohya_wrap.codec import to_builtins
from kohya_wrap.errors import PresetError
from kohya_wrap.preset import load_preset, preset_view
from kohya_wrap.sdscripts import arguments
from kohya_wrap.sdscripts.ranges import RANGES, UNRANGED


def test_every_numeric_argument_has_a_range_or_a_reason_not_to():
    numeric = {k for k, a in arguments.table().items() if a.kind in ("int", "float", "int_or_float")}
    assert set(RANGES) <= numeric
    assert numeric - set(RANGES) == set(UNRANGED)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train_batch_size=0", "train_batch_size = 0 is out of range: it must be >= 1"),
        ("train_batch_size=-1", "train_batch_size = -1 is out of range: it must be >= 1"),
        ("gradient_accumulation_steps=0", "gradient_accumulation_steps = 0 is out of range: it must be >= 1"),
        ("max_train_steps=0", "max_train_steps = 0 is out of range: it must be >= 1"),
        ("max_train_epochs=0", "max_train_epochs = 0 is out of range"),
        ("learning_rate=0", "learning_rate = 0.0 is out of range: it must be > 0"),
        ("learning_rate=nan", "learning_rate = nan: must be a finite number"),
        ("network_dim=0", "network_dim = 0 is out of range: it must be from 1 to 1280"),
        ("network_alpha=-1", "network_alpha = -1.0 is out of range: it must be >= 0"),
        ("save_every_n_steps=0", "save_every_n_steps = 0 is out of range: it must be >= 1"),
        ("resolution=0", "resolution must be 'N' or 'W,H' with positive integers"),
        ("caption_dropout_rate=1.5", "caption_dropout_rate = 1.5 is out of range: it must be from 0 to 1"),
        ("network_dropout=1", "network_dropout = 1.0 is out of range: it must be from 0 below 1"),
        ("clip_skip=13", "clip_skip = 13 is out of range: it must be from 1 to 12"),
        ("lr_warmup_steps=-5", "lr_warmup_steps = -5.0 is out of range: it must be >= 0"),
        ("text_encoder_lr=[1e-4, -1]", "text_encoder_lr = -1.0 is out of range"),
        ("seed=-1", "seed = -1 is out of range"),
    ],
)
def test_out_of_range_overrides_are_refused_naming_key_value_and_range(override, words):
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", [override])
    assert words in e.value.message


def test_out_of_range_in_a_preset_file_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('schema = 1\nextends = "likeness-sd15"\n[training]\ntrain_batch_size = 0\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert f"{path}: [training] train_batch_size: train_batch_size = 0 is out of range" in e.value.message


def test_a_zero_batch_size_exits_1_not_a_zero_division():
    result = CliRunner().invoke(cli, ["presets", "show", "likeness-sd15", "--set", "train_batch_size=0"])
    assert result.exit_code == 1
    assert "ZeroDivisionError" not in result.output and "train_batch_size = 0" in result.output


def test_min_timestep_must_be_below_max_timestep():
    with pytest.raises(PresetError, match="min_timestep 500 must be below max_timestep 100"):
        load_preset("likeness-sd15", ["min_timestep=500", "max_timestep=100"])


@pytest.mark.parametrize(
    "name",
    ["AdamW", "adamw8bit", "PRODIGY", "Lion", "DAdaptAdam", "AdamWScheduleFree", "Adafactor", "SGD", "RAdam", ""],
)
def test_optimizer_names_sd_scripts_resolves_are_accepted(name):
    assert arguments.convert("optimizer_type", name) == name


@pytest.mark.parametrize("name, suggestion", [("adamw9bit", "'AdamW8bit'"), ("sgd", None), ("prodigi", "'Prodigy'")])
def test_unknown_optimizer_names_are_refused_with_the_allowed_names(name, suggestion):
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", [f"optimizer_type={name}"])
    assert f"optimizer_type {name!r} is not an optimizer sd-scripts knows" in e.value.message
    assert "AdamW8bit" in e.value.hint and "Prodigy" in e.value.hint
    if suggestion:
        assert f"did you mean {suggestion}" in e.value.hint


def test_scheduler_names_are_case_sensitive_as_in_sd_scripts():
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", ["lr_scheduler=Cosine"])
    assert "lr_scheduler 'Cosine'" in e.value.message and "cosine_with_restarts" in e.value.hint
    with pytest.raises(PresetError, match="adafactor:<initial lr>"):
        load_preset("likeness-sd15", ["lr_scheduler=adafactor:x", "optimizer_type=Adafactor", "lr_warmup_steps=0"])


def test_an_optimizer_whose_package_is_missing_is_refused_by_the_plan_check(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    values = {"optimizer_type": "AdamW8bit"}
    problems = [p for p in arguments.cross_checks(values) if p.severity == "error"]
    assert problems and problems[0].keys == ("optimizer_type",)
    assert "'bitsandbytes'" in problems[0].message and "pip install bitsandbytes" in problems[0].hint
    assert not [p for p in arguments.cross_checks(values, packages=False) if "bitsandbytes" in p.message]
    # a preset naming it still loads (presets validate does not depend on this machine's packages)
    assert load_preset("likeness-sd15", ["optimizer_type=AdamW8bit"]).value("optimizer_type") == "AdamW8bit"


def test_each_optimizer_family_names_its_package():
    need = {
        name: arguments.needed_packages({"optimizer_type": name})
        for name in ("AdamW8bit", "PagedAdamW", "Lion", "Prodigy", "DAdaptLion", "SGDScheduleFree", "AdamW", "SGD")
    }
    assert [p[1] for p in need["AdamW8bit"]] == ["bitsandbytes"] == [p[1] for p in need["PagedAdamW"]]
    assert [p[1] for p in need["Lion"]] == ["lion-pytorch"]
    assert [p[1] for p in need["Prodigy"]] == ["prodigyopt"]
    assert [p[1] for p in need["DAdaptLion"]] == ["dadaptation"]
    assert [p[1] for p in need["SGDScheduleFree"]] == ["schedulefree"]
    assert need["AdamW"] == need["SGD"] == []


def test_the_shipped_presets_are_in_range():
    for name in ("base", "likeness-sd15", "likeness-sd15-768", "smoke"):
        assert json.dumps(to_builtins(preset_view(load_preset(name))), allow_nan=False)


def test_zero_that_sd_scripts_reads_as_off_is_kept():
    """min_snr_gamma and scale_weight_norms of 0 (the Kohya GUI's defaults) are off in train_network.py, which
    applies them only when true: kept as given, not refused or dropped; below 0 is still refused."""
    p = load_preset("likeness-sd15", ["min_snr_gamma=0", "scale_weight_norms=0.0", "max_grad_norm=0"])
    assert [p.values[k].value for k in ("min_snr_gamma", "scale_weight_norms", "max_grad_norm")] == [0.0, 0.0, 0.0]
    with pytest.raises(PresetError, match="min_snr_gamma = -1.0 is out of range: it must be >= 0"):
        load_preset("likeness-sd15", ["min_snr_gamma=-1"])


def test_network_alpha_of_zero_is_kept_as_sd_scripts_reads_it():
    """networks/lora.py takes alpha 0 as alpha = dim (a scale of 1): kept and written as given, not refused."""
    p = load_preset("likeness-sd15", ["network_alpha=0"])
    assert p.values["network_alpha"].value == 0.0
