"""`kohya-wrap doctor`: can this machine train? Each check is data; the CLI renders it.

torch is probed in a subprocess of the same interpreter (the one that will run the trainer),
so the doctor itself never imports it and a broken torch/torchvision pair is reported, not raised.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from kohya_wrap.errors import TrainerNotFound
from kohya_wrap.sdscripts import PINNED_COMMIT, PINNED_TAG
from kohya_wrap.sdscripts.checkout import TRAINER_NEEDS, locate

TRAIN_REQUIREMENTS = TRAINER_NEEDS.packages  # sd-scripts' pins, as doctor checks them

OK, WARN, FAIL = "ok", "warn", "fail"
INSTALL_TRAIN = "pip install -e '.[train]'"
MIN_FREE_GB = 10.0

_TORCH_PROBE = r"""
import json
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    if out["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        out["gpu_name"] = p.name
        out["gpu_memory_gb"] = round(p.total_memory / 2**30, 1)
        out["gpu_count"] = torch.cuda.device_count()
        out["bf16"] = torch.cuda.is_bf16_supported()
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import torchvision
    import torchvision.transforms
    out["torchvision"] = torchvision.__version__
except Exception as e:
    out["torchvision_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    """What doctor found; `--json` prints it as it is (codec.to_builtins)."""

    can_train: bool = field(init=False)  # no check failed
    checks: list[Check]
    facts: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "can_train", all(c.status != FAIL for c in self.checks))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = platform.python_version()
    return Check("python", OK, f"Python {v} at {sys.executable}")


def train_package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for req in TRAIN_REQUIREMENTS:
        found[req.distribution] = next((v for d in (req.distribution, *req.alternatives) if (v := _version(d))), None)
    return found


def check_train_packages(versions: dict[str, str | None]) -> list[Check]:
    """One line when everything matches sd-scripts' pins; one line per package that does not."""
    checks = []
    for req in TRAIN_REQUIREMENTS:
        version = versions[req.distribution]
        if version is None:
            checks.append(Check(req.distribution, FAIL, "not installed (sd-scripts needs it)", INSTALL_TRAIN))
        elif req.pinned and version != req.pinned:
            checks.append(
                Check(
                    req.distribution,
                    WARN,
                    f"{version}; sd-scripts {PINNED_TAG} pins {req.pinned}",
                    f"pip install '{req.distribution}=={req.pinned}'",
                )
            )
    if not checks:
        listed = ", ".join(f"{name} {v}" for name, v in versions.items())
        checks.append(Check("training packages", OK, f"as sd-scripts {PINNED_TAG} pins them: {listed}"))
    return checks


def probe_torch(timeout: float = 120.0) -> dict[str, object]:
    try:
        out = subprocess.run(
            [sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=timeout, check=False
        )
        probe: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return probe
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        return {"torch_error": f"probe failed: {e}"}


def check_torch(probe: dict[str, object]) -> list[Check]:
    fix_torch = (
        "install torch for your platform first, e.g. `pip install torch torchvision` "
        f"(sd-scripts suggests {TRAINER_NEEDS.torch_suggested}; a CPU-only machine: `pip install torch==2.13.0`)"
    )
    if "torch" not in probe:
        return [Check("torch", FAIL, f"not importable: {probe.get('torch_error', 'not installed')}", fix_torch)]
    version = str(probe["torch"])
    checks = []
    if _older(version, TRAINER_NEEDS.torch_minimum):
        checks.append(Check("torch", FAIL, f"torch {version} is older than {TRAINER_NEEDS.torch_minimum}", fix_torch))
    else:
        checks.append(Check("torch", OK, f"torch {version} (CUDA build {probe.get('cuda_build') or 'none'})"))
    if "torchvision" in probe:
        checks.append(Check("torchvision", OK, f"torchvision {probe['torchvision']}"))
    else:
        checks.append(
            Check(
                "torchvision",
                FAIL,
                f"not importable: {probe.get('torchvision_error', 'not installed')} (sd-scripts imports it)",
                "install the torchvision release built for your torch, e.g. "
                "`pip install torch==2.14.1 torchvision==0.29.1`",
            )
        )
    if probe.get("cuda_available"):
        checks.append(
            Check(
                "gpu",
                OK,
                f"{probe.get('gpu_name')}, {probe.get('gpu_memory_gb')} GB"
                f" ({probe.get('gpu_count')} visible; bf16 {'yes' if probe.get('bf16') else 'no'})",
            )
        )
    else:
        checks.append(
            Check(
                "gpu",
                WARN,
                "CPU only: training will be very slow (fine for `kohya-wrap smoke`)",
                "train on a CUDA GPU (see docs for Colab and rented GPUs)",
            )
        )
    return checks


def _older(version: str, minimum: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("+")[0].split(".")[:2] if p.isdigit())

    return parts(version) < parts(minimum)


def accelerate_config_path() -> Path:
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home) / "accelerate" / "default_config.yaml"


def check_accelerate_config() -> Check:
    path = accelerate_config_path()
    if path.is_file():
        return Check(
            "accelerate config",
            OK,
            f"saved config at {path}; not used: each run passes its own (RUN_DIR/accelerate.yaml)",
        )
    return Check("accelerate config", OK, f"none saved ({path}); not needed: each run passes its own")


def check_sd_scripts(explicit: str | None) -> Check:
    try:
        co = locate(explicit)
    except TrainerNotFound as e:
        return Check("sd-scripts", FAIL, e.message, e.hint)
    if co.commit is None:
        return Check(
            "sd-scripts",
            WARN,
            f"{co.path} (from {co.source}) is not a git work tree; commit unknown",
            f"use a git checkout of {PINNED_TAG} (sd-scripts logs a warning at every save otherwise)",
        )
    if not co.matches_pin:
        return Check(
            "sd-scripts",
            WARN,
            f"{co.path} (from {co.source}) at {co.commit[:12]}, not the pinned {PINNED_TAG} ({PINNED_COMMIT[:12]})",
            f"git -C {shlex.quote(str(co.path))} checkout {PINNED_TAG}"
            + (
                "  (or `git submodule update` in kohya-wrap)"
                if co.source == "submodule"
                else f"  (or fix {co.source} to point at a {PINNED_TAG} checkout)"
            ),
        )
    return Check("sd-scripts", OK, f"{co.path} (from {co.source}) at {PINNED_TAG} ({co.commit[:12]})")


def check_disk(runs_dir: Path) -> Check:
    probe = runs_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    detail = f"{free_gb:.1f} GB free at {runs_dir}"
    if free_gb < MIN_FREE_GB:
        return Check(
            "disk",
            WARN,
            detail + f" (a run with checkpoints and a cached base model wants {MIN_FREE_GB:.0f} GB)",
            "free space or pass another runs folder with -o",
        )
    return Check("disk", OK, detail)


def check_hf_cache() -> Check:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME")
        or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"),
        "hub",
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    mode = (
        "offline (HF_HUB_OFFLINE set): models must already be cached or given as files"
        if offline
        else "downloads allowed (HF_HUB_OFFLINE not set)"
    )
    return Check("hugging face cache", OK, f"{cache}; {mode}")


def check_tokenizer() -> Check:
    """The CLIP tokenizer train's pre-flight needs: cached, or fetched by train (which offline it cannot)."""
    from kohya_wrap.models import cached_tokenizer, default_tokenizer_cache_dir
    from kohya_wrap.sdscripts.base_model import CLIP_TOKENIZER

    where = cached_tokenizer()
    if where is not None:
        return Check("CLIP tokenizer", OK, f"{CLIP_TOKENIZER.repo} cached in {where}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return Check(
            "CLIP tokenizer",
            FAIL,
            f"{CLIP_TOKENIZER.repo} is not cached and HF_HUB_OFFLINE is set: train would stop before starting (exit 11)",
            "train once with network access (it caches the tokenizer in "
            f"{default_tokenizer_cache_dir()}), or plan with --tokenizer-cache-dir DIR where "
            f"DIR/{CLIP_TOKENIZER.folder(Path('DIR')).name}/ holds a saved CLIPTokenizer (vocab.json, merges.txt)",
        )
    return Check(
        "CLIP tokenizer",
        WARN,
        f"{CLIP_TOKENIZER.repo} is not cached yet: train downloads it (about 2 MB) the first time, which needs the network",
        f"offline, plan with --tokenizer-cache-dir DIR; it is cached in {default_tokenizer_cache_dir()} once fetched",
    )


def run_doctor(sd_scripts: str | None = None, runs_dir: Path = Path("runs")) -> DoctorReport:
    probe = probe_torch()
    versions = train_package_versions()
    checks = [
        check_python(),
        check_sd_scripts(sd_scripts),
        *check_torch(probe),
        *check_train_packages(versions),
        check_accelerate_config(),
        check_disk(runs_dir.resolve()),
        check_hf_cache(),
        check_tokenizer(),
    ]
    facts = {"torch_probe": probe, "packages": versions, "platform": platform.platform()}
    return DoctorReport(checks=checks, facts=facts)
