"""LoRA verification on files built like sd-scripts builds them (tests/fakes/fake_trainer.write_lora)."""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from fake_trainer import lora_modules, write_lora  # noqa: E402

from kohya_wrap.sdscripts.lora_file import (  # noqa: E402
    Expectation,
    expectation_from_values,
    read_metadata,
    verify_lora,
)

CFG = {"network_dim": 4, "network_alpha": 1.0, "max_train_steps": 4, "output_name": "face"}


def checks(report):
    return {c.name: c.ok for c in report.checks}


def test_recorded_metadata_counts_match_the_module_table():
    text = (Path(__file__).parents[1] / "data/transcripts/lora_metadata_A_cli.txt").read_text()
    assert "module count: te 72 unet 192" in text and "tensors: 792" in text
    names = [m[0] for m in lora_modules()]
    assert sum(n.startswith("lora_te_") for n in names) == 72 and sum(n.startswith("lora_unet_") for n in names) == 192
    for sample in (
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_te_text_model_encoder_layers_0_mlp_fc1",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
    ):
        assert sample in names and sample in text


def test_a_good_file_passes_every_check(tmp_path):
    base = tmp_path / "base.safetensors"
    base.write_bytes(b"base")
    path = tmp_path / "face.safetensors"
    write_lora(path, {**CFG, "pretrained_model_name_or_path": str(base)}, 4, 1, zero_up=False, nan=False)
    import hashlib

    report = verify_lora(
        path,
        Expectation(steps=4, network_dim=4, network_alpha=1.0, base_model_sha256=hashlib.sha256(b"base").hexdigest()),
    )
    assert report.ok, report.failed
    assert (report.tensors, report.unet_modules, report.text_encoder_modules) == (792, 192, 72)
    assert set(checks(report)) == {
        "opens",
        "key_names",
        "modules_complete",
        "module_counts",
        "finite",
        "trained",
        "metadata_present",
        "metadata_steps",
        "metadata_dim",
        "metadata_alpha",
        "metadata_base_model",
    }


@pytest.mark.parametrize(
    "kwargs, failing",
    [
        ({"zero_up": True, "nan": False}, {"trained"}),
        ({"zero_up": False, "nan": True}, {"finite"}),
    ],
)
def test_untrained_or_nan_weights_fail(tmp_path, kwargs, failing):
    path = tmp_path / "face.safetensors"
    write_lora(path, CFG, 4, 1, **kwargs)
    report = verify_lora(path, Expectation())
    assert {c.name for c in report.failed} == failing


def test_metadata_must_match_the_plan(tmp_path):
    path = tmp_path / "face.safetensors"
    write_lora(path, CFG, 4, 1, zero_up=False, nan=False)
    report = verify_lora(path, Expectation(steps=3000, network_dim=16, network_alpha=8.0, base_model_sha256="ab" * 32))
    assert {c.name for c in report.failed} == {
        "metadata_steps",
        "metadata_dim",
        "metadata_alpha",
        "metadata_base_model",
    }
    assert "ss_steps 4 (plan: 3000)" in [c.detail for c in report.failed]


def test_unet_only_network(tmp_path):
    path = tmp_path / "face.safetensors"
    write_lora(path, {**CFG, "network_train_unet_only": True}, 4, 1, zero_up=False, nan=False)
    assert verify_lora(path, expectation_from_values({"network_dim": 4, "network_train_unet_only": True}, 4, None)).ok
    assert not verify_lora(path, Expectation()).ok


def test_wrong_keys_missing_tensors_and_no_metadata(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file(
        {
            "lora_unet_x.lora_down.weight": np.ones((4, 8), np.float32),
            "model.diffusion_model.weight": np.ones(2, np.float32),
        },
        str(path),
    )
    failed = {c.name for c in verify_lora(path, Expectation()).failed}
    assert {"key_names", "modules_complete", "module_counts", "trained", "metadata_present"} <= failed


def test_fp16_and_bf16(tmp_path):
    down = np.full((4, 768), 0.5, np.float32)
    tensors16 = {
        "lora_te_a.lora_down.weight": down.astype(np.float16),
        "lora_te_a.lora_up.weight": np.full((768, 4), 0.25, np.float16),
        "lora_te_a.alpha": np.array(1.0, np.float16),
    }
    path = tmp_path / "fp16.safetensors"
    save_file(tensors16, str(path), metadata={"ss_network_module": "networks.lora"})
    assert checks(verify_lora(path, Expectation()))["trained"]
    # bf16: write the file by hand (numpy has no bfloat16): the top 16 bits of float32
    data = (np.full((768, 4), 0.25, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    nan = (np.array([np.nan] * 4, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    header = {
        "lora_te_a.lora_up.weight": {"dtype": "BF16", "shape": [768, 4], "data_offsets": [0, len(data)]},
        "lora_te_a.lora_down.weight": {"dtype": "BF16", "shape": [4, 1], "data_offsets": [len(data), len(data) + 8]},
        "__metadata__": {"ss_network_module": "networks.lora"},
    }
    raw = json.dumps(header).encode()
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(raw)) + raw + data + nan)
    result = checks(verify_lora(bf16, Expectation()))
    assert result["opens"] and result["trained"] and not result["finite"]
    assert read_metadata(bf16) == {"ss_network_module": "networks.lora"}


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"garbage")
    report = verify_lora(path, Expectation())
    assert not report.ok and report.checks[0].name == "opens"


def test_expectation_from_plan_values():
    e = expectation_from_values({"network_dim": 16, "network_alpha": 8, "network_args": ["conv_dim=4"]}, 3000, "x")
    assert (e.steps, e.network_dim, e.network_alpha, e.base_model_sha256, e.conv) == (3000, 16, 8.0, "x", True)
    assert expectation_from_values({}, None, None).network_dim == 4  # sd-scripts' fallback
