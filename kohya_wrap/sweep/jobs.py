"""A variant handed to a backend (local or ray_backend) as a Job, and what a backend records as it starts
and ends one: the backends and run.py import this module, and run.py chooses the backend."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap import codec
from kohya_wrap.errors import ExitCode
from kohya_wrap.sweep.state import DONE, ERROR, RUNNING, SweepState, VariantEntry, read_result, run_outcome

OnChange = Callable[[VariantEntry], None]


@dataclass(frozen=True)
class Job:
    """One variant for a backend to train: the worker's command line and where it reports."""

    name: str
    run_dir: Path  # planned already: the worker trains it as `kohya-wrap train RUN_DIR` would
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
class Where:
    """Where a variant's worker runs, as far as its backend knows."""

    host: str | None = None
    device: str | None = None  # CUDA_VISIBLE_DEVICES of the worker
    pid: int | None = None  # the worker's, on this machine


def start_job(state: SweepState, job: Job, on_change: OnChange | None, where: Where) -> None:
    """Record that a variant's worker started."""
    entry = state.update(
        job.name,
        status=RUNNING,
        started_at=codec.utc_now_text(),
        ended_at=None,
        resume=job.resume,
        host=where.host,
        device=where.device,
        pid=where.pid,
    )
    if on_change is not None:
        on_change(entry)


def finish_job(
    state: SweepState,
    job: Job,
    returncode: int | None,
    on_change: OnChange | None,
    *,
    error: str | None = None,
    where: Where | None = None,
) -> None:
    """Record a worker's end: its result file, then the run's own run.json. `error`: why the backend has no
    result (a lost Ray task); `where`: where it ran, as the backend learnt at its end (a Ray task)."""
    ended = codec.utc_now_text()
    fields: dict[str, str] = {}
    if where is not None:
        fields.update({k: v for k, v in (("host", where.host), ("device", where.device)) if v is not None})
    result = read_result(job.result)
    if result is None:
        why = error or f"the worker ended (exit code {returncode}) without a result"
        state.update(
            job.name,
            status=ERROR,
            ended_at=ended,
            outcome=None,
            exit_code=returncode if returncode else int(ExitCode.UNEXPECTED),
            error=f"{why}; see {job.log}" if job.log.is_file() else why,
            **fields,
        )
    else:
        status = ERROR if result.outcome is None else DONE
        if error is not None:
            fields["error"] = error
        state.record_result(job.name, result, status=status, ended_at=ended, **fields)
    if run_outcome(job.run_dir) is not None:
        state.refresh_from_run(job.name)
    if on_change is not None:
        on_change(state.entry(job.name))
