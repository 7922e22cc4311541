"""`kohya-wrap export`: one checkpoint of a run as a standalone LoRA file, with its score inside.

The safetensors header (little-endian u64 length + JSON) is rewritten with the score added to
`__metadata__`; the tensor bytes after it are copied verbatim, so every dtype (bf16 included) and
sd-scripts' own `sshs_model_hash` (a hash of the tensors) stay valid, and no torch is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kohya_wrap.safetensors_header import incomplete
from kohya_wrap.safetensors_header import read_header as read_safetensors_header
from kohya_wrap.score.collect import ScoreError

SCORE_METADATA_KEY = "kohya_wrap_score"  # ours: JSON of the exported checkpoint's score
ALIGNMENT = 8  # safetensors pads the header so the tensor data starts 8-byte aligned
LORA_WEIGHT = 0.8
A1111_FOLDER = "stable-diffusion-webui/models/Lora"
COMFYUI_FOLDER = "ComfyUI/models/loras"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    source: Path
    step: int
    why: str  # "recommended", "--step", "last"
    score: dict[str, Any] | None
    prompt: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "step": self.step,
            "why": self.why,
            "score": self.score,
            "prompt": self.prompt,
            "note": self.note,
            "automatic1111": A1111_FOLDER,
            "comfyui": COMFYUI_FOLDER,
        }


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header JSON of a safetensors file and the offset its tensor data starts at."""
    try:
        return read_safetensors_header(path)
    except (OSError, ValueError) as e:
        raise ScoreError(f"{path} is not a readable safetensors file: {e}", "export another checkpoint") from None


def encode_header(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    body += b" " * (-(8 + len(body)) % ALIGNMENT)
    return struct.pack("<Q", len(body)) + body


def write_with_metadata(source: Path, target: Path, extra: dict[str, str]) -> None:
    """Copy a safetensors file to target (which must not exist) with extra __metadata__ entries."""
    header, data_start = read_header(source)
    metadata = dict(header.get("__metadata__") or {})
    metadata.update(extra)
    header = {"__metadata__": metadata, **{k: v for k, v in header.items() if k != "__metadata__"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            out.write(encode_header(header))
            src.seek(data_start)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            # mkstemp makes the file 0600; an exported LoRA is for other programs (a web UI run as another
            # user) to read, so it gets the mode any new file gets here: 0666 less the umask
            os.fchmod(out.fileno(), 0o666 & ~_umask())
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)  # fails if target exists: never overwrites, even in a race
        except FileExistsError:
            raise ScoreError(
                f"{target} already exists; export never overwrites a file",
                "give another -o PATH, or remove that file first",
            ) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def subject_words(plan: Any) -> str:
    """`ohwx man`: the class tokens of the run's first training subset."""
    for subset in plan.subsets:
        if not subset.is_reg and subset.class_tokens:
            return str(subset.class_tokens)
    return "ohwx person"


def export_checkpoint(run_dir: str | Path, out: str | Path, *, step: int | None = None) -> ExportResult:
    from kohya_wrap.score import load_score, recommended_step
    from kohya_wrap.score.collect import load_run_plan
    from kohya_wrap.sdscripts.samples import checkpoint_steps

    run = Path(run_dir).expanduser().resolve()
    plan = load_run_plan(run)
    files = checkpoint_steps(plan.output_dir, plan.output_name, plan.max_train_steps)
    if not files:
        raise ScoreError(
            f"{plan.output_dir} holds no LoRA file of this run yet", "train it first: kohya-wrap train RUN_DIR"
        )
    doc = load_score(run)
    note = ""
    # every checkpoint is checked before it is exported: a file cut short (a trainer killed mid-save)
    # would load nowhere, yet its header alone looks fine
    broken = {s: why for s, p in files.items() if (why := incomplete(p)) is not None}
    complete = {s: p for s, p in files.items() if s not in broken}
    if step is not None and step in broken:
        raise ScoreError(
            f"the checkpoint of step {step} ({files[step].name}) is incomplete: {broken[step]}",
            "export another step (--step N)"
            + (f"; complete steps: {', '.join(str(s) for s in sorted(complete))}" if complete else ""),
        )
    if not complete:
        last = max(broken)
        raise ScoreError(
            f"no complete LoRA file in {plan.output_dir}: {files[last].name} is incomplete ({broken[last]})",
            "resume the run (`kohya-wrap train RUN_DIR --resume`) to save it again, or train it again",
        )
    rec = recommended_step(doc)
    if step is not None:
        if step not in files:
            raise ScoreError(
                f"--step {step}: no checkpoint was saved at that step",
                f"saved steps: {', '.join(str(s) for s in sorted(files))}",
            )
        chosen, why = step, "--step"
    elif rec is not None and rec in complete:
        chosen, why = rec, "recommended"
    else:
        chosen, why = max(complete), "last"
        if rec is not None and rec in broken:
            note = f"the recommended step {rec} has an incomplete LoRA file ({broken[rec]}); exported the last complete one"
        elif doc is None:
            note = "no score.json: run `kohya-wrap score RUN_DIR` to export the recommended checkpoint"
        elif rec is not None:
            note = f"the recommended step {rec} has no LoRA file in {plan.output_dir} any more"
        else:
            note = f"no checkpoint recommended ({doc.get('reason', '')})"
    # `-o newdir/sub/`: a trailing slash names a folder, made if it is not there yet
    folder = str(out).endswith(("/", os.sep))
    target = Path(out).expanduser()
    if folder or target.is_dir():
        target = target / f"{plan.output_name}-step{chosen}.safetensors"
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    if target.exists():
        raise ScoreError(
            f"{target} already exists; export never overwrites a file",
            "give another -o PATH, or remove that file first",
        )
    score = next((c for c in (doc or {}).get("checkpoints", []) if c.get("step") == chosen), None)
    summary = None
    if score is not None:
        summary = {
            k: score.get(k)
            for k in (
                "step",
                "samples",
                "faces",
                "likeness",
                "matches",
                "copies",
                "distance",
                "variety",
                "validation_loss",
            )
        }
        summary.update(
            recommended=recommended_step(doc) == chosen,
            reason=doc.get("reason") if doc else None,
            model=(doc or {}).get("model", {}).get("id"),
        )
    extra = {SCORE_METADATA_KEY: json.dumps(summary, sort_keys=True)} if summary is not None else {}
    write_with_metadata(files[chosen], target, extra)
    prompt = f"<lora:{target.stem}:{LORA_WEIGHT}> photo of {subject_words(plan)}"
    return ExportResult(target, files[chosen], chosen, why, summary, prompt, note)
