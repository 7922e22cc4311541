import pytest

from kohya_wrap.sdscripts import arguments
from kohya_wrap.sdscripts.arguments import ArgumentError, check_trust, convert, cross_checks


def test_the_table_has_all_193_arguments_of_train_network():
    table = arguments.table()
    assert len(table) == 193
    assert table["learning_rate"].kind == "float" and table["learning_rate"].default == 2e-6
    assert table["text_encoder_lr"].is_list
    assert table["lr_warmup_steps"].kind == "int_or_float"
    assert table["mixed_precision"].choices == ("no", "fp16", "bf16")


def test_unknown_key_says_did_you_mean():
    with pytest.raises(ArgumentError) as e:
        convert("learning_rat", 1e-4)
    assert e.value.key == "learning_rat"
    assert "unknown sd-scripts argument 'learning_rat'" in e.value.message
    assert "'learning_rate'" in e.value.hint


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("network_dim", 32, 32),
        ("network_alpha", 16, 16.0),  # ints widen to float, as argparse's float() would
        ("learning_rate", 0.5, 0.5),
        ("cache_latents", False, False),
        ("resolution", "512,768", "512,768"),
        ("resolution", 512, "512"),  # sd-scripts splits the string; an int would crash it
        ("text_encoder_lr", 5e-5, [5e-5]),
        ("network_args", ["conv_dim=4"], ["conv_dim=4"]),
        ("lr_warmup_steps", 100, 100),
        ("lr_warmup_steps", 0.05, 0.05),
    ],
)
def test_toml_values_become_the_argparse_type(key, value, expected):
    out = convert(key, value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("network_dim", "16", 16),
        ("learning_rate", "1e-4", 1e-4),
        ("sdpa", "true", True),
        ("sdpa", "false", False),
        ("lr_warmup_steps", "10%", 0.1),
        ("lr_warmup_steps", "100", 100),
        ("lr_warmup_steps", "0.5", 0.5),
        ("output_name", "123", "123"),
        ("network_args", "conv_dim=4", ["conv_dim=4"]),
        ("network_args", '["conv_dim=4", "conv_alpha=1"]', ["conv_dim=4", "conv_alpha=1"]),
        ("text_encoder_lr", "[1e-5, 2e-5]", [1e-5, 2e-5]),
    ],
)
def test_command_line_text_is_converted_like_argparse(key, text, expected):
    out = convert(key, text, from_text=True)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("network_dim", "32", "network_dim must be an integer, got '32'"),
        ("network_dim", 32.0, "network_dim must be an integer"),
        ("learning_rate", "1e-4", "learning_rate must be a number"),
        ("sdpa", 1, "sdpa must be true or false"),
        ("network_dim", True, "network_dim must be an integer"),
        ("network_dim", [1], "takes one value"),
        ("resolution", "512x512", "resolution must be 'N' or 'W,H'"),
        ("lr_warmup_steps", 1.5, "lr_warmup_steps must be an integer step count or a fraction below 1"),
        ("lr_scheduler", "cosine_annealing", "lr_scheduler 'cosine_annealing' is not a scheduler sd-scripts knows"),
        ("network_args", ["conv_dim"], "network_args items are 'name=value'"),
    ],
)
def test_wrong_types_are_rejected_naming_the_key(key, value, words):
    with pytest.raises(ArgumentError) as e:
        convert(key, value)
    assert e.value.key == key
    assert words in e.value.message


def test_choices_are_checked_with_a_suggestion():
    with pytest.raises(ArgumentError) as e:
        convert("mixed_precision", "fp32")
    assert e.value.message == "mixed_precision = 'fp32' is not one of 'no', 'fp16', 'bf16'"
    assert "fp16" in e.value.hint
    with pytest.raises(ArgumentError):
        convert("sample_sampler", "euler_x", from_text=True)


FORBIDDEN_IN_PRESETS = sorted(arguments.PRESET_FORBIDDEN)


@pytest.mark.parametrize("key", FORBIDDEN_IN_PRESETS)
def test_each_forbidden_key_is_refused_in_a_preset_but_allowed_on_the_command_line(key):
    arg = arguments.table()[key]
    text = arg.choices[-1] if arg.choices else "x" if arg.kind in ("str", "path") else "true"
    value = convert(key, text, from_text=True)
    with pytest.raises(ArgumentError) as e:
        check_trust(key, value, trusted=False)
    assert e.value.message.startswith(f"{key} is not allowed in a preset: ")
    check_trust(key, value, trusted=True)


@pytest.mark.parametrize("key", sorted(arguments.SECRET_KEYS))
def test_secrets_are_refused_everywhere(key):
    for trusted in (False, True):
        with pytest.raises(ArgumentError, match="is a secret"):
            check_trust(key, "hf_xxx", trusted=trusted)


@pytest.mark.parametrize("key", sorted(arguments.MANAGED_KEYS))
def test_keys_plan_sets_are_refused_everywhere(key):
    for trusted in (False, True):
        with pytest.raises(ArgumentError, match="is set by kohya-wrap"):
            check_trust(key, "x", trusted=trusted)


def test_network_module_allowlist_and_dotted_names():
    for module in arguments.NETWORK_MODULE_ALLOWLIST:
        check_trust("network_module", module, trusted=False)
    with pytest.raises(ArgumentError, match="sd-scripts imports and runs it"):
        check_trust("network_module", "evil.payload", trusted=False)
    with pytest.raises(ArgumentError, match="a dotted name makes sd-scripts import"):
        check_trust("optimizer_type", "evil.Optimizer", trusted=False)
    with pytest.raises(ArgumentError, match="a dotted name"):
        check_trust("lr_scheduler_type", "evil.Scheduler", trusted=False)
    check_trust("optimizer_type", "AdamW", trusted=False)
    check_trust("optimizer_type", "prodigyopt.Prodigy", trusted=True)


def test_shipped_network_modules_are_in_the_checkout():
    from kohya_wrap.sdscripts.checkout import candidate

    path, _ = candidate()
    if not (path / "networks").is_dir():
        pytest.skip("no sd-scripts checkout")
    for module in arguments.NETWORK_MODULE_ALLOWLIST:
        source = (path / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        assert "def create_network(" in source


def test_step_keys_only_from_the_command_line():
    with pytest.raises(ArgumentError, match="planned from the dataset") as e:
        check_trust("max_train_steps", 100, trusted=False)
    assert "target_steps" in e.value.hint
    check_trust("max_train_steps", 100, trusted=True)


def _errors(values):
    return [(p.keys[0], p.message) for p in cross_checks(values) if p.severity == "error"]


@pytest.mark.parametrize(
    "values, key",
    [
        ({"adaptive_noise_scale": 0.1}, "adaptive_noise_scale"),
        ({"scale_v_pred_loss_like_noise_pred": True}, "scale_v_pred_loss_like_noise_pred"),
        ({"v_pred_like_loss": 0.1, "v_parameterization": True}, "v_pred_like_loss"),
        ({"cache_latents": True, "color_aug": True}, "color_aug"),
        ({"cache_latents_to_disk": True, "random_crop": True}, "random_crop"),
        ({"enable_bucket": True, "bucket_reso_steps": 32}, "bucket_reso_steps"),
        ({"enable_bucket": True, "resolution": "64"}, "min_bucket_reso"),
        ({"enable_bucket": True, "resolution": "2048"}, "max_bucket_reso"),
        ({"full_fp16": True, "mixed_precision": "bf16"}, "full_fp16"),
        ({"full_bf16": True}, "full_bf16"),
        ({"fp8_base": True}, "fp8_base"),
        ({"max_train_steps": 10, "initial_step": 10}, "max_train_steps"),
        ({"use_8bit_adam": True, "optimizer_type": "AdamW"}, "use_8bit_adam"),
        ({"fused_backward_pass": True}, "fused_backward_pass"),
        ({"lr_scheduler": "constant", "lr_warmup_steps": 100}, "lr_warmup_steps"),
        ({"lr_scheduler": "adafactor:1e-3"}, "lr_scheduler"),
        ({"log_with": "tensorboard"}, "log_with"),
        ({"persistent_data_loader_workers": True, "max_data_loader_n_workers": 0}, "persistent_data_loader_workers"),
    ],
)
def test_run_time_conflicts_are_found_before_launch(values, key):
    errors = _errors(values)
    assert errors and errors[0][0] == key


def test_consistent_values_pass_and_warnings_are_separate():
    ok = {
        "lr_scheduler": "constant_with_warmup",
        "lr_warmup_steps": 100,
        "enable_bucket": True,
        "resolution": "512",
        "cache_latents": True,
        "network_module": "networks.lora",
        "network_dim": 32,
    }
    assert cross_checks(ok) == []
    problems = cross_checks({"sdpa": True, "xformers": True})
    assert [p.severity for p in problems] == ["warning"]
