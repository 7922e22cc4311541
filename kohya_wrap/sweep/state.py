"""SWEEP_DIR/sweep.json: the sweep and each variant's progress, rewritten atomically as variants move on.

    {"schema": 1, "spec": {...}, "backend": "local", "updated_at": "...",
     "variants": [{"name", "run_dir", "dataset", "values", "status", "outcome", "exit_code",
                   "recommended_step", "final_loss", "last_step", "total_steps", "lora_file", "host",
                   "device", "started_at", "ended_at", "error", "log"}]}

`status`: pending (not started by this sweep yet), running, done (trained to an outcome), skipped
(finished before this sweep command), error (could not be trained: the message is in `error`).
`outcome` and `exit_code` are the run's own (run.json); `recommended_step` comes from RUN_DIR/score.json
(`recommended.step`) when the score stage wrote one, else null. Only the sweep's driver writes the file.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kohya_wrap import __version__, rundir
from kohya_wrap.codec import to_builtins, utc_now_text
from kohya_wrap.fsutil import atomic_write_json, load_json
from kohya_wrap.sweep.spec import SweepError
from kohya_wrap.sweep.variants import Variant

SWEEP_JSON = "sweep.json"
LOGS_DIR = "logs"  # SWEEP_DIR/logs/<variant>.log: what each variant's worker printed
WORK_DIR = ".work"  # SWEEP_DIR/.work/<variant>.result.json: a worker's result, read by the driver
ATTEMPTS_DIR = "attempts"  # SWEEP_DIR/attempts/<variant>-<time>: a failed attempt set aside before a restart
STATE_SCHEMA = 1

PENDING, RUNNING, DONE, SKIPPED, ERROR = "pending", "running", "done", "skipped", "error"


@dataclass(frozen=True)
class SweepPaths:
    sweep_dir: Path

    @property
    def sweep_json(self) -> Path:
        return self.sweep_dir / SWEEP_JSON

    def log(self, name: str) -> Path:
        return self.sweep_dir / LOGS_DIR / f"{name}.log"

    def result(self, name: str) -> Path:
        return self.sweep_dir / WORK_DIR / f"{name}.result.json"

    def attempt(self, name: str) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return self.sweep_dir / ATTEMPTS_DIR / f"{name}-{stamp}"


def sweep_paths(sweep_dir: str | Path) -> SweepPaths:
    return SweepPaths(Path(sweep_dir))


def now_text() -> str:
    return utc_now_text()


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_JSON).is_file()


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    path = sweep_paths(sweep_dir).sweep_json
    try:
        doc = load_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(
            f"{sweep_dir} is not a sweep directory: it has no {SWEEP_JSON}", "give the -o folder of `kohya-wrap sweep`"
        ) from None
    except (OSError, ValueError) as e:
        raise SweepError(f"{path} cannot be read: {e}", "restore it, or run the sweep into a new folder") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), list):
        raise SweepError(f"{path} is not a sweep.json (no variants list)", "run the sweep into a new folder")
    try:
        _check_shape(doc, {"spec": (dict,), "backend": (str,), "updated_at": (str,)}, str(path))
        for i, variant in enumerate(doc["variants"]):
            _check_shape(variant, _VARIANT, f"{path}: variants[{i}]")
            if not isinstance(variant.get("name"), str) or not isinstance(variant.get("run_dir"), str):
                raise ValueError(f"{path}: variants[{i}] has no name or run_dir")
    except ValueError as e:
        raise SweepError(f"{e}", "restore it, or run the sweep into a new folder") from None
    return doc


def _check_shape(doc: Any, shape: dict[str, tuple[type, ...]], where: str) -> None:
    """ValueError naming the first present, non-null key of `doc` whose type `shape` does not give."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where} is a JSON {type(doc).__name__}, not an object")
    for key, types in shape.items():
        value = doc.get(key)
        if value is not None and ((isinstance(value, bool) and bool not in types) or not isinstance(value, types)):
            names = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{where}: {key} is {type(value).__name__} {value!r:.40}, not {names}")


# The type of each field of a sweep.json variant (null is allowed for every one but name and run_dir).
_VARIANT: dict[str, tuple[type, ...]] = {
    **{k: (str,) for k in ("name", "run_dir", "dataset", "status", "outcome", "lora_file", "host", "device")},
    **{k: (str,) for k in ("started_at", "ended_at", "error", "log")},
    **{k: (int,) for k in ("exit_code", "recommended_step", "last_step", "total_steps")},
    "values": (dict,),
    "final_loss": (int, float, str),
}


def recommended_step(run_dir: Path) -> int | None:
    """The score stage's recommendation (RUN_DIR/score.json `recommended.step`), when there is one."""
    from kohya_wrap.score import load_score
    from kohya_wrap.score import recommended_step as step_of

    return step_of(load_score(run_dir))


def run_manifest(run_dir: Path) -> dict[str, Any] | None:
    manifest = rundir.read_manifest(rundir.paths(run_dir).run_json)
    return None if manifest is None else to_builtins(manifest)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return value


class SweepState:
    """sweep.json in memory; every change is written at once (atomically), from one process."""

    def __init__(self, sweep_dir: Path, doc: dict[str, Any]) -> None:
        self.sweep_dir = sweep_dir
        self.paths = sweep_paths(sweep_dir)
        self.doc = doc
        self._lock = threading.Lock()

    @classmethod
    def open(cls, sweep_dir: Path, spec_json: Mapping[str, Any], variants: list[Variant], backend: str) -> SweepState:
        """The sweep.json of SWEEP_DIR for these variants: a new one, or the earlier one for the same sweep."""
        doc: dict[str, Any]
        if is_sweep_dir(sweep_dir):
            doc = read_sweep(sweep_dir)
            if doc.get("spec") != dict(spec_json):
                raise SweepError(
                    f"{sweep_dir} holds another sweep (its sweep.json was made for other datasets, preset, model, "
                    "--set or --grid values)",
                    "run the same command as before to finish it, or give a new -o folder for this sweep",
                )
        else:
            doc = {
                "schema": STATE_SCHEMA,
                "kohya_wrap_version": __version__,
                "created_at": now_text(),
                "spec": dict(spec_json),
                "variants": [],
            }
        old = {v.get("name"): v for v in doc.get("variants", []) if isinstance(v, dict)}
        doc["variants"] = [cls._entry(v, old.get(v.name)) for v in variants]
        doc["backend"] = backend
        state = cls(sweep_dir, doc)
        state.write()
        return state

    @staticmethod
    def _entry(variant: Variant, old: dict[str, Any] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": variant.name,
            "run_dir": str(variant.run_dir),
            "dataset": str(variant.dataset_dir),
            "values": {k: _json_value(v) for k, v in variant.values.items()},
            "status": PENDING,
            "outcome": None,
            "exit_code": None,
            "recommended_step": None,
            "final_loss": None,
            "last_step": None,
            "total_steps": None,
            "lora_file": None,
            "host": None,
            "device": None,
            "started_at": None,
            "ended_at": None,
            "error": None,
            "log": None,
        }
        for key in (
            "outcome",
            "exit_code",
            "final_loss",
            "last_step",
            "total_steps",
            "lora_file",
            "host",
            "device",
            "started_at",
            "ended_at",
            "error",
            "log",
            "recommended_step",
        ):
            if old and key in old:
                entry[key] = old[key]
        if old and old.get("status") in (DONE, SKIPPED, ERROR):
            entry["status"] = old["status"]
        return entry

    def write(self) -> None:
        self.doc["updated_at"] = now_text()
        atomic_write_json(self.paths.sweep_json, self.doc)

    def entry(self, name: str) -> dict[str, Any]:
        for entry in self.doc["variants"]:
            if entry["name"] == name:
                return entry
        raise KeyError(name)

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.entry(name).update({k: _json_value(v) for k, v in fields.items()})
            self.write()

    def refresh_from_run(self, name: str) -> None:
        """Take outcome, loss, steps and the LoRA from the run's own run.json (and score.json)."""
        entry = self.entry(name)
        run_dir = Path(entry["run_dir"])
        manifest = run_manifest(run_dir) or {}
        steps = manifest.get("steps") or {}
        lora = manifest.get("lora") or {}
        fields: dict[str, Any] = {"recommended_step": recommended_step(run_dir)}
        if manifest:
            fields.update(
                outcome=manifest.get("outcome"),
                exit_code=manifest.get("exit_code"),
                final_loss=manifest.get("final_loss"),
                last_step=steps.get("reached"),
                total_steps=steps.get("planned"),
                lora_file=lora.get("path") if isinstance(lora, dict) else None,
            )
        self.update(name, **fields)
