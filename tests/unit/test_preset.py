from importlib import resources
from pathlib import Path

import pytest

from kohya_wrap import preset as preset_mod
from kohya_wrap.errors import PresetError
from kohya_wrap.preset import CURRENT_SCHEMA, OUR_KEYS, diff, export_text, load_preset, shipped_names
from kohya_wrap.sdscripts import arguments

SHIPPED = ["base", "likeness-sd15", "likeness-sd15-768", "smoke"]


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_presets_ship_as_package_data():
    names = sorted(p.name for p in resources.files("kohya_wrap.presets").iterdir() if p.name.endswith(".toml"))
    assert names == sorted(f"{n}.toml" for n in SHIPPED)
    assert shipped_names() == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_validates(name):
    p = load_preset(name)
    assert p.name == name and p.schema == CURRENT_SCHEMA
    assert len(p.sha256) == 64
    for key, setting in p.values.items():
        assert arguments.convert(key, setting.value) == setting.value
        arguments.check_trust(key, setting.value, trusted=False)
    assert [x for x in arguments.cross_checks({k: s.value for k, s in p.values.items()}) if x.severity == "error"] == []


def test_shipped_values_follow_the_issue():
    like = load_preset("likeness-sd15")
    v = {k: s.value for k, s in like.values.items()}
    assert v["network_module"] == "networks.lora" and v["optimizer_type"] == "AdamW"
    assert v["unet_lr"] == 1e-4 and v["text_encoder_lr"] == [5e-5]
    assert v["network_alpha"] == v["network_dim"] / 2 and 16 <= v["network_dim"] <= 32
    assert v["lr_scheduler"] == "constant_with_warmup" and v["lr_warmup_steps"] > 0
    assert v["train_batch_size"] == 2 and v["sdpa"] and v["cache_latents_to_disk"] and v["flip_aug"] is False
    assert v["save_every_n_steps"] == 250 == v["sample_every_n_steps"]
    assert (like.value("target_steps"), like.value("min_steps"), like.value("max_steps")) == (3000, 2000, 5000)
    assert like.value("auto_mixed_precision") is True
    assert load_preset("likeness-sd15-768").value("resolution") == "768"
    smoke = load_preset("smoke")
    assert (
        smoke.value("resolution") == "64" and smoke.value("network_dim") == 4 and smoke.value("mixed_precision") == "no"
    )
    assert 2 <= smoke.value("target_steps") <= 4 and smoke.value("save_every_n_steps") == 2
    assert smoke.value("max_data_loader_n_workers") == 0 and smoke.value("cache_latents") is True


def test_sources_name_the_preset_in_the_chain_that_set_each_value():
    p = load_preset("smoke")
    assert [f.stem for f in p.files] == ["smoke", "likeness-sd15", "base"]
    assert p.values["network_module"].source == "preset:base"
    assert p.values["optimizer_type"].source == "preset:likeness-sd15"
    assert p.values["network_dim"].source == "preset:smoke"
    assert p.values["network_dim"].table == "network"
    assert p.ours["sample_seed"].source == "default"


def test_our_keys_do_not_collide_with_sd_scripts_names():
    assert not set(OUR_KEYS) & set(arguments.table())


def test_unknown_key_names_file_table_and_suggests(tmp_path):
    path = write(tmp_path, "p.toml", "schema = 1\n[network]\nnetwork_dimm = 8\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert e.value.message == f"{path}: [network] network_dimm: unknown sd-scripts argument 'network_dimm'"
    assert "'network_dim'" in e.value.hint


def test_unknown_kohya_wrap_key(tmp_path):
    path = write(tmp_path, "p.toml", "schema = 1\n[kohya_wrap]\ntarget_step = 8\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert "[kohya_wrap] target_step: unknown [kohya_wrap] key" in e.value.message
    assert "'target_steps'" in e.value.hint


@pytest.mark.parametrize(
    "line, words",
    [
        ('network_dim = "32"', "network_dim must be an integer, got '32'"),
        ('learning_rate = "1e-4"', "learning_rate must be a number"),
        ('mixed_precision = "fp32"', "mixed_precision = 'fp32' is not one of 'no', 'fp16', 'bf16'"),
        ('sample_sampler = "euler_b"', "sample_sampler = 'euler_b' is not one of"),
        ("cache_latents = 1", "cache_latents must be true or false"),
        ('lr_scheduler = "constantt"', "is not a scheduler sd-scripts knows"),
    ],
)
def test_wrong_types_and_bad_choices(tmp_path, line, words):
    path = write(tmp_path, "p.toml", f"schema = 1\n[t]\n{line}\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert e.value.message.startswith(f"{path}: [t] ")
    assert words in e.value.message


FORBIDDEN_LINES = {key: f'{key} = "x"' for key in arguments.PRESET_FORBIDDEN}
FORBIDDEN_LINES.update(
    {
        "log_with": 'log_with = "wandb"',
        "save_state_to_huggingface": "save_state_to_huggingface = true",
        "resume_from_huggingface": "resume_from_huggingface = true",
        "async_upload": "async_upload = true",
        "log_config": "log_config = true",
    }
)


@pytest.mark.parametrize("key", sorted(FORBIDDEN_LINES))
def test_each_forbidden_key_is_rejected_naming_it(tmp_path, key):
    path = write(tmp_path, "p.toml", f"schema = 1\n[x]\n{FORBIDDEN_LINES[key]}\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert e.value.message.startswith(f"{path}: [x] {key}: {key} is not allowed in a preset: ")


@pytest.mark.parametrize(
    "line, words",
    [
        ('network_module = "evil"', "network_module 'evil' is not allowed in a preset: sd-scripts imports and runs it"),
        ('optimizer_type = "evil.Opt"', "optimizer_type 'evil.Opt' is not allowed in a preset"),
        ('lr_scheduler_type = "evil.Sched"', "lr_scheduler_type 'evil.Sched' is not allowed in a preset"),
        ('huggingface_token = "hf_x"', "huggingface_token is a secret"),
        ('wandb_api_key = "k"', "wandb_api_key is a secret"),
        ('pretrained_model_name_or_path = "/m.safetensors"', "is set by kohya-wrap"),
        ('output_dir = "/tmp"', "is set by kohya-wrap"),
        ("max_train_steps = 10", "max_train_steps is planned from the dataset"),
    ],
)
def test_code_paths_and_secrets_are_rejected(tmp_path, line, words):
    path = write(tmp_path, "p.toml", f"schema = 1\n[x]\n{line}\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert words in e.value.message


def test_set_overrides_are_validated_and_may_carry_paths():
    p = load_preset(
        "likeness-sd15",
        [
            "network_dim=16",
            "kohya_wrap.target_steps=2500",
            "vae=/models/vae.safetensors",
            "caption_dropout_rate=0.0",
            "max_train_steps=1200",
        ],
    )
    assert p.values["network_dim"].value == 16 and p.values["network_dim"].source == "--set"
    assert p.values["vae"].value == "/models/vae.safetensors"
    assert p.values["caption_dropout_rate"].value == 0.0
    assert p.ours["target_steps"].value == 2500 and p.ours["target_steps"].source == "--set"
    assert p.sha256 == load_preset("likeness-sd15").sha256  # the preset's hash is of the chain alone


@pytest.mark.parametrize(
    "override, words",
    [
        ("network_dim=abc", "network_dim must be an integer"),
        ("mixed_precision=fp8", "is not one of"),
        ("netwrk_dim=4", "unknown sd-scripts argument"),
        ("network_dim", "expected key=value"),
        ("output_dir=/x", "is set by kohya-wrap"),
        ("huggingface_token=abc", "is a secret"),
        ("lr_scheduler=constant", "takes no warmup"),
    ],
)
def test_bad_set_overrides(override, words):
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", [override])
    assert words in e.value.message


def test_extends_chain_of_user_files(tmp_path):
    write(
        tmp_path,
        "mine.toml",
        'schema = 1\nextends = "likeness-sd15"\n[network]\nnetwork_dim = 24\nnetwork_alpha = 12.0\n',
    )
    child = write(tmp_path, "child.toml", 'schema = 1\nextends = "mine.toml"\n[kohya_wrap]\ntarget_steps = 2500\n')
    p = load_preset(str(child))
    assert [f.name for f in p.files] == ["child.toml", "mine.toml", "likeness-sd15.toml", "base.toml"]
    assert p.values["network_dim"].source == "preset:mine" and p.values["network_dim"].value == 24
    assert p.ours["target_steps"].source == "preset:child"


def test_extends_cycle_is_detected(tmp_path):
    write(tmp_path, "a.toml", 'schema = 1\nextends = "b.toml"\n')
    write(tmp_path, "b.toml", 'schema = 1\nextends = "a.toml"\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(tmp_path / "a.toml"))
    assert "`extends` forms a cycle: a.toml -> b.toml -> a.toml" in e.value.message


def test_extends_cannot_reach_outside_the_folder(tmp_path):
    path = write(tmp_path, "a.toml", 'schema = 1\nextends = "../elsewhere.toml"\n')
    with pytest.raises(PresetError, match="must be a file in the same folder"):
        load_preset(str(path))
    missing = write(tmp_path, "m.toml", 'schema = 1\nextends = "likeness-sd16"\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(missing))
    assert "no preset named 'likeness-sd16'" in e.value.message and "likeness-sd15" in e.value.hint


def test_newer_schema_asks_to_upgrade_kohya_wrap(tmp_path):
    path = write(tmp_path, "new.toml", f"schema = {CURRENT_SCHEMA + 1}\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert e.value.message == (
        f"{path}: preset uses schema {CURRENT_SCHEMA + 1}; this kohya-wrap understands up to {CURRENT_SCHEMA}"
    )
    assert "upgrade kohya-wrap" in e.value.hint


def test_older_schema_gets_a_clear_upgrade_message(tmp_path):
    path = write(tmp_path, "old.toml", "schema = 0\n[network]\nnetwork_dim = 8\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert "preset uses schema 0, which kohya-wrap no longer reads" in e.value.message
    assert f"rewrite it for schema {CURRENT_SCHEMA}" in e.value.hint
    nothing = write(tmp_path, "none.toml", "[network]\nnetwork_dim = 8\n")
    with pytest.raises(PresetError, match="no `schema` number"):
        load_preset(str(nothing))


def test_migrations_run_one_step_at_a_time(tmp_path, monkeypatch):
    # A future schema 2 renamed [kohya_wrap] steps -> target_steps: an old file still loads.
    def v1_to_v2(doc):
        ours = dict(doc.get("kohya_wrap", {}))
        if "steps" in ours:
            ours["target_steps"] = ours.pop("steps")
        return {**doc, "kohya_wrap": ours}

    monkeypatch.setattr(preset_mod, "CURRENT_SCHEMA", 2)
    monkeypatch.setattr(preset_mod, "MIGRATIONS", {1: v1_to_v2})
    path = write(tmp_path, "v1.toml", 'schema = 1\nextends = "smoke"\n[kohya_wrap]\nsteps = 3\n')
    assert load_preset(str(path)).ours["target_steps"].value == 3


def test_layout_mistakes(tmp_path):
    top = write(tmp_path, "top.toml", "schema = 1\nnetwork_dim = 8\n")
    with pytest.raises(PresetError, match="unknown top-level key"):
        load_preset(str(top))
    twice = write(tmp_path, "twice.toml", "schema = 1\n[a]\nnetwork_dim = 8\n[b]\nnetwork_dim = 16\n")
    with pytest.raises(PresetError, match=r"\[b\] network_dim: also set in \[a\]"):
        load_preset(str(twice))
    misplaced = write(tmp_path, "ours.toml", "schema = 1\n[training]\ntarget_steps = 8\n")
    with pytest.raises(PresetError, match=r"move it to the \[kohya_wrap\] table"):
        load_preset(str(misplaced))
    bad = write(tmp_path, "bad.toml", "schema = 1\n[a\n")
    with pytest.raises(PresetError, match="not valid TOML"):
        load_preset(str(bad))
    ranges = write(tmp_path, "range.toml", 'schema = 1\nextends = "smoke"\n[kohya_wrap]\ntarget_steps = 10\n')
    with pytest.raises(PresetError, match="min_steps <= target_steps <= max_steps"):
        load_preset(str(ranges))


def test_a_step_count_set_on_the_command_line_is_named_not_the_shipped_file_it_conflicts_with(tmp_path):
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", ["target_steps=100"])
    assert e.value.message.startswith("--set target_steps=100: [kohya_wrap] needs min_steps <= target_steps")
    assert "base.toml" not in e.value.message and "min_steps=" in (e.value.hint or "")
    assert load_preset("likeness-sd15", ["target_steps=100", "min_steps=50"]).ours["target_steps"].value == 100
    ranges = write(tmp_path, "range.toml", 'schema = 1\nextends = "smoke"\n[kohya_wrap]\ntarget_steps = 10\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(ranges))
    assert e.value.message.startswith(f"{ranges}: [kohya_wrap] needs")


def test_conflicts_name_the_file_and_table(tmp_path):
    path = write(tmp_path, "c.toml", 'schema = 1\nextends = "likeness-sd15"\n[aug]\ncolor_aug = true\n')
    with pytest.raises(PresetError) as e:
        load_preset(str(path))
    assert e.value.message.startswith(f"{path}: [aug] color_aug: color_aug cannot be used when latents are cached")


def test_diff_lists_only_what_differs():
    keys = {d.key for d in diff(load_preset("likeness-sd15"), load_preset("likeness-sd15-768"))}
    assert keys == {"resolution", "gradient_checkpointing", "size"}
    assert diff(load_preset("smoke"), load_preset("smoke")) == []


def test_export_leaves_out_paths_and_planned_values(tmp_path):
    values = {
        "network_dim": 16,
        "caption_dropout_rate": 0.0,
        "vae": "/m/vae.safetensors",
        "output_dir": "/runs/x/output",
        "max_train_steps": 3000,
        "network_module": "networks.lora",
        "sample_prompts": "/runs/x/p.txt",
    }
    text = export_text(
        values,
        {"target_steps": 3000, "min_steps": 2000, "max_steps": 5000},
        name="x",
        comment_lines=["sd-scripts commit: abc"],
        sd_scripts_commit="ae72efb92babe89ff8e70f057e42db68440e8d61",
    )
    assert 'sd_scripts_commit = "ae72efb92babe89ff8e70f057e42db68440e8d61"' in text
    assert "/m/" not in text and "/runs/" not in text
    assert "caption_dropout_rate = 0.0" in text
    path = write(tmp_path, "exported.toml", text)
    p = load_preset(str(path))
    assert p.values["network_dim"].value == 16 and "vae" not in p.values


def test_our_settings_type_every_kohya_wrap_key_as_loaded():
    settings = load_preset("likeness-sd15", ["kohya_wrap.size=768", "kohya_wrap.prompts=a photo of {subject}"]).settings
    assert set(preset_mod.OurSettings.__struct_fields__) == set(OUR_KEYS)
    assert (settings.size, settings.target_steps, settings.prompts) == (768, 3000, ("a photo of {subject}",))
    assert isinstance(settings.sample_scale, float) and settings.crop == "face"


def test_a_toml_table_is_told_from_other_values_by_conversion():
    from kohya_wrap.codec import as_table

    assert as_table({"network_dim": 8}) == {"network_dim": 8}
    assert [as_table(v) for v in (1, "x", [{"a": 1}], True, None)] == [None] * 5


def test_a_quoted_number_or_boolean_is_refused_saying_to_drop_the_quotes(tmp_path):
    body = 'schema = 1\nextends = "likeness-sd15"\n[training]\nmax_train_steps = "2000"\n'
    with pytest.raises(PresetError) as e:
        load_preset(str(write(tmp_path, "steps.toml", body)))
    assert "max_train_steps must be an integer, got '2000'" in e.value.message
    assert e.value.hint == "write it without quotes: max_train_steps = 2000"
    body = 'schema = 1\nextends = "likeness-sd15"\n[kohya_wrap]\nstop_early = "false"\n'
    with pytest.raises(PresetError) as e:
        load_preset(str(write(tmp_path, "ours.toml", body)))
    assert e.value.hint == "write it without quotes: stop_early = false"
    body = 'schema = 1\nextends = "likeness-sd15"\n[network]\nnetwork_dim = "wide"\n'
    with pytest.raises(PresetError) as e:
        load_preset(str(write(tmp_path, "word.toml", body)))
    assert "without quotes" not in (e.value.hint or "")
    kept = write(tmp_path, "zero.toml", 'schema = 1\nextends = "likeness-sd15"\n[training]\nmax_grad_norm = 0.0\n')
    assert load_preset(str(kept)).values["max_grad_norm"].value == 0.0  # a zero is a value, kept


def test_several_bad_set_values_are_listed_without_pointing_at_a_preset_file():
    with pytest.raises(PresetError) as e:
        load_preset("likeness-sd15", ["network_dim=x", "netwrk_dim=4"])
    assert e.value.message.startswith("2 problems:") and e.value.hint == "fix each one"
