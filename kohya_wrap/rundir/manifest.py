"""RUN_DIR/run.json: what was trained, with what, on which machine, and what came out.

RunManifest is the typed record; write_manifest and read_manifest are its only writer and reader.
train writes it at the end of every attempt (whatever the outcome); status, the report and the
runs table read it. Reading is lenient: a field an older kohya-wrap did not write reads as None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kohya_wrap import __version__
from kohya_wrap.fsutil import atomic_write_json, load_json, sha256_file
from kohya_wrap.safetensors_header import incomplete

MANIFEST_SCHEMA = 1

_NUMBER = (int, float)
_OBJECT = (dict,)
_LIST = (list,)


def check_shape(
    doc: Any, shape: Mapping[str, tuple[type, ...]], where: str, required: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """`doc` as a JSON object whose present, non-null keys have the types `shape` gives (bool is no number),
    and whose `required` keys are present and not null.

    ValueError naming the key otherwise: a file someone edited reads as damaged, never as a crash later.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"{where} is a JSON {type(doc).__name__}, not an object")
    for key, types in shape.items():
        value = doc.get(key)
        if value is None:
            if key in required:
                raise ValueError(f"{where}: {key} is missing")
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{where}: {key} is {type(value).__name__} {value!r:.40}, not {names}")
    return doc


def _items(doc: Mapping[str, Any], key: str, where: str) -> list[Any]:
    items = doc.get(key) or []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: {key}[{i}] is not an object")
    return items


_FILE_ENTRY = {
    "path": (str,),
    "step": (int,),
    "exists": (bool,),
    "bytes": (int,),
    "sha256": (str,),
    "complete": (bool,),
    "problem": (str,),
}
_ATTEMPT = {
    "started_at": (str,),
    "ended_at": (str,),
    "duration_s": _NUMBER,
    "outcome": (str,),
    "exit_code": (int,),
    "returncode": (int,),
    "stop_reason": (str,),
    "resumed_from": (str,),
    "resumed_at_step": (int,),
    "argv": _LIST,
    "machine": _OBJECT,
}
_MANIFEST = {
    "run_dir": (str,),
    "outcome": (str,),
    "exit_code": (int,),
    "started_at": (str,),
    "ended_at": (str,),
    **{k: _OBJECT for k in ("preset", "values", "value_sources", "base_model", "sd_scripts", "machine")},
    **{k: _OBJECT for k in ("environment", "steps", "lora", "verification", "score")},
    **{k: _LIST for k in ("checkpoints", "states", "samples", "errors", "attempts")},
    "dataset_manifest_sha256": (str,),
    "mean_it_per_s": _NUMBER,
    "final_loss": (int, float, str),
}


@dataclass(frozen=True)
class FileEntry:
    path: str
    step: int | None
    exists: bool = True
    bytes: int | None = None
    sha256: str | None = None
    problem: str | None = None  # why the file is not a complete safetensors file (cut short by a kill mid-save)

    @property
    def complete(self) -> bool:
        return self.exists and self.problem is None

    @staticmethod
    def of(path: Path, step: int | None) -> FileEntry:
        if not path.is_file():
            return FileEntry(str(path), step, exists=False)
        problem = incomplete(path) if path.suffix == ".safetensors" else None
        return FileEntry(str(path), step, True, path.stat().st_size, sha256_file(path), problem)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "step": self.step, "exists": self.exists}
        if self.exists:
            out["bytes"], out["sha256"] = self.bytes, self.sha256
            out["complete"] = self.problem is None
            if self.problem is not None:
                out["problem"] = self.problem
        return out

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> FileEntry:
        check_shape(doc, _FILE_ENTRY, "a file entry")
        return FileEntry(
            str(doc.get("path", "")),
            doc.get("step"),
            bool(doc.get("exists", True)),
            doc.get("bytes"),
            doc.get("sha256"),
            (doc.get("problem") or "incomplete") if doc.get("complete") is False else None,
        )


@dataclass(frozen=True)
class Attempt:
    """One launch of the trainer: the first one and each resume."""

    started_at: str
    ended_at: str
    duration_s: float
    outcome: str
    exit_code: int
    returncode: int | None
    stop_reason: str | None
    resumed_from: str | None
    resumed_at_step: int | None
    argv: tuple[str, ...]
    machine: Mapping[str, Any] = field(default_factory=dict)  # what train resolved on the machine it ran on
    extend_steps: int | None = None  # `train --extend STEPS`: the steps added after resumed_at_step

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["argv"], out["machine"] = list(self.argv), dict(self.machine)
        return out

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> Attempt:
        check_shape(doc, _ATTEMPT, "an attempt")
        if not all(isinstance(a, str) for a in doc.get("argv") or ()):
            raise ValueError("an attempt: argv holds a non-string")
        return Attempt(
            str(doc.get("started_at", "")),
            str(doc.get("ended_at", "")),
            float(doc.get("duration_s") or 0.0),
            str(doc.get("outcome", "")),
            int(doc.get("exit_code") or 0),
            doc.get("returncode"),
            doc.get("stop_reason"),
            doc.get("resumed_from"),
            doc.get("resumed_at_step"),
            tuple(doc.get("argv") or ()),
            dict(doc.get("machine") or {}),
            doc.get("extend_steps"),
        )


@dataclass(frozen=True)
class RunManifest:
    run_dir: str
    outcome: str
    exit_code: int | None
    started_at: str | None  # of the first attempt
    ended_at: str | None  # of the latest one
    preset: Mapping[str, Any] = field(default_factory=dict)  # name, sha256
    values: Mapping[str, Any] = field(default_factory=dict)
    value_sources: Mapping[str, str] = field(default_factory=dict)
    dataset_manifest_sha256: str | None = None
    base_model: Mapping[str, Any] = field(default_factory=dict)  # path, sha256
    sd_scripts: Mapping[str, Any] = field(default_factory=dict)  # path, commit: the checkout that trained
    machine: Mapping[str, Any] = field(default_factory=dict)  # of the latest attempt
    environment: Mapping[str, Any] = field(default_factory=dict)  # package versions of the trainer's Python
    steps: Mapping[str, Any] = field(default_factory=dict)  # planned, reached, trainer_total
    mean_it_per_s: float | None = None
    final_loss: float | None = None
    checkpoints: tuple[FileEntry, ...] = ()
    states: tuple[Mapping[str, Any], ...] = ()  # path, step
    samples: tuple[Mapping[str, Any], ...] = ()  # path, step, prompt_index
    lora: FileEntry | None = None
    verification: Mapping[str, Any] | None = None  # ok, checks
    score: Mapping[str, Any] | None = None  # the recommendation of `score`, when it ran
    stopped_early: Mapping[str, Any] | None = None  # step, reason, stopped_at, planned, steps_saved, seconds_saved
    errors: tuple[Mapping[str, Any], ...] = ()
    attempts: tuple[Attempt, ...] = ()

    @property
    def finished(self) -> bool:
        return self.outcome == "finished"

    @property
    def ended_well(self) -> bool:
        """Finished, or stopped early by live scoring: a run `train --extend` can continue."""
        from kohya_wrap.events import ENDED_WELL

        return self.outcome in ENDED_WELL

    @property
    def last_checkpoint(self) -> FileEntry | None:
        """The saved LoRA of the highest step that still exists (the final file counts at its step)."""
        saved = [
            c for c in (*self.checkpoints, *((self.lora,) if self.lora else ())) if c.exists and c.step is not None
        ]
        saved = [c for c in saved if Path(c.path).is_file()]
        return max(saved, key=lambda c: (c.step, c.path != (self.lora.path if self.lora else None))) if saved else None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "kohya_wrap_version": __version__,
            "run_dir": self.run_dir,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "preset": dict(self.preset),
            "values": dict(self.values),
            "value_sources": dict(self.value_sources),
            "dataset_manifest_sha256": self.dataset_manifest_sha256,
            "base_model": dict(self.base_model),
            "sd_scripts": dict(self.sd_scripts),
            "machine": dict(self.machine),
            "environment": dict(self.environment),
            "steps": dict(self.steps),
            "mean_it_per_s": None if self.mean_it_per_s is None else round(self.mean_it_per_s, 4),
            "final_loss": _finite(self.final_loss),
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "states": [dict(s) for s in self.states],
            "samples": [dict(s) for s in self.samples],
            "lora": self.lora.to_json() if self.lora else None,
            "verification": None if self.verification is None else dict(self.verification),
            "score": None if self.score is None else dict(self.score),
            "stopped_early": None if self.stopped_early is None else dict(self.stopped_early),
            "errors": [dict(e) for e in self.errors],
            "attempts": [a.to_json() for a in self.attempts],
        }

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> RunManifest:
        """ValueError when a field has the wrong type (a hand-edited or damaged run.json)."""
        check_shape(doc, _MANIFEST, "run.json")
        for key in ("states", "samples", "errors"):
            _items(doc, key, "run.json")
        loss = doc.get("final_loss")
        if isinstance(loss, str) and loss not in ("nan", "inf", "-inf"):
            raise ValueError(f"run.json: final_loss is {loss!r}, not a number")
        return RunManifest(
            run_dir=str(doc.get("run_dir", "")),
            outcome=str(doc.get("outcome", "")),
            exit_code=doc.get("exit_code"),
            started_at=doc.get("started_at"),
            ended_at=doc.get("ended_at"),
            preset=dict(doc.get("preset") or {}),
            values=dict(doc.get("values") or {}),
            value_sources=dict(doc.get("value_sources") or {}),
            dataset_manifest_sha256=doc.get("dataset_manifest_sha256"),
            base_model=dict(doc.get("base_model") or {}),
            sd_scripts=dict(doc.get("sd_scripts") or {}),
            machine=dict(doc.get("machine") or {}),
            environment=dict(doc.get("environment") or {}),
            steps=dict(doc.get("steps") or {}),
            mean_it_per_s=doc.get("mean_it_per_s"),
            final_loss=float(loss) if isinstance(loss, (int, float, str)) and loss != "" else None,
            checkpoints=tuple(FileEntry.from_json(c) for c in doc.get("checkpoints") or ()),
            states=tuple(doc.get("states") or ()),
            samples=tuple(doc.get("samples") or ()),
            lora=FileEntry.from_json(doc["lora"]) if doc.get("lora") else None,
            verification=doc.get("verification"),
            score=doc.get("score"),
            stopped_early=doc.get("stopped_early"),
            errors=tuple(doc.get("errors") or ()),
            attempts=tuple(Attempt.from_json(a) for a in doc.get("attempts") or ()),
        )


def _finite(value: float | None) -> float | str | None:
    """strict JSON has no NaN: a diverged loss is written as events.py writes it."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def write_manifest(path: Path, manifest: RunManifest) -> None:
    atomic_write_json(path, manifest.to_json())


def read_manifest(path: Path) -> RunManifest | None:
    """run.json, or None when there is none or it cannot be read (train rewrites it at every attempt's end)."""
    doc = read_manifest_json(path)
    return RunManifest.from_json(doc) if doc is not None else None


def read_manifest_json(path: Path) -> dict[str, Any] | None:
    """run.json as written, for the report's table of every field."""
    try:
        data = load_json(path.read_text(encoding="utf-8"))
        RunManifest.from_json(data)  # a field of the wrong type makes the whole file unreadable, here
    except (OSError, ValueError):
        return None
    return data


def record_score(run_dir: Path, score: Mapping[str, Any]) -> None:
    """Add the score's recommendation to a run's run.json (after `score` ran on a finished run)."""
    from dataclasses import replace

    from kohya_wrap.rundir.layout import paths

    path = paths(run_dir).run_json
    manifest = read_manifest(path)
    if manifest is not None:
        write_manifest(path, replace(manifest, score=dict(score)))
