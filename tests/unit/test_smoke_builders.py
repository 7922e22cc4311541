"""The offline builders behind `kohya-wrap smoke`: base model, tokenizer, images.

The expected single-file keys and shapes below are written out by hand from the original SD1.5
layout (CompVis ldm `openaimodel.UNetModel`, `AutoencoderKL`, and the transformers CLIP text model
under `cond_stage_model.transformer.`), independent of the builder's mapping code. sd-scripts'
own loader checks the full-size file in tests/real/test_smoke_real.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from kohya_wrap.sdscripts.sd15 import SD15

TRAIN_LIBS = ("torch", "diffusers", "transformers", "safetensors")
_missing = [name for name in TRAIN_LIBS if importlib.util.find_spec(name) is None]
needs_train_libs = pytest.mark.skipif(
    bool(_missing), reason=f"needs torch and the [train] extra's packages (missing: {', '.join(_missing)})"
)

# Full-size SD1.5, original layout: (key, shape).
KNOWN_FULL_SIZE = {
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.time_embed.2.bias": (1280,),
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": (320,),
    "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": (320, 1280),
    "model.diffusion_model.input_blocks.1.0.out_layers.3.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "model.diffusion_model.input_blocks.9.0.op.bias": (1280,),
    "model.diffusion_model.input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.middle_block.0.in_layers.2.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight": (1280, 768),
    "model.diffusion_model.middle_block.1.proj_out.weight": (1280, 1280, 1, 1),
    "model.diffusion_model.middle_block.2.out_layers.0.bias": (1280,),
    "model.diffusion_model.output_blocks.0.0.skip_connection.weight": (1280, 2560, 1, 1),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.3.1.proj_in.weight": (1280, 1280, 1, 1),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.bias": (640,),
    "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_out.0.weight": (320, 320),
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
    "model.diffusion_model.out.0.weight": (320,),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
    "first_stage_model.encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
    "first_stage_model.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "first_stage_model.encoder.mid.block_1.norm1.weight": (512,),
    "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.encoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "first_stage_model.encoder.mid.attn_1.norm.bias": (512,),
    "first_stage_model.encoder.norm_out.weight": (512,),
    "first_stage_model.encoder.conv_out.weight": (8, 512, 3, 3),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    "first_stage_model.decoder.mid.attn_1.v.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.up.3.block.2.conv2.weight": (512, 512, 3, 3),
    "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.decoder.up.0.block.2.conv1.weight": (128, 128, 3, 3),
    "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (768, 768),
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
    "cond_stage_model.transformer.text_model.encoder.layers.11.layer_norm2.bias": (768,),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}
# Original-layout names that do not exist: the decoder has no `up.3.block.3`, level 3 has no
# downsampler, and output_blocks 11 carries no upsampler.
ABSENT = (
    "first_stage_model.decoder.up.0.upsample.conv.weight",
    "first_stage_model.encoder.down.3.downsample.conv.weight",
    "model.diffusion_model.input_blocks.12.0.op.weight",
    "model.diffusion_model.output_blocks.11.2.conv.weight",
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
)
# SD1.5 parameter counts (U-Net 859.5M, VAE 83.7M, text encoder 123.1M).
FULL_SIZE_PARAMETERS = 1_066_235_307


@pytest.fixture(scope="module")
def full_size_layout() -> dict[str, tuple[int, ...]]:
    from kohya_wrap.smoke.basemodel import checkpoint_layout

    return {spec.key: spec.shape for spec in checkpoint_layout(SD15)}


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kohya_wrap.smoke.basemodel import ensure_base_model, tiny_architecture

    return ensure_base_model(tmp_path_factory.mktemp("models"), tiny_architecture()).path


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


@needs_train_libs
def test_full_size_layout_has_sd15_keys_and_shapes(full_size_layout: dict[str, tuple[int, ...]]) -> None:
    for key, shape in KNOWN_FULL_SIZE.items():
        assert full_size_layout.get(key) == shape, key
    for key in ABSENT:
        assert key not in full_size_layout
    assert sum(math.prod(shape) for shape in full_size_layout.values()) == FULL_SIZE_PARAMETERS
    prefixes = {key.split(".")[0] for key in full_size_layout}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}


@needs_train_libs
def test_full_size_layout_numbers_blocks_like_the_original(full_size_layout: dict[str, tuple[int, ...]]) -> None:
    def indices(prefix: str) -> set[int]:
        return {int(key[len(prefix) :].split(".")[0]) for key in full_size_layout if key.startswith(prefix)}

    assert indices("model.diffusion_model.input_blocks.") == set(range(12))
    assert indices("model.diffusion_model.output_blocks.") == set(range(12))
    assert indices("model.diffusion_model.middle_block.") == {0, 1, 2}
    assert indices("first_stage_model.encoder.down.") == {0, 1, 2, 3}
    assert indices("first_stage_model.decoder.up.") == {0, 1, 2, 3}
    assert indices("cond_stage_model.transformer.text_model.encoder.layers.") == set(range(12))
    upsamplers = sorted(
        key
        for key in full_size_layout
        if key.startswith("model.diffusion_model.output_blocks.") and key.endswith(".conv.weight")
    )
    assert upsamplers == [
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.8.2.conv.weight",
    ]


@needs_train_libs
def test_tiny_build_has_the_full_size_key_names(tiny_build: Path, full_size_layout: dict[str, tuple[int, ...]]) -> None:
    shapes = _file_shapes(tiny_build)
    assert set(shapes) == set(full_size_layout)
    # Same ranks everywhere; widths shrink, layer counts and the vocabulary do not.
    assert all(len(shapes[key]) == len(full_size_layout[key]) for key in shapes)
    assert shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 32)
    assert shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (32, 32, 1, 1)
    assert shapes["first_stage_model.encoder.mid.attn_1.k.weight"] == (128, 128, 1, 1)


@needs_train_libs
def test_built_file_is_fp16_with_recorded_checksum(tiny_build: Path) -> None:
    import torch
    from safetensors import safe_open

    from kohya_wrap.fsutil import sha256_file

    with safe_open(str(tiny_build), framework="pt") as f:
        tensor = f.get_tensor("model.diffusion_model.input_blocks.1.0.in_layers.2.weight")
        norm = f.get_tensor("first_stage_model.encoder.norm_out.weight")
    assert tensor.dtype == torch.float16
    assert torch.isfinite(tensor).all() and tensor.std() > 0
    assert torch.equal(norm, torch.ones_like(norm))
    record = json.loads(tiny_build.with_suffix(".json").read_text())
    assert record["sha256"] == sha256_file(tiny_build)
    assert record["size"] == tiny_build.stat().st_size


@needs_train_libs
def test_cache_reuses_then_rebuilds_damaged_files(tmp_path: Path) -> None:
    from kohya_wrap.smoke.basemodel import ensure_base_model, tiny_architecture

    arch = tiny_architecture()
    first = ensure_base_model(tmp_path, arch)
    assert (first.built, first.build_reason) == (True, "missing")

    again = ensure_base_model(tmp_path, arch)
    assert (again.built, again.sha256, again.path) == (False, first.sha256, first.path)

    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    flipped = ensure_base_model(tmp_path, arch)
    assert (flipped.built, flipped.build_reason) == (True, "sha256 mismatch")
    assert flipped.sha256 == first.sha256  # same seed, same torch: the same file again

    with open(first.path, "ab") as f:
        f.write(b"\0")
    assert ensure_base_model(tmp_path, arch).build_reason == "size mismatch"

    first.path.with_suffix(".json").write_text("{not json")
    assert ensure_base_model(tmp_path, arch).build_reason == "no valid checksum record"

    first.path.unlink()
    assert ensure_base_model(tmp_path, arch).build_reason == "missing"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@needs_train_libs
def test_size_only_check_skips_reading_the_file(tmp_path: Path) -> None:
    from kohya_wrap.smoke.basemodel import ensure_base_model, tiny_architecture

    first = ensure_base_model(tmp_path, tiny_architecture())
    data = bytearray(first.path.read_bytes())
    data[-1] ^= 0xFF
    first.path.write_bytes(bytes(data))
    assert ensure_base_model(tmp_path, tiny_architecture(), verify_hash=False).built is False
    assert ensure_base_model(tmp_path, tiny_architecture()).build_reason == "sha256 mismatch"


def test_default_cache_is_under_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kohya_wrap.smoke.basemodel import checkpoint_stem, models_dir, tiny_architecture

    monkeypatch.setenv("KOHYA_WRAP_HOME", str(tmp_path))
    assert models_dir() == tmp_path / "models"
    assert checkpoint_stem(SD15) == "sd15-random-fp16"
    assert checkpoint_stem(tiny_architecture()) != checkpoint_stem(SD15)


def test_unknown_diffusers_key_is_an_error() -> None:
    from kohya_wrap.smoke.basemodel import UnmappedKey, unet_key, vae_key

    with pytest.raises(UnmappedKey):
        unet_key("down_blocks.0.resnets.0.new_layer.weight", SD15.unet)
    with pytest.raises(UnmappedKey):
        vae_key("encoder.mid_block.attentions.0.to_x.weight", SD15.vae)


def test_key_mapping_examples() -> None:
    from kohya_wrap.smoke.basemodel import unet_key, vae_key

    unet_examples = {
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.1.conv.weight",
        "up_blocks.2.upsamplers.0.conv.bias": "output_blocks.8.2.conv.bias",
        "down_blocks.2.downsamplers.0.conv.weight": "input_blocks.9.0.op.weight",
        "mid_block.resnets.1.time_emb_proj.weight": "middle_block.2.emb_layers.1.weight",
        "up_blocks.3.attentions.2.transformer_blocks.0.norm3.weight": "output_blocks.11.1.transformer_blocks.0.norm3.weight",
    }
    for diffusers_key, original in unet_examples.items():
        assert unet_key(diffusers_key, SD15.unet) == "model.diffusion_model." + original
    vae_examples = {
        "decoder.up_blocks.0.resnets.2.norm1.bias": "decoder.up.3.block.2.norm1.bias",
        "decoder.mid_block.attentions.0.to_out.0.bias": "decoder.mid.attn_1.proj_out.bias",
    }
    for diffusers_key, original in vae_examples.items():
        assert vae_key(diffusers_key, SD15.vae) == "first_stage_model." + original


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers (the [train] extra)")
def test_tokenizer_dir_loads_with_clip_tokenizer(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    from kohya_wrap.smoke.tokenizer import write_tokenizer

    directory = write_tokenizer(tmp_path)
    assert directory == tmp_path / "openai_clip-vit-large-patch14"
    assert sorted(p.name for p in directory.iterdir()) == [
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    assert tokenizer.model_max_length == 77
    ids = tokenizer("photo of ohwx man", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77
    assert max(ids) < 49408
    assert tokenizer.convert_ids_to_tokens(ids[:6]) == [
        "<|startoftext|>",
        "photo</w>",
        "of</w>",
        "ohwx</w>",
        "man</w>",
        "<|endoftext|>",
    ]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    odd = tokenizer("Zürich, 2024 — ünïcödé ☃").input_ids
    assert tokenizer.unk_token_id not in odd[1:-1]
    assert max(odd) < 49408


def test_tokenizer_vocabulary_covers_every_byte() -> None:
    from kohya_wrap.smoke.tokenizer import byte_symbols, vocabulary

    symbols = byte_symbols()
    assert len(set(symbols)) == 256
    assert not any(symbol.isspace() for symbol in symbols)
    vocab, merges = vocabulary()
    assert all(symbol in vocab and symbol + "</w>" in vocab for symbol in symbols)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in merges)


def test_face_images_are_deterministic_and_varied(tmp_path: Path) -> None:
    from kohya_wrap.smoke.images import write_face_images

    first = write_face_images(tmp_path / "a", count=6, seed=3)
    second = write_face_images(tmp_path / "b", count=6, seed=3)
    assert [p.name for p in first] == ["0001.png", "0002.png", "0003.png", "0004.png", "0005.png", "0006.png"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    images = [Image.open(p) for p in first]
    assert all(im.mode == "RGB" and 96 <= im.width <= 128 and 96 <= im.height <= 128 for im in images)
    assert len({im.size for im in images}) > 1
    assert len({im.tobytes() for im in images}) == 6
    # Structure, not flat colour: a face has many distinct colours.
    assert all(len(im.getcolors(maxcolors=1 << 16) or []) > 8 for im in images)
