"""`kohya-wrap export`: one checkpoint of a run as a standalone LoRA file, with its score inside.

The safetensors header (little-endian u64 length + JSON) is rewritten with the score added to
`__metadata__`; the tensor bytes after it are copied verbatim, so every dtype (bf16 included) and
sd-scripts' own `sshs_model_hash` (a hash of the tensors) stay valid, and no torch is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap import codec
from kohya_wrap.codec import Record
from kohya_wrap.safetensors_header import Header, header_bytes, incomplete, metadata_text
from kohya_wrap.safetensors_header import read_header as read_safetensors_header
from kohya_wrap.score.collect import ScoreError
from kohya_wrap.score.records import ScoreReport

if TYPE_CHECKING:
    from kohya_wrap.rundir import Plan

SCORE_METADATA_KEY = "kohya_wrap_score"  # ours: JSON of the exported checkpoint's score
LORA_WEIGHT = 0.8
A1111_FOLDER = "stable-diffusion-webui/models/Lora"
COMFYUI_FOLDER = "ComfyUI/models/loras"


class ExportedScore(Record, frozen=True):
    """The exported checkpoint's score, as its file's metadata holds it (JSON under SCORE_METADATA_KEY)."""

    step: int
    samples: int
    faces: int
    likeness: float | None
    matches: int
    copies: int
    distance: float | None
    variety: float | None
    validation_loss: float | None
    recommended: bool
    reason: str
    model: str


class ExportResult(Record, frozen=True):
    path: Path
    source: Path
    step: int
    why: str  # "recommended", "--step", "last"
    score: ExportedScore | None
    prompt: str
    note: str = ""
    automatic1111: str = A1111_FOLDER
    comfyui: str = COMFYUI_FOLDER


def read_header(path: Path) -> tuple[Header, int]:
    """The header JSON of a safetensors file and the offset its tensor data starts at."""
    try:
        return read_safetensors_header(path)
    except (OSError, ValueError) as e:
        raise ScoreError(f"{path} is not a readable safetensors file: {e}", "export another checkpoint") from None


def write_with_metadata(source: Path, target: Path, extra: dict[str, str]) -> None:
    """Copy a safetensors file to target (which must not exist) with extra __metadata__ entries."""
    header, data_start = read_header(source)
    metadata = metadata_text(header)  # export_checkpoint chose a complete file: an object of strings
    metadata.update(extra)
    header = {"__metadata__": metadata, **{k: v for k, v in header.items() if k != "__metadata__"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            out.write(header_bytes(header))
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


def subject_words(plan: Plan) -> str:
    """`ohwx man`: the class tokens of the run's first training subset."""
    for subset in plan.subsets:
        if not subset.is_reg and subset.class_tokens:
            return str(subset.class_tokens)
    return "ohwx person"


def export_checkpoint(run_dir: str | Path, out: str | Path, *, step: int | None = None) -> ExportResult:
    from kohya_wrap.score import load_score
    from kohya_wrap.score.collect import load_run_plan
    from kohya_wrap.sdscripts.samples import checkpoint_steps

    run = Path(run_dir).expanduser().resolve()
    plan = load_run_plan(run)
    files = checkpoint_steps(plan.output_dir, plan.output_name, plan.max_train_steps)
    if not files:
        raise ScoreError(
            f"{plan.output_dir} holds no LoRA file of this run yet", "train it first: kohya-wrap train RUN_DIR"
        )
    report = load_score(run)
    chosen, why, note = _choose(files, report, step, plan.output_dir)
    target = _target(out, f"{plan.output_name}-step{chosen}.safetensors")
    summary = _exported_score(report, chosen)
    extra = {SCORE_METADATA_KEY: json.dumps(codec.to_builtins(summary), sort_keys=True)} if summary is not None else {}
    write_with_metadata(files[chosen], target, extra)
    prompt = f"<lora:{target.stem}:{LORA_WEIGHT}> photo of {subject_words(plan)}"
    return ExportResult(
        path=target, source=files[chosen], step=chosen, why=why, score=summary, prompt=prompt, note=note
    )


def checkpoint_to_export(plan: Plan, report: ScoreReport | None) -> Path | None:
    """The LoRA file `export RUN_DIR` (no --step) writes out: the recommended checkpoint, else the last
    complete one; None when the run has no complete LoRA file."""
    from kohya_wrap.sdscripts.samples import checkpoint_steps

    files = checkpoint_steps(plan.output_dir, plan.output_name, plan.max_train_steps)
    if not files:
        return None
    try:
        chosen, _, _ = _choose(files, report, None, plan.output_dir)
    except ScoreError:
        return None
    return files[chosen]


def _choose(
    files: dict[int, Path], report: ScoreReport | None, step: int | None, output_dir: Path
) -> tuple[int, str, str]:
    """The step to export, why ("--step", "recommended", "last") and a note when it is not the recommended one.

    Every checkpoint is checked before it is exported: a file cut short (a trainer killed mid-save)
    would load nowhere, yet its header alone looks fine."""
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
            f"no complete LoRA file in {output_dir}: {files[last].name} is incomplete ({broken[last]})",
            "resume the run (`kohya-wrap train RUN_DIR --resume`) to save it again, or train it again",
        )
    rec = None if report is None else report.recommended_step
    if step is not None:
        if step not in files:
            raise ScoreError(
                f"--step {step}: no checkpoint was saved at that step",
                f"saved steps: {', '.join(str(s) for s in sorted(files))}",
            )
        return step, "--step", ""
    if rec is not None and rec in complete:
        return rec, "recommended", ""
    if rec is not None and rec in broken:
        note = f"the recommended step {rec} has an incomplete LoRA file ({broken[rec]}); exported the last complete one"
    elif report is None:
        note = "no score.json: run `kohya-wrap score RUN_DIR` to export the recommended checkpoint"
    elif rec is not None:
        note = f"the recommended step {rec} has no LoRA file in {output_dir} any more"
    else:
        note = f"no checkpoint recommended ({report.reason})"
    return max(complete), "last", note


def _target(out: str | Path, name: str) -> Path:
    """The file to write: `out`, or `name` inside it when it is a folder; never one that exists."""
    # `-o newdir/sub/`: a trailing slash names a folder, made if it is not there yet
    folder = str(out).endswith(("/", os.sep))
    target = Path(out).expanduser()
    if folder or target.is_dir():
        target = target / name
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    if target.exists():
        raise ScoreError(
            f"{target} already exists; export never overwrites a file",
            "give another -o PATH, or remove that file first",
        )
    return target


def _exported_score(report: ScoreReport | None, chosen: int) -> ExportedScore | None:
    score = None if report is None else report.checkpoint_at(chosen)
    if report is None or score is None:
        return None
    return ExportedScore(
        step=score.step,
        samples=score.samples,
        faces=score.faces,
        likeness=score.likeness,
        matches=score.matches,
        copies=score.copies,
        distance=score.distance,
        variety=score.variety,
        validation_loss=score.validation_loss,
        recommended=report.recommended_step == chosen,
        reason=report.reason,
        model=report.model.id,
    )
