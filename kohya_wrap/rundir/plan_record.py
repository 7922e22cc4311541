"""RUN_DIR/plan.json: the typed Plan record, written by write_plan and read by read_plan, nowhere else.

The record says what to train, never where: no interpreter path, no sd-scripts checkout path, no
device flags, no thread count and no mixed precision chosen for a device that may not be there.
`train` resolves those on the machine that trains (kohya_wrap/train/machine.py) and records them
in run.json. Schema 1 (which held the planning machine's command line) is converted on read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kohya_wrap import __version__
from kohya_wrap.errors import KohyaWrapError, RunDirError
from kohya_wrap.fsutil import atomic_write_json, atomic_write_text, load_json
from kohya_wrap.rundir.layout import (
    ACCELERATE_CONFIG,
    CONFIG_TOML,
    DATASET_DIR,
    DATASET_TOML,
    OUTPUT_DIR,
    PLAN_FILES,
    PLAN_JSON,
    RUN_FILES,
    SAMPLE_PROMPTS,
)
from kohya_wrap.rundir.manifest import check_shape

PLAN_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)


@dataclass(frozen=True)
class Machines:
    """Several machines training one run together (accelerate's multi-node data parallel launch).

    Every machine runs the same plan with its own rank; rank 0 is the main process at main_ip:main_port.
    """

    count: int = 1
    rank: int = 0
    main_ip: str | None = None
    main_port: int = 29500

    def check(self) -> None:
        if self.count < 1:
            raise KohyaWrapError(f"--num-machines {self.count}: must be at least 1")
        if not 0 <= self.rank < self.count:
            raise KohyaWrapError(
                f"--machine-rank {self.rank}: must be 0 to {self.count - 1} for {self.count} machine(s)",
                "give rank 0 on the main machine and 1, 2, ... on the others",
            )
        if self.count > 1 and not self.main_ip:
            raise KohyaWrapError(
                f"--num-machines {self.count} needs --main-process-ip",
                "give the address of the rank-0 machine, reachable from every machine",
            )
        if not 0 < self.main_port < 65536:
            raise KohyaWrapError(f"--main-process-port {self.main_port}: not a TCP port")


@dataclass(frozen=True)
class LaunchRequest:
    """What the plan asks of the machines that train it; train maps it onto the machine it finds."""

    gpus: int = 1  # processes (GPUs) on each machine; a CPU-only machine trains in one process
    machines: Machines = Machines()

    @property
    def num_processes(self) -> int:
        return self.gpus * self.machines.count

    def to_json(self) -> dict[str, Any]:
        m = self.machines
        return {
            "gpus": self.gpus,
            "num_machines": m.count,
            "machine_rank": m.rank,
            "main_process_ip": m.main_ip,
            "main_process_port": m.main_port,
        }

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> LaunchRequest:
        return LaunchRequest(
            int(doc.get("gpus", 1)),
            Machines(
                int(doc.get("num_machines", 1)),
                int(doc.get("machine_rank", 0)),
                doc.get("main_process_ip"),
                int(doc.get("main_process_port", 29500)),
            ),
        )


@dataclass(frozen=True)
class PlanSubset:
    dir: str
    images: int
    repeats: int
    class_tokens: str
    is_reg: bool


@dataclass(frozen=True)
class Plan:
    run_dir: Path
    created_at: str
    preset_name: str
    preset_sha256: str
    preset_files: tuple[str, ...]
    dataset_dir: str
    manifest_sha256: str | None
    subsets: tuple[PlanSubset, ...]
    base_model: Mapping[str, str | None]  # source, path (None: a hub model not fetched yet), kind
    tokenizer_cache_dir: str | None  # None: kohya-wrap's own cache, filled by train when empty
    values: Mapping[str, Any]  # sd-scripts argument -> the value written to config.toml
    sources: Mapping[str, str]  # sd-scripts argument -> "default", "preset:<name>", "--set" or "plan"
    ours: Mapping[str, Any]
    steps: Mapping[str, Any]
    launch: LaunchRequest
    env: Mapping[str, str]  # variables the trainer gets on any machine
    output_dir: Path
    output_name: str
    lora_file: Path
    sd_scripts: Mapping[str, Any]  # the checkout it was planned against: commit, matches_pin
    warnings: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # file name in RUN_DIR -> its text
    # where plan wrote the run directory, when it is now elsewhere (copied or moved): config.toml's
    # paths still point there, so train points them here (sdscripts.relocated_args)
    planned_at: Path | None = None

    @property
    def max_train_steps(self) -> int:
        return int(self.steps["max_train_steps"])

    @property
    def auto_mixed_precision(self) -> bool:
        """train chooses the precision from the GPU it finds (the preset and --set left it open)."""
        return bool(self.ours.get("auto_mixed_precision", True)) and "mixed_precision" not in self.values

    @property
    def base_model_path(self) -> Path | None:
        path = self.base_model.get("path")
        return Path(path) if path else None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "kohya_wrap_version": __version__,
            "created_at": self.created_at,
            "preset": {"name": self.preset_name, "sha256": self.preset_sha256, "files": list(self.preset_files)},
            "dataset": {
                "dir": self.dataset_dir,
                "manifest_sha256": self.manifest_sha256,
                "subsets": [
                    {
                        "dir": s.dir,
                        "images": s.images,
                        "repeats": s.repeats,
                        "class_tokens": s.class_tokens,
                        "is_reg": s.is_reg,
                    }
                    for s in self.subsets
                ],
            },
            "base_model": dict(self.base_model),
            "tokenizer_cache_dir": self.tokenizer_cache_dir,
            "values": {k: {"value": v, "source": self.sources[k]} for k, v in self.values.items()},
            "ours": dict(self.ours),
            "steps": dict(self.steps),
            "launch": {**self.launch.to_json(), "env": dict(self.env)},
            "output": {"dir": str(self.output_dir), "name": self.output_name, "lora_file": str(self.lora_file)},
            "sd_scripts": dict(self.sd_scripts),
            "warnings": list(self.warnings),
        }


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder that holds a run (finished or started) or anything that is not ours."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a folder", "choose a new run directory with -o")
    started = [name for name in RUN_FILES if (run_dir / name).exists()]
    output = run_dir / OUTPUT_DIR
    if output.is_dir() and any(output.iterdir()):
        started.append(f"{OUTPUT_DIR}/")
    if started:
        raise RunDirError(
            f"{run_dir} holds a run ({', '.join(started)}); a run directory is never overwritten",
            "choose a new run directory with -o",
        )
    foreign = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name not in (*PLAN_FILES, ACCELERATE_CONFIG, OUTPUT_DIR, DATASET_DIR) and not p.name.startswith(".")
    )
    if foreign:
        raise RunDirError(
            f"{run_dir} is not empty ({', '.join(foreign[:5])}) and is not a kohya-wrap run directory",
            "choose a new or empty run directory with -o",
        )


def write_plan(plan: Plan) -> Path:
    """Write RUN_DIR: the configs first, plan.json last (its presence means the plan is complete)."""
    check_new_run_dir(plan.run_dir)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    stale = plan.run_dir / SAMPLE_PROMPTS
    if SAMPLE_PROMPTS not in plan.files and stale.exists():
        stale.unlink()
    for name, text in plan.files.items():
        atomic_write_text(plan.run_dir / name, text)
    path = plan.run_dir / PLAN_JSON
    atomic_write_json(path, plan.to_json())
    return path


def _launch_from_schema_1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 1 held the planning machine's argv; of it, only what was asked of the machines is kept."""
    argv = list((doc.get("launch") or {}).get("argv") or [])

    def flag(name: str, default: Any) -> Any:
        return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default

    machines = int(flag("--num_machines", 1))
    processes = int(flag("--num_processes", (doc.get("steps") or {}).get("num_processes", 1)))
    return {
        "gpus": max(1, processes // max(1, machines)),
        "num_machines": machines,
        "machine_rank": int(flag("--machine_rank", 0)),
        "main_process_ip": flag("--main_process_ip", None),
        "main_process_port": int(flag("--main_process_port", 29500)),
        "env": (doc.get("launch") or {}).get("env") or {},
    }


def read_plan(run_dir: str | Path) -> Plan:
    """The Plan of a planned run directory; RunDirError when it has none or it cannot be read."""
    run = Path(run_dir).expanduser().resolve()
    path = run / PLAN_JSON
    if not path.is_file():
        raise RunDirError(
            f"{run} has no {PLAN_JSON}: it is not a planned run directory",
            "make one with `kohya-wrap plan DATASET_DIR --preset NAME --base-model MODEL -o RUN_DIR`",
        )
    try:
        doc = load_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RunDirError(f"{path} cannot be read as JSON: {e}", "plan the run again into a new directory") from None
    if not isinstance(doc, dict):
        raise RunDirError(
            f"{path} holds a JSON {type(doc).__name__}, not an object", "plan the run again into a new directory"
        )
    if doc.get("schema") not in READABLE_SCHEMAS:
        raise RunDirError(
            f"{path} has plan schema {doc.get('schema')!r}; this kohya-wrap reads {PLAN_SCHEMA}",
            "plan the run again with this kohya-wrap",
        )
    try:
        _check_plan_shape(doc, path)
    except ValueError as e:
        raise RunDirError(f"{e}", "plan the run again into a new directory") from None
    launch = _launch_from_schema_1(doc) if doc["schema"] == 1 else doc["launch"]
    try:
        planned_at = Path(doc["output"]["dir"]).parent
        files = {
            name: (run / name).read_text(encoding="utf-8")
            for name in (CONFIG_TOML, DATASET_TOML, SAMPLE_PROMPTS)
            if (run / name).is_file()
        }
        return Plan(
            run_dir=run,
            created_at=doc["created_at"],
            preset_name=doc["preset"]["name"],
            preset_sha256=doc["preset"]["sha256"],
            preset_files=tuple(doc["preset"]["files"]),
            dataset_dir=doc["dataset"]["dir"],
            manifest_sha256=doc["dataset"]["manifest_sha256"],
            subsets=tuple(_relocated(PlanSubset(**s), planned_at, run) for s in doc["dataset"]["subsets"]),
            base_model=MappingProxyType(doc["base_model"]),
            tokenizer_cache_dir=doc["tokenizer_cache_dir"],
            values=MappingProxyType({k: v["value"] for k, v in doc["values"].items()}),
            sources=MappingProxyType({k: v["source"] for k, v in doc["values"].items()}),
            ours=MappingProxyType(doc["ours"]),
            steps=MappingProxyType(doc["steps"]),
            launch=LaunchRequest.from_json(launch),
            env=MappingProxyType(dict(launch.get("env") or {})),
            # the run directory's own output folder wherever it is now, never plan time's absolute path
            output_dir=run / OUTPUT_DIR,
            output_name=doc["output"]["name"],
            lora_file=run / OUTPUT_DIR / Path(doc["output"]["lora_file"]).name,
            planned_at=planned_at if planned_at != run else None,
            sd_scripts=MappingProxyType({k: v for k, v in doc["sd_scripts"].items() if k != "path"}),
            warnings=tuple(doc.get("warnings", ())),
            files=MappingProxyType(files),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunDirError(f"{path} is missing or has a bad {e}", "plan the run again with this kohya-wrap") from None


def _relocated(subset: PlanSubset, planned_at: Path, run: Path) -> PlanSubset:
    """A subset folder inside the run directory where it was planned (`run` prepares the dataset there),
    read inside the run directory where it is now."""
    folder = Path(subset.dir)
    if planned_at == run or planned_at not in folder.parents:
        return subset
    return replace(subset, dir=str(run / folder.relative_to(planned_at)))


_STR, _INT, _DICT, _LIST = (str,), (int,), (dict,), (list,)


def _check_plan_shape(doc: dict[str, Any], path: Path) -> None:
    """ValueError naming the first field of plan.json that has the wrong type (a hand edit, a damaged file)."""
    where = str(path)
    check_shape(
        doc,
        {
            "created_at": _STR,
            "schema": _INT,
            "tokenizer_cache_dir": _STR,
            "warnings": _LIST,
            **{k: _DICT for k in ("preset", "dataset", "base_model", "values", "ours", "steps", "output")},
            **{k: _DICT for k in ("sd_scripts", "launch")},
        },
        where,
        ("created_at",),
    )
    for key in ("preset", "dataset", "base_model", "values", "ours", "steps", "output", "sd_scripts"):
        if not isinstance(doc.get(key), dict):
            raise ValueError(f"{where}: {key} is missing")
    check_shape(doc["preset"], {"name": _STR, "sha256": _STR, "files": _LIST}, f"{where}: preset", ("name", "sha256"))
    check_shape(doc["dataset"], {"dir": _STR, "manifest_sha256": _STR, "subsets": _LIST}, f"{where}: dataset", ("dir",))
    for i, subset in enumerate(doc["dataset"].get("subsets") or ()):
        shape = {"dir": _STR, "images": _INT, "repeats": _INT, "class_tokens": _STR, "is_reg": (bool,)}
        check_shape(subset, shape, f"{where}: dataset.subsets[{i}]", tuple(shape))
    check_shape(doc["base_model"], {"source": _STR, "path": _STR, "kind": _STR}, f"{where}: base_model", ("source",))
    for key, entry in doc["values"].items():
        check_shape(entry, {"source": _STR}, f"{where}: values.{key}")
        if not isinstance(entry.get("source"), str) or "value" not in entry:
            raise ValueError(f"{where}: values.{key} needs a value and a source")
    check_shape(
        doc["steps"], {"max_train_steps": _INT, "steps_per_epoch": _INT}, f"{where}: steps", ("max_train_steps",)
    )
    check_shape(
        doc["output"], {"dir": _STR, "name": _STR, "lora_file": _STR}, f"{where}: output", ("dir", "name", "lora_file")
    )
    if not all(isinstance(w, str) for w in doc.get("warnings") or ()) or not all(
        isinstance(f, str) for f in doc["preset"].get("files") or ()
    ):
        raise ValueError(f"{where}: warnings and preset.files hold strings only")


def trained_to_the_end(plan: Plan) -> bool:
    """The trainer finished the plan: the final LoRA is in output/, complete, and holds the planned last
    step (`ss_steps`). Only the end of training writes that file (a step checkpoint has a suffix)."""
    from kohya_wrap.safetensors_header import HeaderError, incomplete
    from kohya_wrap.safetensors_header import read_header as read_safetensors_header
    from kohya_wrap.sdscripts.lora import training_step

    path = plan.lora_file
    if not path.is_file() or incomplete(path) is not None:
        return False
    try:
        header, _ = read_safetensors_header(path)
    except (OSError, HeaderError):
        return False
    meta = header.get("__metadata__")
    return isinstance(meta, dict) and training_step(meta) == plan.max_train_steps
