"""The sweep's spec: --grid parsing, sweep files validated like untrusted presets, variants and their names."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.sweep.spec import from_command_line, from_file, parse_grid, split_values
from kohya_wrap.sweep.variants import MAX_NAME, expand


def spec_of(tmp_path: Path, *grid: str, datasets: tuple[str, ...] = ("ohwx",), overrides: tuple[str, ...] = ()):
    dirs = [tmp_path / "data" / d for d in datasets]
    return from_command_line(dirs, preset="smoke", base_model="m.safetensors", grid=grid, overrides=overrides)


def test_grid_values_are_typed_like_set():
    (dim, lr, prompts) = parse_grid(["network_dim=8,16", "learning_rate=1e-4,5e-5", 'prompts=["a, b"],["c"]'])
    assert (dim.key, dim.values, dim.texts) == ("network_dim", (8, 16), ("8", "16"))
    assert lr.values == (1e-4, 5e-5)
    assert prompts.values == (["a, b"], ["c"])  # commas inside a TOML array do not split
    assert split_values("1, 2 ,3") == ["1", "2", "3"]


@pytest.mark.parametrize(
    "option, message",
    [
        ("network_dimm=8,16", "did you mean 'network_dim'"),
        ("network_dim=8,x", "value 2 ('x')"),
        ("network_dim=8,,16", "value 2 is empty"),
        ("network_dim", "expected KEY=V1,V2"),
        ("network_dim=8,8", "given twice"),
        ("lr_scheduler=constant,cosin", "did you mean 'cosine'"),
        # Kohya GUI names get sd-scripts' own name, as --set gives it
        ("dim=4,8", "network_dim"),
        ("epoch=1,2", "max_train_epochs"),
    ],
)
def test_bad_grid_options_name_the_option_and_value(option, message):
    with pytest.raises(KohyaWrapError) as e:
        parse_grid([option])
    assert e.value.message.startswith("--grid ") and option in e.value.message and message in str(e.value)


def test_a_key_fixed_and_swept_is_refused(tmp_path):
    with pytest.raises(KohyaWrapError, match="also fixed"):
        spec_of(tmp_path, "network_dim=8,16", overrides=("network_dim=4",))


def test_variants_are_the_cartesian_product_named_from_dataset_and_values(tmp_path):
    spec = spec_of(tmp_path, "network_dim=8,16", "learning_rate=1e-4,5e-5", datasets=("ohwx", "sks"))
    variants = expand(spec, tmp_path / "sweep")
    assert [v.name for v in variants] == [
        "ohwx__network_dim-8__learning_rate-0.0001",
        "ohwx__network_dim-8__learning_rate-5e-05",
        "ohwx__network_dim-16__learning_rate-0.0001",
        "ohwx__network_dim-16__learning_rate-5e-05",
        "sks__network_dim-8__learning_rate-0.0001",
        "sks__network_dim-8__learning_rate-5e-05",
        "sks__network_dim-16__learning_rate-0.0001",
        "sks__network_dim-16__learning_rate-5e-05",
    ]
    first = variants[0]
    assert first.values == {"network_dim": 8, "learning_rate": 1e-4}
    assert first.overrides == ("network_dim=8", "learning_rate=1e-4")  # as the user wrote them, like --set
    assert first.run_dir == (tmp_path / "sweep").resolve() / "runs" / first.name
    assert first.dataset_dir == (tmp_path / "data" / "ohwx").resolve()
    assert expand(spec, tmp_path / "sweep") == variants  # a rerun finds the same folders


def test_names_are_filesystem_safe_unique_and_bounded(tmp_path):
    (tmp_path / "a").mkdir()
    spec = from_command_line(
        [tmp_path / "a" / "ohwx", tmp_path / "b" / "ohwx"],
        preset="smoke",
        base_model="m",
        grid=["optimizer_type=AdamW,AdamW8bit", 'prompts=["a/b"],["a_b"]'],
    )
    names = [v.name for v in expand(spec, tmp_path)]
    assert len(set(names)) == len(names) == 8
    assert all("/" not in n and " " not in n and not n.startswith(".") for n in names)
    long = spec_of(tmp_path, 'prompts=["' + "x" * 300 + '"],["' + "y" * 300 + '"]')
    long_names = [v.name for v in expand(long, tmp_path)]
    assert all(len(n) <= MAX_NAME for n in long_names) and len(set(long_names)) == 2
    no_grid = [v.name for v in expand(spec_of(tmp_path), tmp_path)]
    assert no_grid == ["ohwx"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


GOOD = """schema = 1
description = "dim x lr"
datasets = ["data/ohwx"]
preset = "smoke"
base_model = "model.safetensors"
[set]
save_every_n_steps = 2
[grid]
network_dim = [4, 8]
learning_rate = [1e-4, 5e-5]
target_steps = [4, 3]
"""


def test_a_sweep_file(tmp_path):
    spec = from_file(write(tmp_path, GOOD))
    assert spec.datasets == ((tmp_path / "data" / "ohwx").resolve(),)  # relative to the file
    assert spec.preset == "smoke" and spec.base_model == "model.safetensors"
    assert spec.overrides == ("save_every_n_steps=2",)
    assert [(a.key, a.values) for a in spec.grid] == [
        ("network_dim", (4, 8)),
        ("learning_rate", (1e-4, 5e-5)),
        ("target_steps", (4, 3)),
    ]
    assert len(expand(spec, tmp_path / "s")) == 8
    # the command line adds datasets, fixes or sweeps more
    more = from_file(
        write(tmp_path, GOOD),
        datasets=[tmp_path / "other"],
        grid=["network_alpha=1,2"],
        overrides=["save_every_n_steps=4"],
    )
    assert more.datasets == ((tmp_path / "other").resolve(),) and more.overrides == ("save_every_n_steps=4",)
    assert more.grid[-1].key == "network_alpha"


@pytest.mark.parametrize(
    "text, where",
    [
        ("schema = 1\npreset = 'smoke'\nbase_model = 'm'\ndatasets = ['d']\ngrids = {}\n", "sweep.toml: grids"),
        ("schema = 2\n", "sweep.toml: schema"),
        (GOOD.replace("network_dim = [4, 8]", 'network_dim = [4, "x"]'), "[grid] network_dim value 2 ('x')"),
        (GOOD.replace("network_dim = [4, 8]", "network_dim = 4"), "[grid] network_dim: must be a non-empty list"),
        (
            GOOD.replace("network_dim = [4, 8]", 'network_module = ["networks.lora", "evil.module"]'),
            "[grid] network_module value 2 ('evil.module'): network_module 'evil.module' is not allowed in a preset",
        ),
        (
            GOOD.replace("save_every_n_steps = 2", 'wandb_api_key = "k"'),
            "[set] wandb_api_key: wandb_api_key is a secret",
        ),
        (GOOD.replace("save_every_n_steps = 2", "max_train_steps = 10"), "[set] max_train_steps"),
        (GOOD.replace("save_every_n_steps = 2", 'dataset_class = "x.Y"'), "[set] dataset_class"),
        (GOOD.replace("save_every_n_steps = 2", 'output_dir = "/tmp/x"'), "[set] output_dir"),
        (GOOD.replace("save_every_n_steps = 2", "network_dim = 4"), "network_dim is swept twice"),
        (GOOD.replace("target_steps = [4, 3]", "target_stepz = [4, 3]"), "[grid] target_stepz"),
        ("schema = 1\n[grid\n", "not valid TOML"),
    ],
)
def test_sweep_file_errors_point_at_the_key(tmp_path, text, where):
    with pytest.raises(KohyaWrapError) as e:
        from_file(write(tmp_path, text))
    assert where.replace("swept twice", "") in str(e.value) or where in str(e.value), str(e.value)
    assert "Traceback" not in str(e.value)


def test_gpu_slots_follow_cuda_visible_devices(monkeypatch):
    from kohya_wrap.sweep.local import gpu_slots

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_slots() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots() == [None]  # no GPU: one variant at a time
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_slots() == [None]
