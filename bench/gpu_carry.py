"""Prepare what bench/gpu.py carries to a GPU machine that reaches no registry: `.gpu-carry/` (ignored by git).

    python bench/gpu_carry.py [--carry DIR] [--sd-scripts-git GIT_DIR] [--check]

It holds:
- wheels/: the Python 3.12 x86-64 wheels of what sd-scripts v0.10.1 and kohya-wrap need beyond a plain
  "Python with torch" image (CARRIED below: pins from sd-scripts' requirements.txt, and the packages those
  wheels require that such an image lacks), fetched with `pip download --no-deps`;
- sd-scripts-v0.10.1.tar.gz: sd-scripts' tree at the pinned tag from `git archive`, without what an SD1.5
  LoRA run never reads (other models' tokenizer files, the Windows bitsandbytes DLLs, docs);
- tokenizer/: the small CLIP tokenizer `kohya-wrap smoke` writes for a random-weight model
  (kohya_wrap/smoke/tokenizer.py), as a --tokenizer-cache-dir;
- carry.json: what is there, with sizes and sha256.

kohya-wrap itself travels as the checkout (its tracked files). Everything that travels (the checkout's
tracked and untracked-not-ignored files, and this folder) must stay under 64 MiB: --check measures it.
The GPU machine's Python, the versions it already has and why each wheel is carried are in
docs/performance.md#measuring-on-a-gpu.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY_DIR = ".gpu-carry"
WHEELS = "wheels"
TOKENIZER = "tokenizer"
CARRY_JSON = "carry.json"
SD_SCRIPTS_TAG = "v0.10.1"
SD_SCRIPTS_ARCHIVE = f"sd-scripts-{SD_SCRIPTS_TAG}.tar.gz"
SD_SCRIPTS_PREFIX = "sd-scripts"
DEFAULT_SD_SCRIPTS_GIT = Path("/work/.mirror/kohya-ss+sd-scripts/repo")
# What travels to the device machine in one call, the checkout included (its tool's limit).
SIZE_LIMIT = 64 * 2**20
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# Paths of sd-scripts' tree an SD1.5 LoRA run never reads: the Qwen3 and old T5 tokenizers (other model
# families), the Windows bitsandbytes DLLs, the docs and the CI files. About 9 of its 13 MB.
SD_SCRIPTS_LEFT_OUT = (
    "configs/qwen3_06b",
    "configs/t5_old",
    "bitsandbytes_windows",
    "docs",
    ".github",
    "README-ja.md",
)


@dataclass(frozen=True)
class Carried:
    """One wheel that travels, and which installed versions make it unnecessary."""

    distribution: str  # as pip names it
    version: str  # the carried wheel's version
    accepts: str  # a PEP 440 specifier an installed version must meet to leave it out; "" = any version
    why: str


# The image's Python (3.12, torch 2.11) has transformers 5.17, accelerate 1.15, huggingface_hub 1.33 and
# tokenizers 0.23, none of which sd-scripts v0.10.1 runs with; it lacks the rest. Every Requires-Dist of
# these wheels is either in this list or in the image (numpy, packaging, psutil, pyyaml, torch,
# safetensors, filelock, fsspec, regex, requests, tqdm, typing-extensions, hf-xet, pillow); diffusers'
# importlib-metadata is imported only below Python 3.8 (diffusers/utils/import_utils.py), so it stays.
CARRIED: tuple[Carried, ...] = (
    Carried("transformers", "4.54.1", "==4.54.1", "sd-scripts v0.10.1 pins it (requirements.txt)"),
    Carried("tokenizers", "0.21.4", ">=0.21,<0.22", "transformers 4.54.1 requires tokenizers>=0.21,<0.22"),
    Carried("huggingface_hub", "0.34.3", ">=0.34.0,<1.0", "sd-scripts pins 0.34.3; transformers 4.54.1 needs <1.0"),
    Carried("accelerate", "1.6.0", "==1.6.0", "sd-scripts v0.10.1 pins it (its launch and mixed precision)"),
    Carried("diffusers", "0.32.1", "==0.32.1", "sd-scripts v0.10.1 pins it"),
    Carried("voluptuous", "0.15.2", "", "sd-scripts' dataset config schema"),
    Carried("ftfy", "6.3.1", "", "sd-scripts' caption cleaning"),
    Carried("wcwidth", "0.2.13", "", "ftfy requires it (a pure-Python release: the newer ones are binary)"),
    Carried("imagesize", "1.4.1", "", "sd-scripts reads image sizes with it"),
    Carried("toml", "0.10.2", "", "sd-scripts reads its --config_file with it"),
    Carried("tomli-w", "1.2.0", "", "kohya-wrap writes sd-scripts' TOML files with it"),
)

# What the image must already have (Python module names): the bench says so before it starts when one is gone.
EXPECTED_ON_DEVICE = (
    "torch",
    "torchvision",
    "numpy",
    "safetensors",
    "einops",
    "sentencepiece",
    "cv2",
    "PIL",
    "rich",
    "click",
    "tensorboard",
    "psutil",
    "yaml",
    "regex",
    "requests",
    "tqdm",
    "filelock",
    "fsspec",
    "packaging",
)


def normalise(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427: runs of -_. become _), lower case."""
    out = []
    for ch in name.lower():
        out.append("_" if ch in "-." else ch)
    return "".join(out).replace("__", "_")


def wheel_for(package: Carried, wheels: Path) -> Path | None:
    """The carried wheel file of `package` in `wheels`, or None."""
    prefix = f"{normalise(package.distribution)}-{package.version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)] if wheels.is_dir() else []
    return found[0] if len(found) == 1 else None


def tracked_bytes(root: Path = ROOT) -> tuple[int, int]:
    """(bytes, files) of what a device call sends from the checkout: tracked files (submodules travel without
    their files) and untracked files git does not ignore."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--stage"], capture_output=True, check=True
    ).stdout.decode()
    paths = []
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        if meta.startswith("160000"):  # a submodule: it travels as an empty folder
            continue
        paths.append(path)
    others = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--others", "--exclude-standard"], capture_output=True, check=True
    ).stdout.decode()
    paths += [p for p in others.split("\0") if p]
    total = 0
    for path in paths:
        full = root / path
        if full.is_file() and not full.is_symlink():
            total += full.stat().st_size
    return total, len(paths)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    for package in CARRIED:
        if wheel_for(package, wheels) is not None:
            continue
        argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        argv += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
        for platform in PLATFORMS:
            argv += ["--platform", platform]
        argv += ["-d", str(wheels), f"{package.distribution}=={package.version}"]
        print(f"downloading {package.distribution}=={package.version}", flush=True)
        subprocess.run(argv, check=True)
        if wheel_for(package, wheels) is None:
            sys.exit(f"pip downloaded no single wheel for {package.distribution}=={package.version} into {wheels}")
    carried = {wheel_for(p, wheels) for p in CARRIED}
    for extra in wheels.glob("*.whl"):
        if extra not in carried:
            print(f"removing {extra.name}: not in the carried list")
            extra.unlink()


def archive_sd_scripts(git_dir: Path, target: Path) -> str:
    """The pinned tag's files, without SD_SCRIPTS_LEFT_OUT, as a .tar.gz; returns the commit.

    The files are named one by one: a mirror may lack the blobs of the left-out files (the DLLs), and git
    archive reads only the blobs it writes.
    """
    git = ["git", f"--git-dir={git_dir}"]
    commit = subprocess.run(
        [*git, "rev-parse", f"{SD_SCRIPTS_TAG}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    listing = subprocess.run(
        [*git, "ls-tree", "-r", "-z", "--name-only", commit], capture_output=True, text=True, check=True
    ).stdout
    files = [
        name
        for name in listing.split("\0")
        if name and not any(name == left or name.startswith(left + "/") for left in SD_SCRIPTS_LEFT_OUT)
    ]
    raw = subprocess.run(
        [*git, "archive", "--format=tar", f"--prefix={SD_SCRIPTS_PREFIX}/", commit, "--", *files],
        capture_output=True,
        check=True,
    ).stdout
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed:
        packed.write(raw)
    with tarfile.open(tmp) as tar:
        written = sum(1 for member in tar.getmembers() if member.isfile())
    if written != len(files):
        tmp.unlink()
        sys.exit(f"git archive wrote {written} of the {len(files)} files of sd-scripts {SD_SCRIPTS_TAG}")
    os.replace(tmp, target)
    return commit


def sd_scripts_problems(archive: Path) -> list[str]:
    """What is wrong with a carried sd-scripts archive (empty: nothing)."""
    if not archive.is_file():
        return [f"{archive} is missing"]
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
    except (OSError, tarfile.TarError) as e:
        return [f"{archive} cannot be read: {e}"]
    needed = ("train_network.py", "gen_img.py", "library/train_util.py", "networks/lora.py")
    return [f"{archive} has no {name}" for name in needed if f"{SD_SCRIPTS_PREFIX}/{name}" not in names]


def write_tokenizer(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from kohya_wrap.smoke.tokenizer import write_tokenizer as write

    write(folder)


def tokenizer_problems(folder: Path) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from kohya_wrap.sdscripts.base_model import CLIP_TOKENIZER

    sub = CLIP_TOKENIZER.folder(folder)
    return [f"{sub / name} is missing" for name in CLIP_TOKENIZER.required_files if not (sub / name).is_file()]


def wheel_problems(carry: Path) -> list[str]:
    wheels = carry / WHEELS
    return [
        f"no wheel of {package.distribution}=={package.version} in {wheels}"
        for package in CARRIED
        if wheel_for(package, wheels) is None
    ]


def size_figures(carry: Path, root: Path = ROOT) -> dict[str, int]:
    """What travels, in bytes: the checkout (git's view of it) and the carry folder."""
    checkout, files = tracked_bytes(root)
    carried = folder_bytes(carry) if carry.is_dir() else 0
    return {
        "checkout_bytes": checkout,
        "checkout_files": files,
        "carry_bytes": carried,
        "total_bytes": checkout + carried,
        "limit_bytes": SIZE_LIMIT,
    }


def check(carry: Path, root: Path = ROOT) -> tuple[list[str], dict[str, int]]:
    """(problems, figures) of a carry folder and the checkout that travels with it. Here, before a device call;
    the GPU machine checks only the wheels and the archive (it may have neither git nor kohya-wrap's imports)."""
    problems = wheel_problems(carry) + sd_scripts_problems(carry / SD_SCRIPTS_ARCHIVE)
    problems += tokenizer_problems(carry / TOKENIZER)
    figures = size_figures(carry, root)
    if figures["total_bytes"] > SIZE_LIMIT:
        problems.append(
            f"what travels is {figures['total_bytes'] / 2**20:.1f} MiB (checkout "
            f"{figures['checkout_bytes'] / 2**20:.1f} + carry {figures['carry_bytes'] / 2**20:.1f}), "
            f"over the {SIZE_LIMIT / 2**20:.0f} MiB limit"
        )
    return problems, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--carry", type=Path, default=ROOT / CARRY_DIR, help="the folder to fill (default: .gpu-carry)")
    parser.add_argument("--sd-scripts-git", type=Path, default=DEFAULT_SD_SCRIPTS_GIT, help="a git dir holding the tag")
    parser.add_argument("--check", action="store_true", help="only check the folder and the sizes")
    args = parser.parse_args()
    carry: Path = args.carry
    if not args.check:
        carry.mkdir(parents=True, exist_ok=True)
        download_wheels(carry / WHEELS)
        commit = archive_sd_scripts(args.sd_scripts_git, carry / SD_SCRIPTS_ARCHIVE)
        with tempfile.TemporaryDirectory() as scratch:
            write_tokenizer(Path(scratch))  # proves it writes; then the real one
        write_tokenizer(carry / TOKENIZER)
        record = {
            "sd_scripts": {"tag": SD_SCRIPTS_TAG, "commit": commit, "left_out": list(SD_SCRIPTS_LEFT_OUT)},
            "wheels": {
                p.distribution: {"file": w.name, "bytes": w.stat().st_size, "sha256": sha256(w)}
                for p in CARRIED
                if (w := wheel_for(p, carry / WHEELS)) is not None
            },
        }
        (carry / CARRY_JSON).write_text(json.dumps(record, indent=2) + "\n")
    problems, figures = check(carry)
    mib = {k: round(v / 2**20, 2) for k, v in figures.items() if k.endswith("_bytes") and isinstance(v, int)}
    print(f"travels: checkout {mib['checkout_bytes']} MiB + carry {mib['carry_bytes']} MiB = {mib['total_bytes']} MiB")
    print(f"  (limit {mib['limit_bytes']:.0f} MiB)")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
