"""Run a sweep: expand, plan and validate every variant, then train what is left on a backend.

Order of work (docs/sweep.md):
1. Every variant is decided: finished (skipped), stopped with a saved state (resumed), started but not
   resumable (its attempt is set aside under SWEEP_DIR/attempts/ and it starts again), or new.
2. Every variant to start is planned and validated (pipeline.make_plan), once, before anything is
   written or trained: one bad variant stops the sweep, naming it (an attempt set aside for it is put back).
3. The plans are written (rundir.write_plan) and the backend, chosen here (local or ray_backend), trains
   each planned run directory through pipeline.train_run in a worker process (kohya_wrap/sweep/worker.py),
   updating sweep.json.
A finished run is never trained again or overwritten.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from kohya_wrap import pipeline, rundir
from kohya_wrap.codec import Record
from kohya_wrap.errors import ExitCode, KohyaWrapError, RunDirError
from kohya_wrap.events import ENDED_WELL
from kohya_wrap.rundir import Plan
from kohya_wrap.sweep.jobs import Job, OnChange
from kohya_wrap.sweep.spec import SweepError, SweepSpec
from kohya_wrap.sweep.state import (
    DONE,
    ERROR,
    PENDING,
    SKIPPED,
    SweepPaths,
    SweepState,
    VariantEntry,
    run_outcome,
    sweep_key,
    sweep_paths,
)
from kohya_wrap.sweep.variants import Variant, expand

Backend = Literal["local", "ray"]
Action = Literal["skip", "resume", "restart", "start"]


class SweepResult(Record, frozen=True):
    """What a sweep command did (its --json output)."""

    sweep_dir: Path
    trained: int  # variants this command trained (to any outcome)
    skipped: int  # finished before this command
    failed: int  # did not finish: an outcome other than finished, or an error before training
    interrupted: bool
    exit_code: int
    variants: tuple[VariantEntry, ...]

    @property
    def sweep_json(self) -> Path:
        return sweep_paths(self.sweep_dir).sweep_json


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
    if run_outcome(run_dir) in ENDED_WELL:
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


@contextmanager
def attempts_set_aside(paths: SweepPaths, variants: list[Variant], actions: Mapping[str, Action]) -> Iterator[None]:
    """The attempts of the variants to restart moved under SWEEP_DIR/attempts/, so that each is planned in
    its own run directory; put back when anything inside fails (nothing is written then)."""
    attempts = paths.attempts_dir
    made = not attempts.exists()
    moved: list[tuple[Path, Path]] = []
    try:
        for variant in variants:
            if actions[variant.name] == "restart":
                aside = paths.attempt(variant.name)
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(variant.run_dir), str(aside))
                moved.append((variant.run_dir, aside))
        yield
    except BaseException:
        for run_dir, aside in reversed(moved):
            shutil.move(str(aside), str(run_dir))
        if made and attempts.is_dir() and not any(attempts.iterdir()):
            attempts.rmdir()
        raise


def plan_variants(spec: SweepSpec, variants: list[Variant], actions: Mapping[str, Action]) -> dict[str, Plan]:
    """Plan every variant that will start, writing nothing; the first bad one stops the sweep."""
    plans: dict[str, Plan] = {}
    bad: list[tuple[Variant, KohyaWrapError]] = []
    for variant in variants:
        if actions[variant.name] not in ("start", "restart"):
            continue
        try:
            plans[variant.name] = pipeline.make_plan(plan_request(spec, variant))
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
    return plans


def _describe(variant: Variant) -> str:
    values = ", ".join(f"{k}={v}" for k, v in variant.values.items())
    return f"dataset {variant.dataset_dir.name}" + (f", {values}" if values else "")


def _check_backend(backend: Backend, ray_address: str | None) -> None:
    if backend == "ray":
        from kohya_wrap.sweep.ray_backend import require_ray

        require_ray(ray_address)
    elif ray_address:
        raise SweepError("--ray-address needs --backend ray")


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
    """Plan every variant, then train those not finished. Ctrl-C stops every trainer and raises SweepInterrupted.

    on_warning(variant, warning) is called for each warning of each plan written, before anything trains.
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    _check_backend(backend, ray_address)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(sweep_dir, "sweep"):
        variants = expand(spec, sweep_dir)
        actions = {v.name: decide(v) for v in variants}
        with attempts_set_aside(sweep_paths(sweep_dir), variants, actions):
            plans = plan_variants(spec, variants, actions)
            state = SweepState.open(sweep_dir, sweep_key(spec), variants, backend)
        jobs = [_job(spec, state, v, actions[v.name], plans.get(v.name), on_warning) for v in variants]
        for entry in state.entries:
            if on_change is not None and entry.status == SKIPPED:
                on_change(entry)
        todo = [job for job in jobs if job is not None]
        interrupted = _train(todo, state, backend, ray_address, max_parallel, on_change) if todo else False
    result = _result(sweep_dir, state.entries, interrupted)
    if interrupted:
        raise SweepInterrupted(result)
    return result


def _job(
    spec: SweepSpec,
    state: SweepState,
    variant: Variant,
    action: Action,
    plan: Plan | None,
    on_warning: Callable[[str, str], None] | None,
) -> Job | None:
    """The variant's job, its plan written first; None for a variant finished before (skipped)."""
    if action == "skip":
        state.update(variant.name, status=SKIPPED, error=None)
        state.refresh_from_run(variant.name)
        return None
    run_dir = variant.run_dir
    if plan is not None:
        rundir.write_plan(plan)
        run_dir = plan.run_dir
        for warning in plan.warnings:
            if on_warning is not None:
                on_warning(variant.name, warning)
    log, result_file = state.paths.log(variant.name), state.paths.result(variant.name)
    result_file.unlink(missing_ok=True)
    state.update(variant.name, status=PENDING, error=None, log=str(log), outcome=None, exit_code=None)
    return Job(
        variant.name,
        run_dir,
        action == "resume",
        log,
        result_file,
        allow_nan=spec.allow_nan,
        sd_scripts=spec.sd_scripts,
    )


def _train(
    jobs: list[Job],
    state: SweepState,
    backend: Backend,
    ray_address: str | None,
    max_parallel: int | None,
    on_change: OnChange | None,
) -> bool:
    """Train the jobs on the backend; True when a signal stopped the sweep."""
    if backend == "ray":
        from kohya_wrap.sweep.ray_backend import run_ray

        return run_ray(jobs, state, address=ray_address, max_parallel=max_parallel, on_change=on_change)
    from kohya_wrap.sweep.local import run_local

    return run_local(jobs, state, max_parallel=max_parallel, on_change=on_change)


def _result(sweep_dir: Path, entries: tuple[VariantEntry, ...], interrupted: bool) -> SweepResult:
    failed = sum(1 for e in entries if e.status == ERROR or (e.status == DONE and e.outcome not in ENDED_WELL))
    trained = sum(1 for e in entries if e.status in (DONE, ERROR))
    skipped = sum(1 for e in entries if e.status == SKIPPED)
    code = ExitCode.INTERRUPTED if interrupted else (ExitCode.SWEEP_FAILED if failed else ExitCode.OK)
    return SweepResult(
        sweep_dir=sweep_dir,
        trained=trained,
        skipped=skipped,
        failed=failed,
        interrupted=interrupted,
        exit_code=int(code),
        variants=entries,
    )


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; every trainer has stopped and sweep.json says where each variant stands."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__("sweep interrupted")
        self.result = result
