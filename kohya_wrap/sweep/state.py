"""SWEEP_DIR/sweep.json and each worker's result file: the sweep's records, read and written here only.

    {"schema": 1, "spec": {...}, "backend": "local", "updated_at": "...",
     "variants": [{"name", "run_dir", "dataset", "values", "status", "outcome", "exit_code",
                   "recommended_step", "final_loss", "last_step", "total_steps", "lora_file", "host",
                   "device", "started_at", "ended_at", "error", "log", "resume", "pid"}]}

`status`: pending (not started by this sweep yet), running, done (trained to an outcome), skipped
(finished before this sweep command), error (could not be trained: the message is in `error`).
`outcome` and `exit_code` are the run's own (run.json); `recommended_step` comes from RUN_DIR/score.json
(`recommended.step`) when the score stage wrote one, else null. Only the sweep's driver writes the file.

A variant's worker writes SWEEP_DIR/.work/<variant>.result.json (a VariantResult) for the driver, which
copies its VariantOutcome fields into the variant's VariantEntry: the fields are listed once, as the
fields of VariantOutcome.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import msgspec

from kohya_wrap import __version__, codec, rundir
from kohya_wrap.codec import Record, TomlValue
from kohya_wrap.events import Outcome
from kohya_wrap.sweep.spec import SweepError, SweepSpec
from kohya_wrap.sweep.variants import Variant

SWEEP_JSON = "sweep.json"
LOGS_DIR = "logs"  # SWEEP_DIR/logs/<variant>.log: what each variant's worker printed
WORK_DIR = ".work"  # SWEEP_DIR/.work/<variant>.result.json: a worker's result, read by the driver
RESULT_SUFFIX = ".result.json"
ATTEMPTS_DIR = "attempts"  # SWEEP_DIR/attempts/<variant>-<time>: a failed attempt set aside before a restart
STATE_SCHEMA = 1
_HINT = "restore it, or run the sweep into a new folder"

Status = Literal["pending", "running", "done", "skipped", "error"]
PENDING: Status = "pending"
RUNNING: Status = "running"
DONE: Status = "done"
SKIPPED: Status = "skipped"
ERROR: Status = "error"


class VariantOutcome(Record, frozen=True, kw_only=True):
    """What training a variant came to, as its worker saw it: what result.json passes on to sweep.json."""

    outcome: Outcome | None = None  # the run's outcome (run.json); None: it could not be trained
    exit_code: int | None = None
    final_loss: float | None = None
    last_step: int | None = None
    total_steps: int | None = None
    lora_file: str | None = None
    host: str | None = None
    device: str | None = None
    error: str | None = None


OUTCOME_FIELDS = tuple(f.name for f in msgspec.structs.fields(VariantOutcome))


class VariantResult(VariantOutcome, frozen=True, kw_only=True):
    """SWEEP_DIR/.work/<variant>.result.json, written by the variant's worker."""

    pid: int | None = None
    advice: str | None = None
    resumed_from: str | None = None
    score_note: str | None = None


class VariantEntry(VariantOutcome, frozen=True, kw_only=True):
    """One variant in sweep.json."""

    name: str
    run_dir: str
    dataset: str | None = None
    values: dict[str, TomlValue] = {}  # grid key -> its value in this variant
    status: Status = PENDING
    recommended_step: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    log: str | None = None
    resume: bool | None = None  # this sweep resumed it from its saved state
    pid: int | None = None  # its worker's, on the local backend


class SweepKey(Record, frozen=True, kw_only=True):
    """What identifies a sweep (sweep.json `spec`): a rerun of SWEEP_DIR must ask for the same."""

    datasets: list[str] = []
    preset: str | None = None
    base_model: str | None = None
    grid: dict[str, list[TomlValue]] = {}  # swept key -> its values
    set: list[str] = []
    tokenizer_cache_dir: str | None = None


class SweepDoc(Record, frozen=True, kw_only=True):
    """SWEEP_DIR/sweep.json."""

    schema: int = STATE_SCHEMA
    kohya_wrap_version: str | None = None
    created_at: str | None = None
    spec: SweepKey = SweepKey()
    backend: str | None = None
    updated_at: str | None = None
    variants: tuple[VariantEntry, ...]


def sweep_key(spec: SweepSpec) -> SweepKey:
    return SweepKey(
        datasets=[str(d) for d in spec.datasets],
        preset=spec.preset,
        base_model=spec.base_model,
        grid={a.key: list(a.values) for a in spec.grid},
        set=list(spec.overrides),
        tokenizer_cache_dir=str(spec.tokenizer_cache_dir) if spec.tokenizer_cache_dir else None,
    )


@dataclass(frozen=True)
class SweepPaths:
    sweep_dir: Path

    @property
    def sweep_json(self) -> Path:
        return self.sweep_dir / SWEEP_JSON

    def log(self, name: str) -> Path:
        return self.sweep_dir / LOGS_DIR / f"{name}.log"

    def result(self, name: str) -> Path:
        return self.sweep_dir / WORK_DIR / f"{name}{RESULT_SUFFIX}"

    @property
    def attempts_dir(self) -> Path:
        return self.sweep_dir / ATTEMPTS_DIR

    def attempt(self, name: str) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return self.attempts_dir / f"{name}-{stamp}"


def sweep_paths(sweep_dir: str | Path) -> SweepPaths:
    return SweepPaths(Path(sweep_dir))


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_JSON).is_file()


def read_sweep(sweep_dir: str | Path) -> SweepDoc:
    path = sweep_paths(sweep_dir).sweep_json
    if not path.is_file():
        raise SweepError(
            f"{sweep_dir} is not a sweep directory: it has no {SWEEP_JSON}", "give the -o folder of `kohya-wrap sweep`"
        )
    return codec.read(path, SweepDoc, what="the sweep's state", hint=_HINT)


def write_result(path: Path, result: VariantResult) -> None:
    codec.write(path, result)


def read_result(path: Path) -> VariantResult | None:
    """A worker's result, or None when it wrote none (it was killed) or it cannot be read."""
    try:
        return codec.read(path, VariantResult, what="the variant's result")
    except codec.RecordError:
        return None


def recommended_step(run_dir: Path) -> int | None:
    """The score stage's recommendation (RUN_DIR/score.json `recommended.step`), when there is one."""
    from kohya_wrap.score import load_score
    from kohya_wrap.score import recommended_step as step_of

    return step_of(load_score(run_dir))


def run_outcome(run_dir: Path) -> str | None:
    """The outcome in the run's run.json; None without one."""
    manifest = rundir.read_manifest(rundir.paths(run_dir).run_json)
    return manifest.outcome if manifest is not None else None


def _entry(variant: Variant, old: VariantEntry | None) -> VariantEntry:
    fresh = VariantEntry(
        name=variant.name,
        run_dir=str(variant.run_dir),
        dataset=str(variant.dataset_dir),
        values=dict(variant.values),
    )
    if old is None:
        return fresh
    # what the earlier command learnt stays; a variant it did not end is pending again
    kept = msgspec.structs.replace(old, name=fresh.name, run_dir=fresh.run_dir, dataset=fresh.dataset)
    return msgspec.structs.replace(
        kept,
        values=fresh.values,
        status=old.status if old.status in (DONE, SKIPPED, ERROR) else PENDING,
        resume=None,
        pid=None,
    )


class SweepState:
    """sweep.json in memory; every change is written at once (atomically), from one process."""

    def __init__(self, sweep_dir: Path, doc: SweepDoc) -> None:
        self.sweep_dir = sweep_dir
        self.paths = sweep_paths(sweep_dir)
        self.doc = doc
        self._lock = threading.Lock()

    @classmethod
    def open(cls, sweep_dir: Path, key: SweepKey, variants: list[Variant], backend: str) -> SweepState:
        """The sweep.json of SWEEP_DIR for these variants: a new one, or the earlier one for the same sweep."""
        if is_sweep_dir(sweep_dir):
            doc = read_sweep(sweep_dir)
            if doc.spec != key:
                raise SweepError(
                    f"{sweep_dir} holds another sweep (its sweep.json was made for other datasets, preset, model, "
                    "--set or --grid values)",
                    "run the same command as before to finish it, or give a new -o folder for this sweep",
                )
        else:
            doc = SweepDoc(kohya_wrap_version=__version__, created_at=codec.utc_now_text(), spec=key, variants=())
        old = {v.name: v for v in doc.variants}
        entries = tuple(_entry(v, old.get(v.name)) for v in variants)
        state = cls(sweep_dir, msgspec.structs.replace(doc, variants=entries, backend=backend))
        state.write()
        return state

    @property
    def entries(self) -> tuple[VariantEntry, ...]:
        return self.doc.variants

    def write(self) -> None:
        self.doc = msgspec.structs.replace(self.doc, updated_at=codec.utc_now_text())
        codec.write(self.paths.sweep_json, self.doc)

    def entry(self, name: str) -> VariantEntry:
        for entry in self.doc.variants:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def update(self, name: str, **fields: object) -> VariantEntry:
        """Change fields of one variant and write the file; the variant as it is now."""
        with self._lock:
            changed = msgspec.structs.replace(self.entry(name), **fields)
            variants = tuple(changed if e.name == name else e for e in self.doc.variants)
            self.doc = msgspec.structs.replace(self.doc, variants=variants)
            self.write()
            return changed

    def record_result(self, name: str, result: VariantOutcome, **fields: object) -> VariantEntry:
        """A worker's outcome (and `fields`) into its variant."""
        outcome = {f: getattr(result, f) for f in OUTCOME_FIELDS}
        return self.update(name, **{**outcome, **fields})

    def refresh_from_run(self, name: str) -> VariantEntry:
        """Take outcome, loss, steps and the LoRA from the run's own run.json (and score.json)."""
        run_dir = Path(self.entry(name).run_dir)
        manifest = rundir.read_manifest(rundir.paths(run_dir).run_json)
        fields: dict[str, object] = {"recommended_step": recommended_step(run_dir)}
        if manifest is not None:
            fields.update(
                outcome=manifest.outcome,
                exit_code=manifest.exit_code,
                final_loss=manifest.final_loss,
                last_step=manifest.steps.reached,
                total_steps=manifest.steps.planned,
                lora_file=manifest.lora.path if manifest.lora is not None else None,
            )
        return self.update(name, **fields)
