"""A full-size SD1.5 checkpoint with random weights, built offline for `kohya-wrap smoke`.

sd-scripts only loads the exact SD1.5 architecture, so a model for a smoke run has to be full size
even though its weights mean nothing. It is built from the diffusers/transformers model classes
(the [train] extra), renamed to the original single-file layout, and written as fp16 safetensors
into the user cache, once. A sidecar JSON records its size and sha256; a file that no longer
matches is rebuilt.

Memory: the file is streamed tensor by tensor (its header is computed up front from meta-device
models), so the peak is one component in fp32 (the U-Net, about 3.4 GB), not the whole model twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from kohya_wrap import __version__
from kohya_wrap.errors import ModelError, TrainerNotFound
from kohya_wrap.fsutil import atomic_write_json, new_file_mode, sha256_file, user_cache_dir
from kohya_wrap.sdscripts.base_model import (
    CHECKPOINT_KEYS,
    SD15,
    Sd15Architecture,
    TextEncoderShape,
    UNetShape,
    VaeShape,
)

if TYPE_CHECKING:
    from types import ModuleType

    import torch

# A diffusers/transformers constructor argument the configs below give.
ConfigValue = int | float | str | tuple[str, ...] | tuple[int, ...]


class _Model(Protocol):
    """A built component (a torch module of diffusers or transformers): what the builder calls on it."""

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...
    def half(self) -> _Model: ...


# Bump when the builder's output changes for the same architecture and seed: cached files rebuild.
UNET_PREFIX, VAE_PREFIX, TEXT_ENCODER_PREFIX = CHECKPOINT_KEYS.unet, CHECKPOINT_KEYS.vae, CHECKPOINT_KEYS.text_encoder
BUILD_FORMAT = 1
DEFAULT_SEED = 0
MODELS_SUBDIR = "models"
SIDECAR_SCHEMA = 1

_BUG_HINT = "This is a bug in kohya-wrap's smoke model builder; please report it with `kohya-wrap doctor --json`."

# A file written by this builder and no one else; its sidecar is <stem>.json.
_FULL_SIZE_STEM = "sd15-random-fp16"


@dataclass(frozen=True)
class SmokeModel:
    """A base model file in the cache, and whether this call built it."""

    path: Path
    sha256: str
    size: int
    built: bool
    # Why it was built ("missing", "size mismatch", ...); None when an existing file was reused.
    build_reason: str | None
    build_seconds: float | None
    check_seconds: float


@dataclass(frozen=True)
class TensorSpec:
    key: str  # in the original single-file layout
    shape: tuple[int, ...]


# --- architectures --------------------------------------------------------------------------------


def tiny_architecture() -> Sd15Architecture:
    """SD1.5's structure (the same key names, layer counts and vocabulary) at a fraction of the width.

    For tests: builds in about a second. GroupNorm needs channel counts divisible by 32.
    """
    return Sd15Architecture(
        unet=dataclasses.replace(SD15.unet, model_channels=32, context_dim=32, num_heads=2),
        vae=dataclasses.replace(SD15.vae, ch=32),
        text_encoder=dataclasses.replace(
            SD15.text_encoder, hidden_size=32, intermediate_size=64, num_heads=2, projection_dim=32
        ),
    )


def unet_config(shape: UNetShape) -> dict[str, ConfigValue]:
    levels = range(len(shape.channel_mult))
    return {
        "sample_size": shape.sample_size,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "down_block_types": tuple(
            "CrossAttnDownBlock2D" if level in shape.attention_levels else "DownBlock2D" for level in levels
        ),
        "up_block_types": tuple(
            "CrossAttnUpBlock2D" if level in shape.attention_levels else "UpBlock2D" for level in reversed(levels)
        ),
        "block_out_channels": tuple(shape.model_channels * mult for mult in shape.channel_mult),
        "layers_per_block": shape.num_res_blocks,
        "cross_attention_dim": shape.context_dim,
        # diffusers' historical name: for SD1.5 this number is the count of heads.
        "attention_head_dim": shape.num_heads,
    }


def vae_config(shape: VaeShape) -> dict[str, ConfigValue]:
    levels = len(shape.ch_mult)
    return {
        "sample_size": shape.resolution,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(shape.ch * mult for mult in shape.ch_mult),
        "latent_channels": shape.z_channels,
        "layers_per_block": shape.num_res_blocks,
    }


def text_encoder_config(shape: TextEncoderShape) -> dict[str, ConfigValue]:
    return {
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "max_position_embeddings": shape.max_positions,
        "hidden_act": shape.hidden_act,
        "layer_norm_eps": 1e-5,
        "projection_dim": shape.projection_dim,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


# --- diffusers names -> original single-file names --------------------------------------------------

_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_BLOCK = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)")
_UNET_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_PARAM = re.compile(r"(.+)\.(weight|bias)")


class UnmappedKey(ValueError):
    """A diffusers/transformers parameter this builder has no original-layout name for."""


def _unet_resnet(rest: str) -> str:
    module, param = _split_param(rest)
    if module not in _UNET_RESNET_PARTS:
        raise UnmappedKey(rest)
    return f"{_UNET_RESNET_PARTS[module]}.{param}"


def _split_param(key: str) -> tuple[str, str]:
    match = _PARAM.fullmatch(key)
    if not match:
        raise UnmappedKey(key)
    return match.group(1), match.group(2)


def unet_key(key: str, shape: UNetShape) -> str:
    """The original (LDM `openaimodel.UNetModel`) name of a diffusers UNet2DConditionModel parameter.

    The original numbers its blocks flat: input_blocks[0] is conv_in, then per level
    `num_res_blocks` res(+attention) blocks and a downsampler; output_blocks mirror it with one more
    block per level, the upsampler sitting after the level's last res(+attention) pair.
    """
    per_level = shape.num_res_blocks + 1
    levels = len(shape.channel_mult)
    module, param = _split_param(key)
    if module in _UNET_TOP_LEVEL:
        return f"{UNET_PREFIX}{_UNET_TOP_LEVEL[module]}.{param}"

    if match := _UNET_BLOCK.fullmatch(key):
        direction, kind, rest = match.group(1), match.group(3), match.group(5)
        level, index = int(match.group(2)), int(match.group(4))
        if direction == "down":
            block = 1 + level * per_level + index
            if kind == "resnets":
                return f"{UNET_PREFIX}input_blocks.{block}.0.{_unet_resnet(rest)}"
            if kind == "attentions":
                return f"{UNET_PREFIX}input_blocks.{block}.1.{rest}"
            if kind == "downsamplers" and rest.startswith("conv."):
                return f"{UNET_PREFIX}input_blocks.{(level + 1) * per_level}.0.op.{rest[len('conv.') :]}"
        else:
            block = level * per_level + index
            if kind == "resnets":
                return f"{UNET_PREFIX}output_blocks.{block}.0.{_unet_resnet(rest)}"
            if kind == "attentions":
                return f"{UNET_PREFIX}output_blocks.{block}.1.{rest}"
            if kind == "upsamplers":
                has_attention = (levels - 1 - level) in shape.attention_levels
                last = level * per_level + shape.num_res_blocks
                return f"{UNET_PREFIX}output_blocks.{last}.{2 if has_attention else 1}.{rest}"
        raise UnmappedKey(key)

    if match := _UNET_MID.fullmatch(key):
        kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
        if kind == "resnets":
            return f"{UNET_PREFIX}middle_block.{2 * index}.{_unet_resnet(rest)}"
        return f"{UNET_PREFIX}middle_block.1.{rest}"
    raise UnmappedKey(key)


_VAE_TOP_LEVEL = {
    "conv_in": "conv_in",
    "conv_out": "conv_out",
    "conv_norm_out": "norm_out",
}
_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_VAE_BLOCK = re.compile(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)")
_VAE_MID = re.compile(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_VAE_TOP = re.compile(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)")


def vae_key(key: str, shape: VaeShape) -> str:
    """The original (LDM `AutoencoderKL`) name of a diffusers AutoencoderKL parameter.

    The original decoder numbers its levels from the lowest resolution up (`up.3` is diffusers'
    `up_blocks.0`).
    """
    levels = len(shape.ch_mult)
    if key.split(".")[0] in ("quant_conv", "post_quant_conv"):
        return VAE_PREFIX + key
    if match := _VAE_TOP.fullmatch(key):
        return f"{VAE_PREFIX}{match.group(1)}.{_VAE_TOP_LEVEL[match.group(2)]}.{match.group(3)}"
    if match := _VAE_BLOCK.fullmatch(key):
        coder, kind, index, rest = match.group(1), match.group(4), match.group(5), match.group(6)
        level = int(match.group(3))
        if coder == "encoder" and kind == "resnets":
            return f"{VAE_PREFIX}encoder.down.{level}.block.{index}.{_vae_resnet(rest)}"
        if coder == "encoder" and kind == "downsamplers":
            return f"{VAE_PREFIX}encoder.down.{level}.downsample.{rest}"
        original_level = levels - 1 - level
        if coder == "decoder" and kind == "resnets":
            return f"{VAE_PREFIX}decoder.up.{original_level}.block.{index}.{_vae_resnet(rest)}"
        if coder == "decoder" and kind == "upsamplers":
            return f"{VAE_PREFIX}decoder.up.{original_level}.upsample.{rest}"
        raise UnmappedKey(key)
    if match := _VAE_MID.fullmatch(key):
        coder, kind, index, rest = match.group(1), match.group(2), int(match.group(3)), match.group(4)
        if kind == "resnets":
            return f"{VAE_PREFIX}{coder}.mid.block_{index + 1}.{_vae_resnet(rest)}"
        module, param = _split_param(rest)
        if module not in _VAE_ATTENTION_PARTS:
            raise UnmappedKey(key)
        return f"{VAE_PREFIX}{coder}.mid.attn_1.{_VAE_ATTENTION_PARTS[module]}.{param}"
    raise UnmappedKey(key)


def _vae_resnet(rest: str) -> str:
    module, param = _split_param(rest)
    if module == "conv_shortcut":
        return f"nin_shortcut.{param}"
    if module in ("norm1", "conv1", "norm2", "conv2"):
        return rest
    raise UnmappedKey(rest)


def vae_shape_in_file(original_key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The original VAE's mid-block attention projections are 1x1 convolutions, diffusers' are linear."""
    if ".mid.attn_1." in original_key and original_key.endswith(".weight") and len(shape) == 2:
        return (*shape, 1, 1)
    return shape


def text_encoder_key(key: str) -> str:
    return TEXT_ENCODER_PREFIX + key


# --- building -----------------------------------------------------------------------------------------


def _import_train_libraries() -> tuple[
    ModuleType,
    Callable[[UNetShape], _Model],
    Callable[[VaeShape], _Model],
    Callable[[TextEncoderShape], _Model],
]:
    try:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel
    except ImportError as e:
        raise TrainerNotFound(
            f"Building the smoke base model needs torch, diffusers and transformers; {e.name or e} is not installed.",
            "Install the training extra: pip install 'kohya-wrap[train]' (and torch for your platform first).",
        ) from e

    def text_encoder(shape: TextEncoderShape) -> _Model:
        return CLIPTextModel(CLIPTextConfig(**text_encoder_config(shape)))

    # diffusers' model classes type-check as unrelated to torch.nn.Module (their members are untyped).
    def unet(shape: UNetShape) -> _Model:
        return cast("_Model", UNet2DConditionModel(**unet_config(shape)))

    def vae(shape: VaeShape) -> _Model:
        return cast("_Model", AutoencoderKL(**vae_config(shape)))

    return torch, unet, vae, text_encoder


@dataclass(frozen=True)
class _Component:
    name: str
    make: Callable[[], _Model]
    rename: Callable[[str], str]
    reshape: Callable[[str, tuple[int, ...]], tuple[int, ...]]


def _components(arch: Sd15Architecture) -> list[_Component]:
    _, make_unet, make_vae, make_text_encoder = _import_train_libraries()
    keep = lambda _key, shape: shape  # noqa: E731  # only the VAE attention changes shape
    return [
        _Component("unet", lambda: make_unet(arch.unet), lambda k: unet_key(k, arch.unet), keep),
        _Component("vae", lambda: make_vae(arch.vae), lambda k: vae_key(k, arch.vae), vae_shape_in_file),
        _Component("text_encoder", lambda: make_text_encoder(arch.text_encoder), text_encoder_key, keep),
    ]


def checkpoint_layout(arch: Sd15Architecture = SD15) -> list[TensorSpec]:
    """Every tensor of the single-file checkpoint, in file order, computed without allocating weights."""
    torch, *_ = _import_train_libraries()
    specs: list[TensorSpec] = []
    for component in _components(arch):
        with torch.device("meta"):
            module = component.make()
        specs.extend(_component_specs(component, module.state_dict()))
        del module
    return specs


def _original_key(component: _Component, key: str) -> str:
    try:
        return component.rename(key)
    except UnmappedKey as e:
        import diffusers
        import transformers

        raise ModelError(
            f"Cannot build the smoke base model: the {component.name} parameter {key} has no single-file name "
            f"(diffusers {diffusers.__version__}, transformers {transformers.__version__}).",
            "Install the versions the training extra pins: pip install 'kohya-wrap[train]'.",
        ) from e


def _component_specs(component: _Component, state: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    specs = []
    for key in sorted(state):
        original = _original_key(component, key)
        specs.append(TensorSpec(original, component.reshape(original, tuple(state[key].shape))))
    return specs


def _safetensors_header(specs: list[TensorSpec], metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The safetensors header for fp16 tensors laid out back to back in `specs` order."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    sizes = {}
    for spec in specs:
        size = 2
        for dim in spec.shape:
            size *= dim
        header[spec.key] = {"dtype": "F16", "shape": list(spec.shape), "data_offsets": [offset, offset + size]}
        sizes[spec.key] = size
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The format pads the header with spaces so the tensor data starts 8-byte aligned.
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded, sizes


def write_checkpoint(path: Path, arch: Sd15Architecture = SD15, seed: int = DEFAULT_SEED) -> str:
    """Build the random model component by component and stream it to `path` atomically; return its sha256."""
    torch, *_ = _import_train_libraries()
    if sys.byteorder != "little":
        raise ModelError("Building the smoke base model needs a little-endian machine (safetensors is little-endian).")
    components = _components(arch)
    specs = checkpoint_layout(arch)
    header, sizes = _safetensors_header(specs, {"format": "pt", "kohya_wrap_smoke": "random weights, not a real model"})
    order = [spec.key for spec in specs]

    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(header)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; the cached model keeps the umask's mode
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            written = 0
            for index, component in enumerate(components):
                torch.manual_seed(seed + index)
                for key, data in _fp16_tensors(torch, component):
                    if written >= len(order) or key != order[written] or len(data) != sizes[key]:
                        raise ModelError(
                            f"Smoke base model builder: tensor {key} does not match the planned layout.", _BUG_HINT
                        )
                    out.write(data)
                    digest.update(data)
                    written += 1
            if written != len(order):
                raise ModelError(
                    f"Smoke base model builder: wrote {written} of {len(order)} planned tensors.", _BUG_HINT
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _fp16_tensors(torch: ModuleType, component: _Component) -> Iterator[tuple[str, memoryview]]:
    """(original key, raw fp16 bytes) in layout order; the fp32 module lives only inside this generator."""
    with torch.no_grad():
        module = component.make().half()
        state = module.state_dict()
        for key in sorted(state):
            original = _original_key(component, key)
            tensor = state[key].contiguous()
            yield original, tensor.reshape(-1).numpy().data.cast("B")
        del state, module


# --- the cache ----------------------------------------------------------------------------------------


def models_dir() -> Path:
    return user_cache_dir() / MODELS_SUBDIR


def checkpoint_stem(arch: Sd15Architecture) -> str:
    if arch == SD15:
        return _FULL_SIZE_STEM
    tag = hashlib.sha256(repr(arch).encode()).hexdigest()[:10]
    return f"{_FULL_SIZE_STEM}-custom-{tag}"


def _identity(arch: Sd15Architecture, seed: int) -> dict[str, object]:
    return {"build_format": BUILD_FORMAT, "seed": seed, "architecture": dataclasses.asdict(arch)}


def _reason_to_rebuild(
    path: Path, sidecar: Path, identity: dict[str, object], verify_hash: bool
) -> tuple[str | None, str | None]:
    """(why the cached file cannot be reused or None, its recorded sha256)."""
    if not path.is_file():
        return "missing", None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        recorded_size, recorded_sha = int(record["size"]), str(record["sha256"])
        recorded_identity = {key: record[key] for key in identity}
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid checksum record", None
    # JSON turns tuples into lists; compare in the same form.
    if json.loads(json.dumps(identity)) != recorded_identity:
        return "built by another builder version or for another architecture", None
    if path.stat().st_size != recorded_size:
        return "size mismatch", None
    if verify_hash and sha256_file(path) != recorded_sha:
        return "sha256 mismatch", None
    return None, recorded_sha


@contextlib.contextmanager
def _build_lock(directory: Path, stem: str) -> Iterator[None]:
    """Two smoke runs starting together build the model once; the second waits, then reuses it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the atomic rename still keeps the file whole.
        yield
        return
    with open(directory / f".{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_base_model(
    directory: Path | None = None,
    arch: Sd15Architecture = SD15,
    seed: int = DEFAULT_SEED,
    verify_hash: bool = True,
) -> SmokeModel:
    """The cached random SD1.5 checkpoint, built first if missing or damaged.

    `verify_hash=False` trusts a file whose size matches its record (skips reading 2 GB).
    """
    directory = Path(directory) if directory is not None else models_dir()
    stem = checkpoint_stem(arch)
    path = directory / f"{stem}.safetensors"
    sidecar = directory / f"{stem}.json"
    identity = _identity(arch, seed)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(
            f"Cannot create the smoke model cache folder {directory}: {e.strerror or e}.",
            "Set KOHYA_WRAP_HOME to a writable folder.",
        ) from e
    with _build_lock(directory, stem):
        started = time.monotonic()
        reason, sha = _reason_to_rebuild(path, sidecar, identity, verify_hash)
        check_seconds = time.monotonic() - started
        if reason is None and sha is not None:  # sha is always set when there is no reason; for the type checker
            return SmokeModel(path, sha, path.stat().st_size, False, None, None, check_seconds)
        return _build(path, sidecar, arch, seed, reason, check_seconds)


def _build(
    path: Path, sidecar: Path, arch: Sd15Architecture, seed: int, reason: str | None, check_seconds: float
) -> SmokeModel:
    """Write the checkpoint, then its sidecar record (so a half-written checkpoint never has one)."""
    started = time.monotonic()
    sidecar.unlink(missing_ok=True)
    try:
        sha = write_checkpoint(path, arch, seed)
    except OSError as e:
        raise ModelError(
            f"Could not write the smoke base model to {path}: {e.strerror or e}.",
            "It needs about 2 GB of free disk space there; free some, or set KOHYA_WRAP_HOME to another folder.",
        ) from e
    build_seconds = time.monotonic() - started
    size = path.stat().st_size
    atomic_write_json(
        sidecar,
        {
            "schema": SIDECAR_SCHEMA,
            "file": path.name,
            "size": size,
            "sha256": sha,
            **_identity(arch, seed),
            "built_by": f"kohya-wrap {__version__}",
            "build_seconds": round(build_seconds, 1),
            "note": "random weights: a stand-in for SD1.5 to test the training chain, not a usable model",
        },
    )
    return SmokeModel(path, sha, size, True, reason, build_seconds, check_seconds)
