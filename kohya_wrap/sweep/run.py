"""Run a sweep: expand, plan and validate every variant, then train what is left on a backend.

Order of work (docs/sweep.md):
1. Every variant is decided: finished (skipped), stopped with a saved state (resumed), started but not
   resumable (its attempt is set aside under SWEEP_DIR/attempts/ and it starts again), or new.
2. Every variant to start is planned and validated (pipeline.make_plan) before anything is written or
   trained: one bad variant stops the sweep, naming it.
3. The plans are written (pipeline.plan_run) and the backend trains each variant through
   pipeline.train_run in a worker process (kohya_wrap/sweep/worker.py), updating sweep.json.
A finished run is never trained again or overwritten.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kohya_wrap import pipeline, rundir
from kohya_wrap.errors import ExitCode, KohyaWrapError, RunDirError
from kohya_wrap.events import ENDED_WELL
from kohya_wrap.fsutil import load_json
from kohya_wrap.sweep.spec import SweepError, SweepSpec
from kohya_wrap.sweep.state import DONE, ERROR, PENDING, RUNNING, SKIPPED, SweepState, run_manifest, sweep_paths
from kohya_wrap.sweep.variants import Variant, expand

Backend = Literal["local", "ray"]
Action = Literal["skip", "resume", "restart", "start"]
OnChange = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Job:
    """One variant for a backend to train: the worker's command line and where it reports."""

    name: str
    run_dir: Path
    resume: bool
    log: Path
    result: Path
    allow_nan: bool = False
    sd_scripts: str | None = None

    def worker_argv(self, python: str | None = None) -> list[str]:
        argv = [python or sys.executable, "-m", "kohya_wrap.sweep.worker", str(self.run_dir), str(self.result)]
        if self.resume:
            argv.append("--resume")
        if self.allow_nan:
            argv.append("--allow-nan")
        if self.sd_scripts:
            argv += ["--sd-scripts", self.sd_scripts]
        return argv


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    variants: tuple[dict[str, Any], ...]
    trained: int  # variants this command trained (to any outcome)
    skipped: int  # finished before this command
    failed: int  # did not finish: an outcome other than finished, or an error before training
    interrupted: bool
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "trained": self.trained,
            "skipped": self.skipped,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "variants": list(self.variants),
        }


def _started(run_dir: Path) -> bool:
    paths = rundir.paths(run_dir)
    output = paths.output_dir
    return any((run_dir / name).exists() for name in rundir.RUN_FILES) or (output.is_dir() and any(output.iterdir()))


def _resumable(run_dir: Path) -> bool:
    """Whether `train --resume` would continue this run: the same check, with nothing fetched or started."""
    from kohya_wrap.train.runner import prepare_run

    try:
        prepare_run(run_dir, resume=True, fetch_models=False)
    except RunDirError:
        return False
    return True


def decide(variant: Variant) -> Action:
    run_dir = variant.run_dir
    holder = rundir.lock_holder(run_dir)
    if holder is not None:
        raise SweepError(
            f"variant {variant.name}: {run_dir} is in use by {holder.describe()}",
            "wait for it to end, or stop it first (`kohya-wrap status SWEEP_DIR` shows the sweep)",
        )
    if (run_manifest(run_dir) or {}).get("outcome") in ENDED_WELL:
        return "skip"
    if not rundir.is_planned(run_dir) or not _started(run_dir):
        return "start"
    try:
        return "resume" if _resumable(run_dir) else "restart"
    except KohyaWrapError as e:  # e.g. its local base model is gone: say so before anything starts
        raise SweepError(f"variant {variant.name}: {e.message}", e.hint) from None


def plan_request(spec: SweepSpec, variant: Variant, run_dir: Path | None = None) -> pipeline.PlanRequest:
    return pipeline.PlanRequest(
        dataset_dir=variant.dataset_dir,
        preset=spec.preset,
        base_model=spec.base_model,
        run_dir=run_dir or variant.run_dir,
        overrides=variant.overrides,
        tokenizer_cache_dir=spec.tokenizer_cache_dir,
        sd_scripts=spec.sd_scripts,
    )


def validate(spec: SweepSpec, variants: list[Variant], actions: dict[str, Action]) -> None:
    """Plan every variant that will start, writing nothing; the first bad one stops the sweep."""
    bad: list[tuple[Variant, KohyaWrapError]] = []
    for variant in variants:
        if actions[variant.name] not in ("start", "restart"):
            continue
        # a run to restart still holds its attempt: validate the same plan for a fresh folder beside it
        where = (
            variant.run_dir
            if actions[variant.name] == "start"
            else variant.run_dir.with_name(variant.run_dir.name + ".check")
        )
        try:
            pipeline.make_plan(plan_request(spec, variant, where))
        except KohyaWrapError as e:
            bad.append((variant, e))
    if bad:
        variant, first = bad[0]
        others = ", ".join(v.name for v, _ in bad[1:])
        more = f" ({len(bad) - 1} more variant(s) fail too: {others})" if others else ""
        raise SweepError(
            f"variant {variant.name} ({_describe(variant)}) cannot be planned: {first.message}{more}; "
            "nothing was trained",
            first.hint,
        )


def _describe(variant: Variant) -> str:
    values = ", ".join(f"{k}={v}" for k, v in variant.values.items())
    return f"dataset {variant.dataset_dir.name}" + (f", {values}" if values else "")


def run_sweep(
    spec: SweepSpec,
    sweep_dir: Path,
    *,
    backend: Backend = "local",
    ray_address: str | None = None,
    max_parallel: int | None = None,
    on_change: OnChange | None = None,
    on_warning: Callable[[str, str], None] | None = None,
) -> SweepResult:
    """Plan every variant, then train those not finished. Ctrl-C stops every trainer and raises KeyboardInterrupt.

    on_warning(variant, warning) is called for each warning of each plan written, before anything trains.
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    if backend == "ray":
        from kohya_wrap.sweep.ray_backend import require_ray

        require_ray(ray_address)
    elif ray_address:
        raise SweepError("--ray-address needs --backend ray")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(sweep_dir, "sweep"):
        variants = expand(spec, sweep_dir)
        actions = {v.name: decide(v) for v in variants}
        validate(spec, variants, actions)
        state = SweepState.open(sweep_dir, spec.to_json(), variants, backend)
        paths = sweep_paths(sweep_dir)
        jobs: list[Job] = []
        for variant in variants:
            action = actions[variant.name]
            if action == "skip":
                state.update(variant.name, status=SKIPPED, error=None)
                state.refresh_from_run(variant.name)
                continue
            if action == "restart":
                aside = paths.attempt(variant.name)
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(variant.run_dir), str(aside))
            if action in ("start", "restart"):
                planned = pipeline.plan_run(plan_request(spec, variant))
                if on_warning is not None:
                    for warning in planned.warnings:
                        on_warning(variant.name, warning)
            log = paths.log(variant.name)
            result_file = paths.result(variant.name)
            result_file.unlink(missing_ok=True)
            state.update(variant.name, status=PENDING, error=None, log=str(log), outcome=None, exit_code=None)
            jobs.append(
                Job(
                    variant.name,
                    variant.run_dir,
                    action == "resume",
                    log,
                    result_file,
                    allow_nan=spec.allow_nan,
                    sd_scripts=spec.sd_scripts,
                )
            )
        for entry in state.doc["variants"]:
            if on_change is not None and entry["status"] == SKIPPED:
                on_change(dict(entry))
        interrupted = False
        if jobs:
            if backend == "ray":
                from kohya_wrap.sweep.ray_backend import run_ray

                interrupted = run_ray(jobs, state, address=ray_address, max_parallel=max_parallel, on_change=on_change)
            else:
                from kohya_wrap.sweep.local import run_local

                interrupted = run_local(jobs, state, max_parallel=max_parallel, on_change=on_change)
        entries = tuple(dict(e) for e in state.doc["variants"])
    failed = sum(1 for e in entries if e["status"] == ERROR or (e["status"] == DONE and e["outcome"] not in ENDED_WELL))
    trained = sum(1 for e in entries if e["status"] in (DONE, ERROR))
    skipped = sum(1 for e in entries if e["status"] == SKIPPED)
    code = ExitCode.INTERRUPTED if interrupted else (ExitCode.SWEEP_FAILED if failed else ExitCode.OK)
    result = SweepResult(sweep_dir, entries, trained, skipped, failed, interrupted, int(code))
    if interrupted:
        raise SweepInterrupted(result)
    return result


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; every trainer has stopped and sweep.json says where each variant stands."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__("sweep interrupted")
        self.result = result


def finish_job(
    state: SweepState, job: Job, returncode: int | None, on_change: OnChange | None, extra: dict[str, Any] | None = None
) -> None:
    """Record a worker's end: its result file, then the run's own run.json."""

    from kohya_wrap.sweep.state import now_text

    try:
        result = load_json(job.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        why = (extra or {}).get("error") or f"the worker ended (exit code {returncode}) without a result"
        result = {
            "outcome": None,
            "exit_code": returncode if returncode else int(ExitCode.UNEXPECTED),
            "error": f"{why}; see {job.log}" if job.log.is_file() else why,
        }
    fields = {
        k: result.get(k)
        for k in (
            "outcome",
            "exit_code",
            "final_loss",
            "last_step",
            "total_steps",
            "lora_file",
            "host",
            "device",
            "error",
        )
        if k in result
    }
    fields.update(extra or {})
    status = ERROR if result.get("outcome") is None else DONE
    state.update(job.name, status=status, ended_at=now_text(), **fields)
    if (run_manifest(job.run_dir) or {}).get("outcome") is not None:
        state.refresh_from_run(job.name)
    if on_change is not None:
        on_change(dict(state.entry(job.name)))


def start_job(state: SweepState, job: Job, on_change: OnChange | None, **fields: Any) -> None:
    from kohya_wrap.sweep.state import now_text

    state.update(job.name, status=RUNNING, started_at=now_text(), ended_at=None, resume=job.resume, **fields)
    if on_change is not None:
        on_change(dict(state.entry(job.name)))
