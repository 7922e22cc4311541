"""inspect on LoRA files built here: Kohya naming at full SD1.5 module counts (small dims), diffusers and
PEFT naming, no metadata, NaN, all-zero up weights, corrupt headers, a non-LoRA safetensors, other files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from kohya_wrap.cli import cli
from kohya_wrap.codec import to_builtins
from kohya_wrap.errors import ExitCode
from kohya_wrap.report.inspect import (
    DIFFUSERS,
    KOHYA,
    PEFT,
    LoraFileError,
    inspect_lora,
    inspection_record,
    read_header,
)

TRANSCRIPTS = Path(__file__).parents[1] / "data" / "transcripts"
RANK = 2
WIDTH = 8  # in/out features of every module: small, the checks do not look at real shapes


def sd15_module_names() -> list[str]:
    """The 72 text-encoder and 192 U-Net module names networks.lora gives SD1.5 (networks/lora.py: LoRANetwork.__init__; docs/sd-scripts.md#lora-tensor-keys)."""
    te = [
        f"lora_te_text_model_encoder_layers_{i}_{part}"
        for i in range(12)
        for part in (
            "self_attn_q_proj",
            "self_attn_k_proj",
            "self_attn_v_proj",
            "self_attn_out_proj",
            "mlp_fc1",
            "mlp_fc2",
        )
    ]
    blocks = [f"down_blocks_{b}_attentions_{a}" for b in range(3) for a in range(2)] + ["mid_block_attentions_0"]
    blocks += [f"up_blocks_{b}_attentions_{a}" for b in range(1, 4) for a in range(3)]
    parts = ["proj_in", "proj_out"] + [
        f"transformer_blocks_0_{attn}_{p}" for attn in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out_0")
    ]
    parts += ["transformer_blocks_0_ff_net_0_proj", "transformer_blocks_0_ff_net_2"]
    unet = [f"lora_unet_{b}_{p}" for b in blocks for p in parts]
    assert len(te) == 72 and len(unet) == 192
    return te + unet


def a_cli_metadata() -> dict[str, str]:
    """The 93 metadata keys of the LoRA the recorded sd-scripts run A_cli wrote."""
    meta = {}
    for line in (TRANSCRIPTS / "lora_metadata_A_cli.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") and " = " in line and not line.startswith("   "):
            key, value = line.strip().split(" = ", 1)
            meta[key] = value
    assert len(meta) == 93
    meta["ss_network_dim"] = str(RANK)
    return meta


def kohya_tensors(*, rank: int = RANK, alpha: float = 1.0, unet: bool = True, te: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {}
    for name in sd15_module_names():
        if (name.startswith("lora_unet_") and not unet) or (name.startswith("lora_te_") and not te):
            continue
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((rank, WIDTH)).astype(np.float32)
        tensors[f"{name}.lora_up.weight"] = rng.standard_normal((WIDTH, rank)).astype(np.float32) * 0.01
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=np.float32)
    return tensors


def write_kohya(path: Path, metadata: dict[str, str] | None = None, **kw: object) -> Path:
    save_file(kohya_tensors(**kw), str(path), metadata=metadata)  # type: ignore[arg-type]
    return path


def write_raw(path: Path, header: dict[str, object], data: bytes, length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def check(result, name):  # type: ignore[no-untyped-def]
    return next(c for c in result.checks if c.name == name)


def test_kohya_file_with_sd_scripts_metadata(tmp_path: Path) -> None:
    path = write_kohya(tmp_path / "tinylora.safetensors", a_cli_metadata())
    r = inspect_lora(path)
    assert (r.naming, r.variant) == (KOHYA, None)
    assert (r.unet_modules, r.text_encoder_modules, r.tensors) == (192, 72, 792)
    assert r.ranks == (RANK,) and r.alphas == (1.0,)
    assert r.healthy, r.checks
    i = r.info
    assert i.network_module == "networks.lora" and i.network_dim == RANK and i.network_alpha == 1.0
    assert i.base_model_name == "sd15_random.safetensors" and i.base_model_hash == "4a800cd7"
    assert i.base_model_sha256 == "05f13d67200046e93b58dc4e2d4b41c43dae5c7d5f2d77bfa6d997f7062b48b2"
    assert i.resolution == "64x64"
    assert (i.steps, i.epoch, i.epochs, i.max_train_steps) == (4, 1, 1, 4)
    assert i.learning_rate == 0.0001 and i.unet_lr is None and i.text_encoder_lr is None
    assert i.optimizer == "torch.optim.adamw.AdamW" and i.lr_scheduler == "constant"
    assert [(d.name, d.repeats, d.images) for d in i.dataset_dirs] == [("10_ohwx man", 10, 4)]
    assert [(t.tag, t.count) for t in i.top_tags[:2]] == [("a photo of ohwx man", 4), ("stripes", 4)]
    assert i.training_seconds == pytest.approx(1795598150.1595922 - 1795598093.5495768)
    assert i.clip_skip is None and i.seed == 42 and i.batch_size == 1
    assert r.run_manifest is None
    json.dumps(to_builtins(inspection_record(r)))  # --json output is plain JSON


def test_dataset_config_metadata_gives_resolution_and_batch(tmp_path: Path) -> None:
    meta = {
        "ss_network_module": "networks.lora",
        "ss_session_id": "1",
        "ss_datasets": json.dumps([{"resolution": [512, 768], "batch_size_per_device": 2}]),
    }
    r = inspect_lora(write_kohya(tmp_path / "x.safetensors", meta))
    assert r.info.resolution == "512x768" and r.info.batch_size == 2
    assert r.info.network_dim is None  # absent stays absent, never a guess


def test_missing_metadata_is_a_note_not_a_failure(tmp_path: Path) -> None:
    r = inspect_lora(write_kohya(tmp_path / "bare.safetensors"))
    assert r.info is None and r.metadata == {}
    note = check(r, "metadata_present")
    assert not note.ok and note.informational
    assert r.healthy


def test_unet_only_file_counts_only_unet(tmp_path: Path) -> None:
    r = inspect_lora(write_kohya(tmp_path / "u.safetensors", te=False))
    assert (r.unet_modules, r.text_encoder_modules) == (192, 0)
    assert check(r, "module_counts").ok


def test_missing_modules_fail_the_count(tmp_path: Path) -> None:
    tensors = kohya_tensors()
    for key in [k for k in tensors if k.startswith("lora_unet_mid_block")]:
        del tensors[key]
    save_file(tensors, str(tmp_path / "m.safetensors"))
    r = inspect_lora(tmp_path / "m.safetensors")
    assert r.unet_modules == 180 and not check(r, "module_counts").ok and not r.healthy


def test_nan_tensor_fails_health(tmp_path: Path) -> None:
    tensors = kohya_tensors()
    tensors["lora_te_text_model_encoder_layers_3_mlp_fc1.lora_down.weight"][0, 0] = np.nan
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    r = inspect_lora(tmp_path / "nan.safetensors")
    assert not r.healthy
    assert not check(r, "finite").ok and "layers_3_mlp_fc1" in check(r, "finite").detail


def test_all_zero_up_weights_fail_health(tmp_path: Path) -> None:
    tensors = {k: (np.zeros_like(v) if k.endswith(".lora_up.weight") else v) for k, v in kohya_tensors().items()}
    save_file(tensors, str(tmp_path / "zero.safetensors"))
    r = inspect_lora(tmp_path / "zero.safetensors")
    assert not r.healthy and not check(r, "trained").ok


def test_bf16_alpha_is_read(tmp_path: Path) -> None:
    # numpy cannot write bf16, so the file is written by hand: 1.0 in bf16 is 0x3F80
    down = np.ones((RANK, WIDTH), dtype=np.float32).tobytes()
    up = np.ones((WIDTH, RANK), dtype=np.float32).tobytes()
    alpha = struct.pack("<H", 0x3F80)
    name = "lora_unet_mid_block_attentions_0_proj_in"
    header = {
        f"{name}.lora_down.weight": {"dtype": "F32", "shape": [RANK, WIDTH], "data_offsets": [0, len(down)]},
        f"{name}.lora_up.weight": {
            "dtype": "F32",
            "shape": [WIDTH, RANK],
            "data_offsets": [len(down), len(down) + len(up)],
        },
        f"{name}.alpha": {"dtype": "BF16", "shape": [], "data_offsets": [len(down) + len(up), len(down) + len(up) + 2]},
    }
    r = inspect_lora(write_raw(tmp_path / "bf16.safetensors", header, down + up + alpha))
    assert r.alphas == (1.0,) and r.dtypes == ("BF16", "F32")


def test_integer_alpha_is_read(tmp_path: Path) -> None:
    # sd-scripts saves `network_alpha = 1` (an int) as an int64 tensor
    tensors = {k: (np.array(1, dtype=np.int64) if k.endswith(".alpha") else v) for k, v in kohya_tensors().items()}
    save_file(tensors, str(tmp_path / "int-alpha.safetensors"))
    r = inspect_lora(tmp_path / "int-alpha.safetensors")
    assert r.alphas == (1.0,) and r.dtypes == ("F32", "I64") and r.healthy


def _diffusers_tensors(zero_up: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for block in ("down_blocks.0.attentions.0", "mid_block.attentions.0"):
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            base = f"unet.{block}.transformer_blocks.0.attn1.{proj}"
            out[f"{base}.lora.down.weight"] = rng.standard_normal((RANK, WIDTH)).astype(np.float32)
            up = rng.standard_normal((WIDTH, RANK)).astype(np.float32)
            out[f"{base}.lora.up.weight"] = np.zeros_like(up) if zero_up else up
    return out


def _peft_tensors(zero_b: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            base = f"text_encoder.text_model.encoder.layers.{layer}.self_attn.{proj}"
            out[f"{base}.lora_A.weight"] = rng.standard_normal((RANK, WIDTH)).astype(np.float32)
            b = rng.standard_normal((WIDTH, RANK)).astype(np.float32)
            out[f"{base}.lora_B.weight"] = np.zeros_like(b) if zero_b else b
    for proj in ("to_q", "to_k"):
        base = f"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.{proj}"
        out[f"{base}.lora_A.weight"] = rng.standard_normal((RANK, WIDTH)).astype(np.float32)
        b = rng.standard_normal((WIDTH, RANK)).astype(np.float32)
        out[f"{base}.lora_B.weight"] = np.zeros_like(b) if zero_b else b
    return out


def test_diffusers_naming(tmp_path: Path) -> None:
    save_file(_diffusers_tensors(), str(tmp_path / "d.safetensors"))
    r = inspect_lora(tmp_path / "d.safetensors")
    assert r.naming == DIFFUSERS and (r.unet_modules, r.text_encoder_modules) == (8, 0)
    assert r.ranks == (RANK,) and r.alphas == ()
    assert r.healthy and check(r, "key_names").informational
    assert "Kohya" in check(r, "key_names").detail


def test_diffusers_zero_up_fails(tmp_path: Path) -> None:
    save_file(_diffusers_tensors(zero_up=True), str(tmp_path / "d0.safetensors"))
    assert not check(inspect_lora(tmp_path / "d0.safetensors"), "trained").ok


def test_peft_naming(tmp_path: Path) -> None:
    save_file(_peft_tensors(), str(tmp_path / "p.safetensors"), metadata={"format": "pt"})
    r = inspect_lora(tmp_path / "p.safetensors")
    assert r.naming == PEFT and (r.unet_modules, r.text_encoder_modules) == (2, 4)
    assert r.healthy and r.info is not None and r.info.network_module is None


def test_peft_zero_b_and_nan(tmp_path: Path) -> None:
    tensors = _peft_tensors(zero_b=True)
    save_file(tensors, str(tmp_path / "p0.safetensors"))
    assert not check(inspect_lora(tmp_path / "p0.safetensors"), "trained").ok
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key][0, 0] = np.inf
    save_file(tensors, str(tmp_path / "pinf.safetensors"))
    r = inspect_lora(tmp_path / "pinf.safetensors")
    assert not check(r, "finite").ok and not r.healthy


def test_non_lora_safetensors(tmp_path: Path) -> None:
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4), np.float32),
        "first_stage_model.decoder.conv_in.weight": np.zeros((2,), np.float32),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(LoraFileError, match="is not a LoRA: none of its 2 tensors"):
        inspect_lora(tmp_path / "model.safetensors")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"\x01\x02"), "only 2 bytes long"),
        (lambda p: p.write_bytes(struct.pack("<Q", 10**12) + b"{}"), "the header claims"),
        (lambda p: p.write_bytes(struct.pack("<Q", 6) + b"{nope}"), "header is not JSON"),
        (lambda p: p.write_bytes(struct.pack("<Q", 2) + b"[]"), "not a JSON object"),
        (
            lambda p: write_raw(
                p, {"lora_unet_a.alpha": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\x00\x00"
            ),
            "lies beyond the end of the file",
        ),
        (
            lambda p: write_raw(
                p, {"lora_unet_a.alpha": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 4
            ),
            "does not match its 4 bytes",
        ),
        (lambda p: write_raw(p, {"lora_unet_a.alpha": {"shape": []}}, b""), "no valid dtype/shape/data_offsets"),
    ],
)
def test_corrupt_headers(tmp_path: Path, make, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broken.safetensors"
    make(path)
    with pytest.raises(LoraFileError, match=message) as info:
        read_header(path)
    assert str(path) in info.value.message and info.value.hint


def test_truncated_download(tmp_path: Path) -> None:
    full = write_kohya(tmp_path / "full.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full[:-100])  # the header is whole, the last tensors are not
    with pytest.raises(LoraFileError, match="lies beyond the end of the file"):
        inspect_lora(cut)


def test_non_safetensors_files(tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(LoraFileError, match="is not a safetensors file"):
        inspect_lora(png)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(LoraFileError, match="pickled PyTorch file"):
        inspect_lora(ckpt)
    with pytest.raises(LoraFileError, match="does not exist"):
        inspect_lora(tmp_path / "absent.safetensors")
    with pytest.raises(LoraFileError, match="is a folder, not a LoRA file") as folder:
        inspect_lora(tmp_path)  # a run directory given by mistake
    assert "output/" in (folder.value.hint or "")


def test_run_manifest_beside_output_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "output").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"outcome": "finished", "kohya_wrap_version": "0.1.0"}))
    r = inspect_lora(write_kohya(run_dir / "output" / "x.safetensors", a_cli_metadata()))
    assert r.run_manifest is not None
    assert (r.run_manifest.outcome, r.run_manifest.kohya_wrap_version) == ("finished", "0.1.0")
    assert r.run_manifest_path == (run_dir / "run.json").resolve()


def test_cli_inspect_json_and_text(tmp_path: Path) -> None:
    path = write_kohya(tmp_path / "tinylora.safetensors", a_cli_metadata())
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["naming"] == "kohya" and data["healthy"] is True
    assert data["training"]["steps"] == 4 and data["training"]["dataset_dirs"][0]["name"] == "10_ohwx man"
    text = runner.invoke(cli, ["inspect", str(path)])
    assert text.exit_code == 0
    for expected in ("networks.lora", "sd15_random.safetensors", "64x64", "a photo of ohwx man (4)", "10_ohwx man"):
        assert expected in text.output


def test_cli_inspect_errors_and_strict(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01")
    result = runner.invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == ExitCode.ERROR and "not a valid safetensors file" in result.output
    tensors = {k: (np.zeros_like(v) if k.endswith(".lora_up.weight") else v) for k, v in kohya_tensors().items()}
    save_file(tensors, str(tmp_path / "zero.safetensors"))
    assert runner.invoke(cli, ["inspect", str(tmp_path / "zero.safetensors")]).exit_code == ExitCode.ERROR
    assert runner.invoke(cli, ["inspect", str(tmp_path / "zero.safetensors"), "--strict"]).exit_code == ExitCode.ERROR


def test_cli_inspect_exits_1_on_nan_weights_without_strict(tmp_path: Path) -> None:
    tensors = kohya_tensors()
    tensors["lora_te_text_model_encoder_layers_3_mlp_fc1.lora_down.weight"][0, 0] = np.nan
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nan.safetensors")])
    assert result.exit_code == ExitCode.ERROR and "FAIL" in result.output
    healthy = write_kohya(tmp_path / "ok.safetensors", metadata={"ss_network_dim": str(RANK)})
    assert CliRunner().invoke(cli, ["inspect", str(healthy)]).exit_code == 0


def test_an_sdxl_loras_two_text_encoders_are_recognised(tmp_path: Path) -> None:
    tensors = {}
    for name, v in kohya_tensors().items():
        if name.startswith("lora_te_"):
            for te in ("lora_te1_", "lora_te2_"):
                tensors[te + name[len("lora_te_") :]] = v
        else:
            tensors[name] = v
    save_file(tensors, str(tmp_path / "sdxl.safetensors"))
    r = inspect_lora(tmp_path / "sdxl.safetensors")
    assert check(r, "key_names").ok, check(r, "key_names").detail
    assert r.text_encoder_modules == 2 * 72
    assert check(r, "module_counts").ok and "SDXL" in check(r, "module_counts").detail
