"""`inspect`: what is inside a LoRA .safetensors file, whoever made it, and whether it looks healthy.

The header (8-byte little-endian length + JSON) is read and checked here first, so a corrupt or
foreign file gets a clear message before any tensor is read, and a 2 GB base model is recognised
as "not a LoRA" from its key names alone. The health checks of a Kohya-named file are
sdscripts.lora_file's; files in the diffusers/PEFT naming get the checks that apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap import codec, rundir
from kohya_wrap.codec import Record, RecordError
from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.fsutil import sha256_file
from kohya_wrap.rundir import RunManifest
from kohya_wrap.safetensors_header import METADATA_KEY, HeaderError, TensorEntry, metadata_text
from kohya_wrap.safetensors_header import read_header as read_safetensors_header

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from kohya_wrap.sdscripts.lora import TrainingInfo

# A LoRA header is a few hundred KB; anything near this is not a safetensors header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
_NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
}

# Kohya (sd-scripts, A1111, ComfyUI) / diffusers attention processors / PEFT adapters.
KOHYA, DIFFUSERS, PEFT = "kohya", "diffusers", "peft"
_DIFFUSERS_MARKERS = (
    ".lora.down.weight",
    ".lora.up.weight",
    ".lora_linear_layer.down.weight",
    ".lora_linear_layer.up.weight",
    "_lora.down.weight",
    "_lora.up.weight",
)
_DIFFUSERS_UP = (".lora.up.weight", ".lora_linear_layer.up.weight", "_lora.up.weight")
_PEFT_MARKERS = (".lora_A.", ".lora_B.")
_LYCORIS_MARKERS = (".hada_w1_a", ".lokr_w1", ".lokr_w1_a", ".oft_blocks", ".lora_mid.weight")


class LoraFileError(KohyaWrapError):
    """A file is not a readable LoRA .safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    path: Path
    size: int
    data_start: int  # file offset of the first tensor byte
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]


def _corrupt(path: Path, what: str) -> LoraFileError:
    return LoraFileError(
        f"{path} is not a valid safetensors file: {what}.",
        "The file may be truncated or damaged (an interrupted download or save); get it again.",
    )


def read_header(path: Path) -> Header:
    """The checked header of a safetensors file, or LoraFileError saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise LoraFileError(
            f"{path} is a folder, not a LoRA file.",
            "Give one LoRA .safetensors file (a run's are in its output/ folder).",
        )
    if not path.is_file():
        raise LoraFileError(f"{path} does not exist or is not a file.", "Give the path of a LoRA .safetensors file.")
    size = path.stat().st_size
    try:
        header, data_start = read_safetensors_header(path)
    except HeaderError as e:
        with open(path, "rb") as f:
            head = f.read(8)
        # checked only now: a plausible header length may start with any byte
        if len(head) == 8:
            if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
                raise LoraFileError(
                    f"{path} is a pickled PyTorch file (.ckpt/.pt), not safetensors.",
                    "kohya-wrap reads only .safetensors: the pickle format carries no metadata and loading it can run code. "
                    "Convert it to .safetensors with a tool you trust, or train it again saving .safetensors.",
                ) from None
            if path.suffix.lower() != ".safetensors":
                raise LoraFileError(
                    f"{path} is not a safetensors file (its first bytes are no safetensors header).",
                    "Give a LoRA .safetensors file.",
                ) from None
        raise _corrupt(path, str(e)) from None
    length = data_start - 8
    try:
        metadata = metadata_text(header)
    except HeaderError as e:
        raise _corrupt(path, str(e)) from None
    header.pop(METADATA_KEY, None)
    data_size = size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    for name, value in header.items():
        try:
            entry = codec.convert(value, TensorEntry, source=name)
        except RecordError:
            raise _corrupt(path, f"tensor {name!r} has no valid dtype/shape/data_offsets") from None
        dtype, shape, (begin, end) = entry.dtype, entry.shape, entry.data_offsets
        if not 0 <= begin <= end <= data_size:
            raise _corrupt(
                path, f"tensor {name!r} lies beyond the end of the file (bytes {begin}-{end} of {data_size})"
            )
        count = 1
        for d in shape:
            count *= d
        if dtype in _DTYPE_SIZES and count * _DTYPE_SIZES[dtype] != end - begin:
            raise _corrupt(path, f"tensor {name!r} ({dtype} {list(shape)}) does not match its {end - begin} bytes")
        tensors[name] = TensorInfo(dtype, shape, begin, end)
    return Header(path, size, 8 + length, metadata, tensors)


def naming_of(keys: list[str]) -> str | None:
    """Which LoRA key convention a file uses, or None when no key looks like a LoRA's."""
    from kohya_wrap.sdscripts.lora import is_kohya_key

    if any(is_kohya_key(k) for k in keys):
        return KOHYA
    if any(m in k for k in keys for m in _PEFT_MARKERS):
        return PEFT
    if any(k.endswith(_DIFFUSERS_MARKERS) for k in keys):
        return DIFFUSERS
    return None


@dataclass(frozen=True)
class HealthCheck:
    name: str
    ok: bool
    detail: str
    informational: bool = False  # shown, but not part of "healthy" (e.g. no ss_* metadata)


@dataclass(frozen=True)
class LoraInspection:
    path: Path
    size_bytes: int
    sha256: str
    naming: str
    variant: str | None  # "LyCORIS" for LoHa/LoKr/... files in Kohya naming
    tensors: int
    dtypes: tuple[str, ...]
    unet_modules: int
    text_encoder_modules: int
    ranks: tuple[int, ...]  # from the down/A weights' first dimension
    alphas: tuple[float, ...]  # from the .alpha tensors (Kohya naming only)
    info: TrainingInfo | None  # None without ss_* metadata
    metadata: dict[str, str]
    run_manifest: RunManifest | None
    run_manifest_path: Path | None
    checks: tuple[HealthCheck, ...]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks if not c.informational)


class InspectionRecord(Record, frozen=True):
    """What `inspect --json` prints of a LoRA file (inspection_record makes it)."""

    path: Path
    size_bytes: int
    sha256: str
    naming: str
    variant: str | None
    tensors: int
    dtypes: tuple[str, ...]
    unet_modules: int
    text_encoder_modules: int
    ranks: tuple[int, ...]
    alphas: tuple[float, ...]
    training: TrainingInfo | None  # the file's ss_* training metadata, as sdscripts reads it
    metadata: dict[str, str]
    run_manifest: RunManifest | None  # the run.json beside the file
    run_manifest_path: Path | None
    healthy: bool
    checks: tuple[HealthCheck, ...]


def inspection_record(i: LoraInspection) -> InspectionRecord:
    return InspectionRecord(
        path=i.path,
        size_bytes=i.size_bytes,
        sha256=i.sha256,
        naming=i.naming,
        variant=i.variant,
        tensors=i.tensors,
        dtypes=i.dtypes,
        unet_modules=i.unet_modules,
        text_encoder_modules=i.text_encoder_modules,
        ranks=i.ranks,
        alphas=i.alphas,
        training=i.info,
        metadata=i.metadata,
        run_manifest=i.run_manifest,
        run_manifest_path=i.run_manifest_path,
        healthy=i.healthy,
        checks=i.checks,
    )


def _modules(keys: list[str], naming: str) -> tuple[int, int]:
    """(U-Net modules, text-encoder modules) named by the keys."""
    from kohya_wrap.sdscripts.lora import kohya_part

    unet: set[str] = set()
    te: set[str] = set()
    for k in keys:
        if naming == KOHYA:
            module = k.split(".", 1)[0]
            part = kohya_part(module)  # lora_unet_, and lora_te_ or SDXL's lora_te1_/lora_te2_
            if part == "unet":
                unet.add(module)
            elif part == "text_encoder":
                te.add(module)
            continue
        marker = next((m for m in (".lora_A.", ".lora_B.", ".lora.", ".lora_linear_layer.", "_lora.") if m in k), None)
        if marker is not None:
            module = k.split(marker, 1)[0]
            (te if "text_encoder" in module else unet).add(module)
    return len(unet), len(te)


def _ranks(header: Header, naming: str) -> tuple[int, ...]:
    down = (
        (".lora_down.weight",)
        if naming == KOHYA
        else (".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight", "_lora.down.weight")
    )
    return tuple(sorted({t.shape[0] for k, t in header.tensors.items() if k.endswith(down) and t.shape}))


def _array(header: Header, name: str) -> NDArray[np.float32]:
    """One tensor as float32 numpy, read straight from its bytes (bf16 widened; numpy has none)."""
    import numpy as np

    t = header.tensors[name]
    with open(header.path, "rb") as f:
        f.seek(header.data_start + t.begin)
        raw = f.read(t.end - t.begin)
    if t.dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(t.shape)
    # an integer alpha is stored as an integer tensor (sd-scripts with network_alpha = 1, not 1.0)
    dtype = _NUMPY_DTYPES.get(t.dtype)
    if dtype is None:
        raise LoraFileError(
            f"{header.path}: tensor {name!r} has dtype {t.dtype}, which kohya-wrap cannot read.",
            "This is not a LoRA kohya-wrap can check.",
        )
    return np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(t.shape)


def _alphas(header: Header) -> tuple[float, ...]:
    values = set()
    for name, t in header.tensors.items():
        if name.endswith(".alpha") and t.shape in ((), (1,)):
            values.add(round(float(_array(header, name).reshape(-1)[0]), 6))
    return tuple(sorted(values))


def _foreign_checks(header: Header, naming: str) -> list[HealthCheck]:
    """Checks for diffusers/PEFT-named files, which sd-scripts' verifier does not cover."""
    import numpy as np

    up = (".lora_B.weight",) if naming == PEFT else _DIFFUSERS_UP
    non_finite, up_max = [], 0.0
    for name, t in header.tensors.items():
        if t.dtype not in ("F32", "F16", "BF16", "F64"):
            continue
        array = _array(header, name)
        if not np.isfinite(array).all():
            non_finite.append(name)
        elif name.endswith(up) and array.size:
            up_max = max(up_max, float(np.abs(array).max()))
    label = "PEFT (lora_A/lora_B)" if naming == PEFT else "diffusers (lora.down/lora.up)"
    return [
        HealthCheck(
            "key_names",
            True,
            f"{label} naming, not Kohya's: sd-scripts and some UIs cannot load it as is",
            informational=True,
        ),
        HealthCheck(
            "finite",
            not non_finite,
            "no NaN or infinite values"
            if not non_finite
            else f"{len(non_finite)} tensors hold NaN/inf, e.g. {non_finite[:3]}",
        ),
        HealthCheck(
            "trained",
            up_max > 0.0,
            f"up (B) weights moved off zero (max |w| {up_max:.3g})"
            if up_max > 0
            else "every up (B) weight is zero: the LoRA changes nothing",
        ),
    ]


def _kohya_checks(header: Header) -> list[HealthCheck]:
    from kohya_wrap.sdscripts.lora import verify_found_lora

    report = verify_found_lora(header.path, list(header.tensors), header.metadata)
    return [HealthCheck(c.name, c.ok, c.detail, informational=c.name.startswith("metadata")) for c in report.checks]


def _run_manifest(path: Path) -> tuple[RunManifest | None, Path | None]:
    """Our run.json, when the file sits in a kohya-wrap run's output folder (RUN_DIR/output/x.safetensors)."""
    candidate = rundir.paths(path.resolve().parent.parent).run_json
    manifest = rundir.read_manifest(candidate)
    return (manifest, candidate) if manifest is not None else (None, None)


def inspect_lora(path: Path) -> LoraInspection:
    from kohya_wrap.sdscripts.lora import interpret

    path = Path(path).expanduser()
    header = read_header(path)
    keys = list(header.tensors)
    naming = naming_of(keys)
    if naming is None:
        sample = ", ".join(keys[:3]) or "none"
        raise LoraFileError(
            f"{path} is not a LoRA: none of its {len(keys)} tensors is named like one (e.g. {sample}).",
            "It may be a base model, a VAE or an embedding; inspect reads LoRA files "
            "(Kohya lora_unet_*/lora_te_*, diffusers or PEFT naming).",
        )
    variant = "LyCORIS" if any(m in k for k in keys for m in _LYCORIS_MARKERS) else None
    unet, te = _modules(keys, naming)
    if naming == KOHYA and variant is None:
        checks = _kohya_checks(header)
    else:
        checks = _foreign_checks(header, naming)
    has_ss = any(k.startswith("ss_") for k in header.metadata)
    manifest, manifest_path = _run_manifest(path)
    return LoraInspection(
        path=path.resolve(),
        size_bytes=header.size,
        sha256=sha256_file(path),
        naming=naming,
        variant=variant,
        tensors=len(keys),
        dtypes=tuple(sorted({t.dtype for t in header.tensors.values()})),
        unet_modules=unet,
        text_encoder_modules=te,
        ranks=_ranks(header, naming),
        alphas=_alphas(header) if naming == KOHYA else (),
        info=interpret(header.metadata) if has_ss or header.metadata else None,
        metadata=dict(sorted(header.metadata.items())),
        run_manifest=manifest,
        run_manifest_path=manifest_path,
        checks=tuple(checks),
    )
