"""sd-scripts' own image generator, gen_img.py (v0.10.1): its command line, prompt file and output names.

How it is driven, and why:
- one run per LoRA file: it loads the base model once and applies the LoRA with --network_mul;
- prompts go through --from_file, one line each; the seeds are given per line with ` --d s1,s2,...`
  rather than --seed, because with --seed, one prompt and one image gen_img.py calls a function that
  reads `args.seed` from its own positional tuple and crashes (gen_img.py L2339-2345);
- --sequential_file_name names the k-th image written `im_{k:06d}.png` (k from 1, counting every
  image of every prompt in file order), so the index says which prompt and which image it is;
- --v1 skips the file-size guess for SDXL; --sdpa uses PyTorch attention, which works on a CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GenRequest",
    "SAMPLERS",
    "build_argv",
    "build_env",
    "expected_outputs",
    "render_prompts_file",
]

GEN_SCRIPT = "gen_img.py"
LORA_NETWORK_MODULE = "networks.lora"
# gen_img.py's sampler choices that the sample command offers (its own default is ddim).
SAMPLERS = ("ddim", "euler", "euler_a", "dpmsolver++", "k_euler_a", "pndm", "lms", "heun")


@dataclass(frozen=True)
class GenRequest:
    checkout: Path
    base_model: Path
    lora_file: Path | None  # None: the base model alone
    weight: float
    prompts_file: Path
    out_dir: Path
    images_per_prompt: int
    width: int
    height: int
    steps: int
    scale: float
    sampler: str
    tokenizer_cache_dir: Path | None
    fp16: bool = False


def prompt_line(prompt: str, seeds: Sequence[int]) -> str:
    """One --from_file line. The prompt may carry gen_img.py's own ` --n negative` style options."""
    if "\n" in prompt or "\r" in prompt:
        raise ValueError(f"a prompt cannot contain a line break: {prompt!r}")
    if not prompt.strip() or prompt.startswith("#"):
        raise ValueError(f"a prompt cannot be empty or start with '#': {prompt!r}")
    if " --d " in f" {prompt} ".lower():
        raise ValueError(f"give seeds with --seed, not in the prompt: {prompt!r}")
    return f"{prompt} --d {','.join(str(s) for s in seeds)}"


def render_prompts_file(prompts: Sequence[str], seeds: Sequence[Sequence[int]]) -> str:
    return "".join(prompt_line(p, s) + "\n" for p, s in zip(prompts, seeds, strict=True))


def build_argv(req: GenRequest, python: str | None = None) -> list[str]:
    argv = [
        python or sys.executable,
        str(Path(req.checkout) / GEN_SCRIPT),
        "--v1",
        "--ckpt",
        str(req.base_model),
        "--from_file",
        str(req.prompts_file),
        "--outdir",
        str(req.out_dir),
        "--sequential_file_name",
        "--images_per_prompt",
        str(req.images_per_prompt),
        "--W",
        str(req.width),
        "--H",
        str(req.height),
        "--steps",
        str(req.steps),
        "--scale",
        str(req.scale),
        "--sampler",
        req.sampler,
        "--sdpa",
    ]
    if req.fp16:
        argv.append("--fp16")
    if req.tokenizer_cache_dir is not None:
        argv += ["--tokenizer_cache_dir", str(req.tokenizer_cache_dir)]
    if req.lora_file is not None:
        argv += [
            "--network_module",
            LORA_NETWORK_MODULE,
            "--network_weights",
            str(req.lora_file),
            "--network_mul",
            str(req.weight),
        ]
    return argv


def output_name(sequence: int) -> str:
    """The file --sequential_file_name gives the `sequence`-th image (from 1) of one run."""
    return f"im_{sequence:06d}.png"


def expected_outputs(prompt_count: int, images_per_prompt: int) -> list[tuple[int, int, str]]:
    """(prompt index, image index, file name) of every image one run writes, in order."""
    return [
        (p, k, output_name(p * images_per_prompt + k + 1))
        for p in range(prompt_count)
        for k in range(images_per_prompt)
    ]


def build_env(*, offline: bool) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1", "COLUMNS": "1000", "PYTHONIOENCODING": "utf-8"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env
