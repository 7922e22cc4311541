"""RUN_DIR/plan.json: the typed Plan record, written by write_plan and read by read_plan, nowhere else.

The record says what to train, never where: no interpreter path, no sd-scripts checkout path, no
device flags, no thread count and no mixed precision chosen for a device that may not be there.
`train` resolves those on the machine that trains (kohya_wrap/train/machine.py) and records them
in run.json. Schema 1 (which held the planning machine's command line) is converted on read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from kohya_wrap import __version__
from kohya_wrap.codec import Record, RecordError, TomlValue, read, write
from kohya_wrap.errors import KohyaWrapError, RunDirError
from kohya_wrap.fsutil import atomic_write_text
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

PLAN_SCHEMA = 2


class Machines(Record, frozen=True, kw_only=False):
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


class LaunchRequest(Record, frozen=True, kw_only=False):
    """What the plan asks of the machines that train it; train maps it onto the machine it finds."""

    gpus: int = 1  # processes (GPUs) on each machine; a CPU-only machine trains in one process
    machines: Machines = Machines()

    @property
    def num_processes(self) -> int:
        return self.gpus * self.machines.count


class PlanSubset(Record, frozen=True, kw_only=False):
    dir: str
    images: int
    repeats: int
    class_tokens: str
    is_reg: bool


class BaseModelRef(Record, frozen=True, kw_only=True):
    """The base model as plan found it: what was asked for, where it is, and what it is."""

    source: str
    path: str | None = None  # None: a hub model not fetched yet
    kind: str | None = None


class PlanSteps(Record, frozen=True, kw_only=True):
    """The step arithmetic of the plan (kohya_wrap/sdscripts/steps.py), as plan.json records it."""

    train_images_x_repeats: int | None = None
    reg_images_x_repeats: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    num_processes: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    max_train_steps: int
    arithmetic: str = ""


class PlannedAgainst(Record, frozen=True, kw_only=True):
    """The sd-scripts checkout the run was planned against (it trains with whichever one train finds)."""

    commit: str | None = None
    matches_pin: bool | None = None


class Plan(Record, frozen=True, kw_only=True):
    """What to train, as plan decided it; plan.json's content, read back where the run directory is now."""

    run_dir: Path
    created_at: str
    preset_name: str
    preset_sha256: str
    preset_files: tuple[str, ...]
    dataset_dir: str
    manifest_sha256: str | None
    subsets: tuple[PlanSubset, ...]
    base_model: BaseModelRef
    tokenizer_cache_dir: str | None  # None: kohya-wrap's own cache, filled by train when empty
    values: Mapping[str, TomlValue]  # sd-scripts argument -> the value written to config.toml
    sources: Mapping[str, str]  # sd-scripts argument -> "default", "preset:<name>", "--set" or "plan"
    ours: Mapping[str, TomlValue]  # the preset's [kohya_wrap] settings
    steps: PlanSteps
    launch: LaunchRequest
    env: Mapping[str, str]  # variables the trainer gets on any machine
    output_dir: Path
    output_name: str
    lora_file: Path
    sd_scripts: PlannedAgainst
    warnings: tuple[str, ...] = ()
    files: Mapping[str, str] = {}  # file name in RUN_DIR -> its text
    # where plan wrote the run directory, when it is now elsewhere (copied or moved): config.toml's
    # paths still point there, so train points them here (sdscripts.relocated_args)
    planned_at: Path | None = None

    @property
    def max_train_steps(self) -> int:
        return self.steps.max_train_steps

    @property
    def auto_mixed_precision(self) -> bool:
        """train chooses the precision from the GPU it finds (the preset and --set left it open)."""
        return bool(self.ours.get("auto_mixed_precision", True)) and "mixed_precision" not in self.values

    @property
    def base_model_path(self) -> Path | None:
        return Path(self.base_model.path) if self.base_model.path else None

    def document(self) -> PlanFile:
        """The plan as plan.json holds it (also what `train --dry-run --json` and the report show)."""
        return PlanFile(
            created_at=self.created_at,
            preset=PresetRef(name=self.preset_name, sha256=self.preset_sha256, files=self.preset_files),
            dataset=DatasetRef(dir=self.dataset_dir, manifest_sha256=self.manifest_sha256, subsets=self.subsets),
            base_model=self.base_model,
            tokenizer_cache_dir=self.tokenizer_cache_dir,
            values={k: PlannedValue(value=v, source=self.sources[k]) for k, v in self.values.items()},
            ours=dict(self.ours),
            steps=self.steps,
            launch=LaunchEntry(
                gpus=self.launch.gpus,
                num_machines=self.launch.machines.count,
                machine_rank=self.launch.machines.rank,
                main_process_ip=self.launch.machines.main_ip,
                main_process_port=self.launch.machines.main_port,
                env=dict(self.env),
            ),
            output=OutputRef(dir=str(self.output_dir), name=self.output_name, lora_file=str(self.lora_file)),
            sd_scripts=self.sd_scripts,
            warnings=self.warnings,
        )


# -- plan.json -----------------------------------------------------------------------------------


class PresetRef(Record, frozen=True, kw_only=True):
    name: str
    sha256: str
    files: tuple[str, ...] = ()


class DatasetRef(Record, frozen=True, kw_only=True):
    dir: str
    manifest_sha256: str | None = None
    subsets: tuple[PlanSubset, ...] = ()


class PlannedValue(Record, frozen=True, kw_only=True):
    value: TomlValue
    source: str


class LaunchEntry(Record, frozen=True, kw_only=True):
    gpus: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500
    env: dict[str, str] = {}


class OutputRef(Record, frozen=True, kw_only=True):
    dir: str
    name: str
    lora_file: str


class PlanFile(Record, frozen=True, kw_only=True):
    """plan.json, schema 2."""

    schema: int = PLAN_SCHEMA
    kohya_wrap_version: str = __version__
    created_at: str
    preset: PresetRef
    dataset: DatasetRef
    base_model: BaseModelRef
    tokenizer_cache_dir: str | None = None
    values: dict[str, PlannedValue] = {}
    ours: dict[str, TomlValue] = {}
    steps: PlanSteps
    launch: LaunchEntry = LaunchEntry()
    output: OutputRef
    sd_scripts: PlannedAgainst = PlannedAgainst()
    warnings: tuple[str, ...] = ()


class LaunchV1(Record, frozen=True, kw_only=True):
    """Schema 1's launch: the planning machine's command line and environment."""

    argv: tuple[str, ...] = ()
    env: dict[str, str] = {}

    def flag(self, name: str, default: str) -> str:
        argv = self.argv
        return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


class PlanFileV1(Record, frozen=True, kw_only=True):
    """plan.json, schema 1 (which held the planning machine's command line)."""

    created_at: str
    preset: PresetRef
    dataset: DatasetRef
    base_model: BaseModelRef
    tokenizer_cache_dir: str | None = None
    values: dict[str, PlannedValue] = {}
    ours: dict[str, TomlValue] = {}
    steps: PlanSteps
    launch: LaunchV1 = LaunchV1()
    output: OutputRef
    sd_scripts: PlannedAgainst = PlannedAgainst()
    warnings: tuple[str, ...] = ()


def _upgrade_v1(old: PlanFileV1) -> PlanFile:
    """Of schema 1's command line, only what was asked of the machines is kept."""
    launch = old.launch
    try:
        machines = int(launch.flag("--num_machines", "1"))
        processes = int(launch.flag("--num_processes", str(old.steps.num_processes or 1)))
        entry = LaunchEntry(
            gpus=max(1, processes // max(1, machines)),
            num_machines=machines,
            machine_rank=int(launch.flag("--machine_rank", "0")),
            main_process_ip=launch.flag("--main_process_ip", "") or None,
            main_process_port=int(launch.flag("--main_process_port", "29500")),
            env=launch.env,
        )
    except ValueError as e:
        raise RecordError(f"launch.argv: {e}") from None
    return PlanFile(
        created_at=old.created_at,
        preset=old.preset,
        dataset=old.dataset,
        base_model=old.base_model,
        tokenizer_cache_dir=old.tokenizer_cache_dir,
        values=old.values,
        ours=old.ours,
        steps=old.steps,
        launch=entry,
        output=old.output,
        sd_scripts=old.sd_scripts,
        warnings=old.warnings,
    )


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
    write(path, plan.document())
    return path


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
        doc = read(
            path,
            PlanFile,
            what="plan",
            hint="plan the run again with this kohya-wrap, into a new directory",
            schemas={1: (PlanFileV1, _upgrade_v1)},
            schema=PLAN_SCHEMA,
        )
    except RecordError as e:
        raise RunDirError(e.message, e.hint) from None
    files = {
        name: (run / name).read_text(encoding="utf-8")
        for name in (CONFIG_TOML, DATASET_TOML, SAMPLE_PROMPTS)
        if (run / name).is_file()
    }
    return _plan_of(doc, run, files)


def _plan_of(doc: PlanFile, run: Path, files: dict[str, str]) -> Plan:
    planned_at = Path(doc.output.dir).parent
    return Plan(
        run_dir=run,
        created_at=doc.created_at,
        preset_name=doc.preset.name,
        preset_sha256=doc.preset.sha256,
        preset_files=doc.preset.files,
        dataset_dir=doc.dataset.dir,
        manifest_sha256=doc.dataset.manifest_sha256,
        subsets=tuple(_relocated(s, planned_at, run) for s in doc.dataset.subsets),
        base_model=doc.base_model,
        tokenizer_cache_dir=doc.tokenizer_cache_dir,
        values={k: v.value for k, v in doc.values.items()},
        sources={k: v.source for k, v in doc.values.items()},
        ours=doc.ours,
        steps=doc.steps,
        launch=LaunchRequest(
            doc.launch.gpus,
            Machines(
                doc.launch.num_machines,
                doc.launch.machine_rank,
                doc.launch.main_process_ip,
                doc.launch.main_process_port,
            ),
        ),
        env=doc.launch.env,
        # the run directory's own output folder wherever it is now, never plan time's absolute path
        output_dir=run / OUTPUT_DIR,
        output_name=doc.output.name,
        lora_file=run / OUTPUT_DIR / Path(doc.output.lora_file).name,
        planned_at=planned_at if planned_at != run else None,
        sd_scripts=doc.sd_scripts,
        warnings=doc.warnings,
        files=files,
    )


def _relocated(subset: PlanSubset, planned_at: Path, run: Path) -> PlanSubset:
    """A subset folder inside the run directory where it was planned (`run` prepares the dataset there),
    read inside the run directory where it is now."""
    folder = Path(subset.dir)
    if planned_at == run or planned_at not in folder.parents:
        return subset
    return msgspec.structs.replace(subset, dir=str(run / folder.relative_to(planned_at)))


def trained_to_the_end(plan: Plan) -> bool:
    """The trainer finished the plan: the final LoRA is in output/, complete, and holds the planned last
    step (`ss_steps`). Only the end of training writes that file (a step checkpoint has a suffix)."""
    from kohya_wrap.safetensors_header import HeaderError, incomplete, metadata_text
    from kohya_wrap.safetensors_header import read_header as read_safetensors_header
    from kohya_wrap.sdscripts.lora import training_step

    path = plan.lora_file
    if not path.is_file() or incomplete(path) is not None:
        return False
    try:
        header, _ = read_safetensors_header(path)
    except (OSError, HeaderError):
        return False
    # incomplete() above found its __metadata__ absent or a table of strings
    return training_step(metadata_text(header)) == plan.max_train_steps
