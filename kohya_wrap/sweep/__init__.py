"""`kohya-wrap sweep`: many ordinary runs from one command, on this machine or a Ray cluster (docs/sweep.md).

spec (what to sweep) -> variants (one run directory each) -> run (plan each once, then train the jobs
on a backend it chooses: local or ray_backend, each variant in a worker process; jobs says what a backend
records) -> state (SWEEP_DIR/sweep.json, the workers' results) -> status, report.
Nothing heavy is imported here: the CLI imports this package at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kohya_wrap.sweep.status import SweepStatus


def is_sweep_dir(path: str | Path) -> bool:
    """Whether `path` is a SWEEP_DIR (it holds sweep.json)."""
    from kohya_wrap.sweep.state import is_sweep_dir as _is

    return _is(path)


def sweep_runs_dir(path: str | Path) -> Path:
    """SWEEP_DIR/runs: the folder holding one run directory per variant (what `runs SWEEP_DIR` lists)."""
    from kohya_wrap.sweep.variants import RUNS_DIR

    return Path(path) / RUNS_DIR


def sweep_status(path: str | Path) -> SweepStatus:
    """The sweep's variants, each with its run's status now."""
    from kohya_wrap.sweep.status import sweep_status as _status

    return _status(Path(path))


def write_sweep_report(path: str | Path, out: Path | None = None) -> Path:
    """SWEEP_DIR/report.html comparing the variants; returns its path."""
    from kohya_wrap.sweep.report import write_sweep_report as _write

    return _write(Path(path), out)
