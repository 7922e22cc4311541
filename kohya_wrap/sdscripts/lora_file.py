"""Checking a LoRA file that train_network.py wrote (docs/sd-scripts.md#lora-metadata, #lora-tensor-keys).

verify_lora() opens it with safetensors (numpy: no torch needed), and checks, each as a named
Check: Kohya's key naming, the SD1.5 module counts of networks.lora, finite values, up weights
that training moved off zero, and the ss_* metadata against what the plan asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from kohya_wrap import codec
from kohya_wrap.safetensors_header import HeaderError, TensorEntry, metadata_text, read_header

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

# networks/lora.py: LoRANetwork.LORA_PREFIX_UNET / LORA_PREFIX_TEXT_ENCODER, and for SDXL's two text
# encoders LORA_PREFIX_TEXT_ENCODER1/2 ("lora_te1", "lora_te2"); each module name is prefix + "_" + path.
UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIX = "lora_te_"
SDXL_TEXT_ENCODER_PREFIXES = ("lora_te1_", "lora_te2_")
TEXT_ENCODER_PREFIXES = (TEXT_ENCODER_PREFIX, *SDXL_TEXT_ENCODER_PREFIXES)
KOHYA_PREFIXES = (UNET_PREFIX, *TEXT_ENCODER_PREFIXES)
SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
# networks.lora on SD1.5 without conv_dim: every Linear/1x1 conv in the U-Net's transformer blocks,
# and the CLIP attention and MLP projections of the 12 text-encoder layers.
SD15_UNET_MODULES = 192
SD15_TEXT_ENCODER_MODULES = 72
_KEY = re.compile(
    r"^(lora_unet|lora_te|lora_te1|lora_te2)_[A-Za-z0-9_]+"
    r"(\.lora_down\.weight|\.lora_up\.weight|\.alpha)$"
)


def is_kohya_key(key: str) -> bool:
    """A tensor named in Kohya's LoRA convention (SD1.x/2.x lora_te_, SDXL lora_te1_/lora_te2_)."""
    return key.startswith(KOHYA_PREFIXES)


def is_text_encoder_module(name: str) -> bool:
    return name.startswith(TEXT_ENCODER_PREFIXES)


def is_sdxl(keys: list[str]) -> bool:
    """SDXL LoRAs name their two text encoders lora_te1_/lora_te2_; SD1.5 has one (lora_te_)."""
    return any(k.startswith(SDXL_TEXT_ENCODER_PREFIXES) for k in keys)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Expectation:
    """What the plan asked for. None: not checked."""

    steps: int | None = None
    network_dim: int | None = None
    network_alpha: float | None = None
    base_model_sha256: str | None = None
    train_unet: bool = True
    train_text_encoder: bool = True
    conv: bool = False  # network_args conv_dim=...: more U-Net modules, count not checked
    sdxl: bool = False  # an SDXL LoRA (inspect): SD1.5's module counts do not apply


@dataclass(frozen=True)
class LoraReport:
    path: str
    checks: tuple[Check, ...]
    tensors: int = 0
    unet_modules: int = 0
    text_encoder_modules: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


def read_metadata(path: Path) -> dict[str, str]:
    """The __metadata__ of a safetensors header, {} when it is no object (ValueError when the file is not
    a safetensors file). A value written as JSON rather than as a string is that JSON's text."""
    header, _ = read_header(path)
    try:
        return metadata_text(header)
    except HeaderError:
        return {}


class _SafeOpen(Protocol):
    """What is used of safetensors' safe_open handle (its stub types nothing)."""

    def metadata(self) -> dict[str, str] | None: ...
    def keys(self) -> list[str]: ...
    def get_tensor(self, name: str) -> NDArray[np.generic]: ...


def _read_bf16(path: Path, key: str) -> NDArray[np.float32]:
    """numpy has no bfloat16: widen the raw 16-bit words to float32 (bf16 is float32's top half)."""
    import numpy as np

    header, data_start = read_header(path)
    entry = codec.convert(header[key], TensorEntry, source=f"{path}: {key}")
    begin, end = entry.data_offsets
    with open(path, "rb") as f:
        f.seek(data_start + begin)
        words = np.frombuffer(f.read(end - begin), dtype="<u2")
    return (words.astype(np.uint32) << 16).view(np.float32).reshape(entry.shape)


def _tensor(handle: _SafeOpen, path: Path, key: str) -> NDArray[np.float32]:
    """A tensor as a float32 numpy array."""
    import numpy as np

    try:
        array = handle.get_tensor(key)
    except (TypeError, ValueError, RuntimeError):
        array = _read_bf16(path, key)
    return array.astype(np.float32, copy=False)


def verify_lora(path: Path, expect: Expectation) -> LoraReport:
    path = Path(path)
    try:
        from safetensors import safe_open

        handle = cast("_SafeOpen", safe_open(str(path), framework="numpy"))  # type: ignore[no-untyped-call,unused-ignore]
    except Exception as e:  # noqa: BLE001  any failure to open is the finding
        return LoraReport(str(path), (Check("opens", False, f"safetensors cannot open it: {e}"),))
    metadata = dict(handle.metadata() or {})
    keys = list(handle.keys())
    checks = [Check("opens", True, f"{len(keys)} tensors"), _key_check(keys)]
    unet, te, module_checks = _module_checks(keys, expect)
    checks += module_checks
    checks += _value_checks(handle, path, keys)
    checks.extend(_metadata_checks(metadata, expect))
    return LoraReport(
        str(path), tuple(checks), tensors=len(keys), unet_modules=unet, text_encoder_modules=te, metadata=metadata
    )


def _key_check(keys: list[str]) -> Check:
    bad_keys = [k for k in keys if not _KEY.match(k)]
    return Check(
        "key_names",
        not bad_keys and bool(keys),
        "all keys follow lora_unet_*/lora_te_* (SDXL: lora_te1_*/lora_te2_*) + .lora_down.weight/.lora_up.weight/.alpha"
        if not bad_keys and keys
        else f"{len(bad_keys)} unexpected keys, e.g. {bad_keys[:3]}",
    )


def _module_checks(keys: list[str], expect: Expectation) -> tuple[int, int, list[Check]]:
    """(U-Net modules, text-encoder modules, the checks of their tensors and counts)."""
    modules: dict[str, set[str]] = {}
    for k in keys:
        for suffix in SUFFIXES:
            if k.endswith(suffix):
                modules.setdefault(k[: -len(suffix)], set()).add(suffix)
    incomplete = [m for m, s in modules.items() if s != set(SUFFIXES)]
    unet = sum(1 for m in modules if m.startswith(UNET_PREFIX))
    te = sum(1 for m in modules if is_text_encoder_module(m))
    checks = [
        Check(
            "modules_complete",
            not incomplete,
            "every module has down, up and alpha"
            if not incomplete
            else f"{len(incomplete)} modules lack a tensor, e.g. {incomplete[:3]}",
        )
    ]
    want_unet = SD15_UNET_MODULES if expect.train_unet else 0
    want_te = SD15_TEXT_ENCODER_MODULES if expect.train_text_encoder else 0
    if expect.sdxl:
        detail = f"SDXL LoRA: U-Net {unet}, text encoders {te} (SD1.5's counts are not checked)"
        checks.append(Check("module_counts", True, detail))
    else:
        counts_ok = te == want_te and (unet == want_unet or (expect.conv and unet > want_unet))
        detail = (
            f"U-Net {unet} (expected {want_unet}{' or more' if expect.conv else ''}), "
            f"text encoder {te} (expected {want_te})"
        )
        checks.append(Check("module_counts", counts_ok, detail))
    return unet, te, checks


def _value_checks(handle: _SafeOpen, path: Path, keys: list[str]) -> list[Check]:
    """Finite values everywhere, and up weights that training moved off zero."""
    import numpy as np

    non_finite: list[str] = []
    up_max = 0.0
    for k in keys:
        array = _tensor(handle, path, k)
        finite = np.isfinite(array)
        if not finite.all():
            non_finite.append(k)
            array = array[finite]
        if k.endswith(".lora_up.weight") and array.size:
            up_max = max(up_max, float(np.abs(array).max()))
    return [
        Check(
            "finite",
            not non_finite,
            "no NaN or infinite values"
            if not non_finite
            else f"{len(non_finite)} tensors hold NaN/inf, e.g. {non_finite[:3]}",
        ),
        Check(
            "trained",
            up_max > 0.0,
            f"up weights moved off zero (max |w| {up_max:.3g})"
            if up_max > 0
            else "every lora_up weight is zero: training changed nothing",
        ),
    ]


def _metadata_checks(metadata: dict[str, str], expect: Expectation) -> list[Check]:
    checks = []
    ss_keys = [k for k in metadata if k.startswith("ss_")]
    checks.append(
        Check(
            "metadata_present",
            bool(ss_keys) and "ss_network_module" in metadata,
            f"{len(ss_keys)} ss_* keys"
            if ss_keys
            else "no ss_* metadata (saved with --no_metadata, or not by sd-scripts)",
        )
    )
    if expect.steps is not None:
        steps = metadata.get("ss_steps") or metadata.get("ss_max_train_steps")
        checks.append(Check("metadata_steps", steps == str(expect.steps), f"ss_steps {steps} (plan: {expect.steps})"))
    if expect.network_dim is not None:
        dim = metadata.get("ss_network_dim")
        checks.append(
            Check("metadata_dim", dim == str(expect.network_dim), f"ss_network_dim {dim} (plan: {expect.network_dim})")
        )
    if expect.network_alpha is not None:
        alpha = metadata.get("ss_network_alpha")
        try:
            same = alpha is not None and float(alpha) == float(expect.network_alpha)
        except ValueError:
            same = False
        checks.append(Check("metadata_alpha", same, f"ss_network_alpha {alpha} (plan: {expect.network_alpha})"))
    if expect.base_model_sha256 is not None:
        got = metadata.get("ss_new_sd_model_hash")
        checks.append(
            Check(
                "metadata_base_model",
                got == expect.base_model_sha256,
                f"ss_new_sd_model_hash {got} (base model: {expect.base_model_sha256})",
            )
        )
    return checks


def expectation_from_values(values: dict[str, object], steps: int | None, base_model_sha256: str | None) -> Expectation:
    """The checks a plan's resolved sd-scripts values call for."""
    network_args = values.get("network_args") or []
    conv = any(str(a).startswith("conv_dim") for a in network_args) if isinstance(network_args, list) else False
    dim = values.get("network_dim")
    alpha = values.get("network_alpha")
    return Expectation(
        steps=steps,
        network_dim=int(dim) if isinstance(dim, (int, float)) else 4,  # sd-scripts: None becomes 4
        network_alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
        base_model_sha256=base_model_sha256,
        train_unet=not values.get("network_train_text_encoder_only"),
        train_text_encoder=not values.get("network_train_unet_only"),
        conv=conv,
    )
