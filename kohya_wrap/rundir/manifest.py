"""RUN_DIR/run.json: what was trained, with what, on which machine, and what came out.

RunManifest is the typed record; write_manifest and read_manifest are its only writer and reader
(through kohya_wrap/codec.py). train writes it at the end of every attempt (whatever the outcome);
status, the report and the runs table read it. Reading is lenient: a field an older kohya-wrap did
not write reads as its default (None or empty); a field of the wrong type makes the file unreadable.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from msgspec import UNSET, UnsetType
from msgspec.structs import replace

from kohya_wrap import __version__
from kohya_wrap.codec import Record, RecordError, TomlValue, read, write
from kohya_wrap.events import ENDED_WELL, Error, Outcome
from kohya_wrap.fsutil import sha256_file
from kohya_wrap.safetensors_header import incomplete

MANIFEST_SCHEMA = 1

# "environment": package -> version (None: not installed), "python", "executable", "cuda", and "gpu": their names
Environment = dict[str, str | list[str] | None]


class FileEntry(Record, frozen=True, kw_only=False):
    """A file the trainer saved (a checkpoint, the final LoRA) as train found it at the attempt's end.
    bytes, sha256 and complete are written for a file that exists; problem only for an incomplete one."""

    path: str
    step: int | None
    exists: bool = True
    bytes: int | None | UnsetType = UNSET
    sha256: str | None | UnsetType = UNSET
    complete: bool | UnsetType = UNSET
    problem: str | UnsetType = UNSET  # why it is not a complete safetensors file (cut short by a kill mid-save)

    @staticmethod
    def of(path: Path, step: int | None) -> FileEntry:
        if not path.is_file():
            return FileEntry(str(path), step, exists=False)
        problem = incomplete(path) if path.suffix == ".safetensors" else None
        return FileEntry(
            str(path),
            step,
            bytes=path.stat().st_size,
            sha256=sha256_file(path),
            complete=problem is None,
            problem=UNSET if problem is None else problem,
        )


class SavedEntry(Record, frozen=True, kw_only=False):
    """A training state folder (`states`) or a sample image (`samples`, with its prompt's index)."""

    path: str
    step: int | None
    prompt_index: int | None | UnsetType = UNSET


class MemoryChange(Record, frozen=True, kw_only=True):
    key: str  # the sd-scripts argument train changed to fit the GPU
    old: TomlValue | None = msgspec.field(default=None, name="from")
    new: TomlValue | None = msgspec.field(default=None, name="to")


class MemoryFit(Record, frozen=True, kw_only=True):
    """What train found and did about the GPU's memory (kohya_wrap/train/memory.py)."""

    gpu_memory_mib: int | None = None
    need_mib: int | None = None
    need_from: str | None = None
    changes: tuple[MemoryChange, ...] = ()
    note: str | None = None


class MachineEntry(Record, frozen=True, kw_only=True):
    """What train resolved on the machine an attempt ran on (kohya_wrap/train/machine.py)."""

    python: str | None = None
    sd_scripts: str | None = None
    sd_scripts_commit: str | None = None
    device: str | None = None
    gpus: tuple[str, ...] = ()
    num_processes: int | None = None
    num_machines: int | None = None
    machine_rank: int | None = None
    mixed_precision: str | None = None
    mixed_precision_source: str | None = None
    cpu_threads: int | None = None
    gpu_memory_mib: int | None = None
    memory_fit: MemoryFit | None = None


class Attempt(Record, frozen=True, kw_only=True):
    """One launch of the trainer: the first one and each resume."""

    started_at: str
    ended_at: str
    duration_s: float
    outcome: Outcome
    exit_code: int
    returncode: int | None = None
    stop_reason: str | None = None
    resumed_from: str | None = None
    resumed_at_step: int | None = None
    argv: tuple[str, ...] = ()
    machine: MachineEntry | None = None  # what train resolved on the machine it ran on
    extend_steps: int | None = None  # `train --extend STEPS`: the steps added after resumed_at_step


class PresetEntry(Record, frozen=True, kw_only=True):
    name: str | None = None
    sha256: str | None = None


class BaseModelEntry(Record, frozen=True, kw_only=True):
    path: str | None = None
    sha256: str | None = None


class CheckoutEntry(Record, frozen=True, kw_only=True):
    """The sd-scripts checkout that trained."""

    path: str | None = None
    commit: str | None = None


class StepsEntry(Record, frozen=True, kw_only=True):
    planned: int | None = None
    reached: int | None = None
    trainer_total: int | None = None  # the trainer's own count, relative after a resume
    extended_to: int | None = None  # the total of the latest `train --extend`


class CheckEntry(Record, frozen=True, kw_only=True):
    name: str
    ok: bool
    detail: str = ""


class VerificationEntry(Record, frozen=True, kw_only=True):
    ok: bool
    checks: tuple[CheckEntry, ...] = ()


class ScoredStep(Record, frozen=True, kw_only=True):
    """The checkpoint `score` recommends, as score.json has it."""

    step: int
    checkpoint: str | None = None
    likeness: float | None = None
    matches: int | None = None
    samples: int | None = None
    faces: int | None = None
    copies: int | None = None


class AdviceEntry(Record, frozen=True, kw_only=True):
    kind: str  # recommended | not_learnt | copies | not_scored (kohya_wrap/score/advice.py)
    text: str
    step: int | None = None
    command: str | None = None


class ScoreEntry(Record, frozen=True, kw_only=True):
    """The recommendation of `score`, when it ran on the finished run."""

    file: str
    recommended: ScoredStep | None = None
    reason: str | None = None
    advice: AdviceEntry | None = None


class StoppedEarly(Record, frozen=True, kw_only=True):
    """A run live scoring stopped: when, why, and the GPU time it saved."""

    step: int | None = None  # the last checkpoint scored when it was decided
    reason: str | None = None
    stopped_at: int | None = None  # the step the trainer reached
    planned: int | None = None
    steps_saved: int | None = None
    seconds_saved: float | None = None


class RunManifest(Record, frozen=True, kw_only=True):
    schema: int = MANIFEST_SCHEMA
    kohya_wrap_version: str = __version__
    run_dir: str = ""
    outcome: Outcome
    exit_code: int | None = None
    started_at: str | None = None  # of the first attempt
    ended_at: str | None = None  # of the latest one
    preset: PresetEntry | None = None
    values: dict[str, TomlValue] = {}
    value_sources: dict[str, str] = {}
    dataset_manifest_sha256: str | None = None
    base_model: BaseModelEntry | None = None
    sd_scripts: CheckoutEntry | None = None  # the checkout that trained
    machine: MachineEntry | None = None  # of the latest attempt
    environment: Environment = {}  # package versions of the trainer's Python, its GPUs
    steps: StepsEntry = StepsEntry()
    mean_it_per_s: float | None = None
    final_loss: float | None = None
    checkpoints: tuple[FileEntry, ...] = ()
    states: tuple[SavedEntry, ...] = ()
    samples: tuple[SavedEntry, ...] = ()
    lora: FileEntry | None = None
    verification: VerificationEntry | None = None
    score: ScoreEntry | None = None
    stopped_early: StoppedEarly | None = None
    errors: tuple[Error, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    @property
    def finished(self) -> bool:
        return self.outcome == "finished"

    @property
    def ended_well(self) -> bool:
        """Finished, or stopped early by live scoring: a run `train --extend` can continue."""
        return self.outcome in ENDED_WELL

    @property
    def last_checkpoint(self) -> FileEntry | None:
        """The saved LoRA of the highest step that still exists (the final file counts at its step)."""
        saved = [
            c for c in (*self.checkpoints, *((self.lora,) if self.lora else ())) if c.exists and c.step is not None
        ]
        saved = [c for c in saved if Path(c.path).is_file()]
        return max(saved, key=lambda c: (c.step, c.path != (self.lora.path if self.lora else None))) if saved else None


def write_manifest(path: Path, manifest: RunManifest) -> None:
    write(path, manifest)


def read_manifest(path: Path) -> RunManifest | None:
    """run.json, or None when there is none or it cannot be read (train rewrites it at every attempt's end)."""
    try:
        return read_run_json(path)
    except RecordError:
        return None


def read_run_json(path: Path) -> RunManifest:
    """run.json; RecordError naming the file and the field when it is missing or cannot be read."""
    return read(path, RunManifest, what="the run's record", hint="train the run again to write it anew")


def record_score(run_dir: Path, score: ScoreEntry) -> None:
    """Add the score's recommendation to a run's run.json (after `score` ran on a finished run)."""
    from kohya_wrap.rundir.layout import paths

    path = paths(run_dir).run_json
    manifest = read_manifest(path)
    if manifest is not None:
        write_manifest(path, replace(manifest, score=score))
