"""A base model is checked to be an SD1.5 checkpoint by its keys before any run (issue 12)."""

import json
from pathlib import Path

import pytest
from huggingface_hub import errors as hub_errors
from sd15_stub import write_sd15_stub

from kohya_wrap.errors import ModelError
from kohya_wrap.models import resolve_base_model
from kohya_wrap.sdscripts import sd15


def test_a_file_holding_one_tensor_named_foo_is_refused(tmp_path):
    path = write_sd15_stub(tmp_path / "foo.safetensors", keys=("foo",))
    with pytest.raises(ModelError) as e:
        resolve_base_model(str(path))
    assert "is not a Stable Diffusion 1.5 checkpoint" in e.value.message
    assert "model.diffusion_model.input_blocks.0.0.weight" in e.value.message and "foo" in e.value.message
    assert "SD 1.5" in e.value.hint


@pytest.mark.parametrize(
    "key, words",
    [
        ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "SDXL"),
        ("cond_stage_model.model.token_embedding.weight", "SD 2.x"),
        ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "a LoRA"),
    ],
)
def test_other_architectures_are_named(tmp_path, key, words):
    path = write_sd15_stub(tmp_path / "m.safetensors", keys=sd15.REQUIRED_KEYS + (key,))
    with pytest.raises(ModelError, match=words):
        resolve_base_model(str(path))


def test_sd15_keys_pass_and_the_old_text_encoder_layout_too(tmp_path):
    assert resolve_base_model(str(write_sd15_stub(tmp_path / "a.safetensors"))).kind == "file"
    old = tuple(k.replace("transformer.text_model.", "transformer.") for k in sd15.REQUIRED_KEYS)
    assert resolve_base_model(str(write_sd15_stub(tmp_path / "b.safetensors", keys=old))).kind == "file"


def test_only_the_header_is_read(tmp_path):
    path = write_sd15_stub(tmp_path / "m.safetensors")
    with path.open("ab") as f:
        f.truncate(path.stat().st_size + 10**9)  # a sparse 1 GB tail nobody reads
    assert sd15.sd15_problem(sd15.read_safetensors_keys(path)) is None


def test_the_smoke_models_full_size_layout_is_sd15():
    pytest.importorskip("diffusers")
    pytest.importorskip("torch")
    from kohya_wrap.smoke.basemodel import checkpoint_layout

    assert sd15.sd15_problem([spec.key for spec in checkpoint_layout(sd15.SD15)]) is None


@pytest.mark.parametrize("dim, problem", [(768, None), (1024, "SD 2.x"), (2048, "SDXL")])
def test_a_diffusers_folder_is_checked_by_its_unet_config(tmp_path, dim, problem):
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": dim}))
    found = sd15.diffusers_problem(tmp_path)
    assert found is None if problem is None else problem in found


def test_a_diffusers_folder_without_a_unet_config_is_named(tmp_path):
    assert "unet/config.json" in sd15.diffusers_problem(Path(tmp_path))


def test_offline_hub_failure_says_offline_not_check_the_file_name(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(repo_id, filename, local_files_only=False, **_):
        raise hub_errors.LocalEntryNotFoundError("cannot reach the Hub and not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(ModelError) as e:
        resolve_base_model("me/model/w.safetensors")
    assert "offline" in e.value.message and "check the file name" not in (e.value.hint or "")
