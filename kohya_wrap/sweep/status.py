"""`kohya-wrap status SWEEP_DIR`: every variant of a sweep with its run's progress now.

sweep.json says what the sweep decided (its status, outcome, where it ran); each run's own events
(kohya_wrap.status.read_status) say where a running variant is, so this works from another shell
while the sweep runs, and after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.codec import Record, TomlValue
from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.events import ENDED_WELL, Outcome
from kohya_wrap.sweep.state import Status, VariantEntry, read_sweep, recommended_step

if TYPE_CHECKING:
    from rich.table import Table

    from kohya_wrap.status import RunStatus


class VariantStatus(Record, frozen=True):
    name: str
    values: dict[str, TomlValue]  # grid key -> its value
    status: Status  # sweep.json's
    state: str | None  # the run's own (kohya_wrap.status): planned | running | stalled | finished | ...
    outcome: Outcome | None
    exit_code: int | None
    step: int | None
    total_steps: int | None
    percent: float | None
    loss: float | None
    eta_s: float | None
    recommended_step: int | None
    lora_file: str | None
    run_dir: str
    host: str | None
    device: str | None
    error: str | None


class SweepStatus(Record, frozen=True):
    sweep_dir: Path
    backend: str | None
    counts: dict[str, int]  # outcome (or state, or sweep status) -> how many variants
    variants: tuple[VariantStatus, ...]


def _count(variants: tuple[VariantStatus, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in variants:
        key = v.outcome if v.outcome else (v.state if v.state and v.status != "pending" else v.status)
        out[key] = out.get(key, 0) + 1
    return out


def _run_status(run_dir: Path) -> RunStatus | None:
    from kohya_wrap.status import read_status

    if not run_dir.is_dir():
        return None
    try:
        return read_status(run_dir)
    except KohyaWrapError:
        return None


def _variant_status(entry: VariantEntry) -> VariantStatus:
    run_dir = Path(entry.run_dir)
    run = _run_status(run_dir)
    done = run is not None and run.done
    return VariantStatus(
        name=entry.name,
        values=entry.values,
        status=entry.status,
        state=run.state if run else None,
        outcome=(run.outcome if run and done else None) or entry.outcome,
        exit_code=run.exit_code if run and done else entry.exit_code,
        step=run.step if run else entry.last_step,
        total_steps=run.total_steps if run else entry.total_steps,
        percent=run.percent if run else None,
        loss=run.avr_loss if run else None,
        eta_s=run.eta_s if run and not done else None,
        recommended_step=recommended_step(run_dir) if run_dir.is_dir() else entry.recommended_step,
        lora_file=(run.lora_file if run and run.lora_exists else None) or entry.lora_file,
        run_dir=str(run_dir),
        host=entry.host,
        device=entry.device,
        error=entry.error,
    )


def sweep_status(sweep_dir: Path) -> SweepStatus:
    doc = read_sweep(sweep_dir)
    rows = tuple(_variant_status(entry) for entry in doc.variants)
    return SweepStatus(sweep_dir=Path(sweep_dir), backend=doc.backend, counts=_count(rows), variants=rows)


def status_table(status: SweepStatus) -> Table:
    """A rich Table of the variants (the CLI prints it)."""
    from rich.table import Table

    from kohya_wrap.status import format_duration

    table = Table(title=f"sweep {status.sweep_dir}", title_justify="left")
    for column in ("variant", "state", "step", "loss", "eta", "exit", "best step", "where"):
        table.add_column(column, overflow="fold")
    colours = {
        "finished": "green",
        "running": "cyan",
        "stalled": "yellow",
        "interrupted": "yellow",
        "failed": "bold red",
        "error": "bold red",
    }
    for v in status.variants:
        state = v.outcome or (v.state if v.status not in ("pending", "error") else v.status) or v.status
        colour = colours.get(
            "failed" if v.outcome and v.outcome not in (*ENDED_WELL, "interrupted") else state, "white"
        )
        step = (
            f"{v.step}/{v.total_steps}"
            if v.step is not None and v.total_steps
            else (f"-/{v.total_steps}" if v.total_steps else "-")
        )
        if v.percent is not None and v.state == "running":
            step += f" ({v.percent:.0f}%)"
        loss = f"{v.loss:.4g}" if isinstance(v.loss, float) else "-"
        where = (v.host or "") + (f" GPU {v.device}" if v.device not in (None, "") else "")
        table.add_row(
            v.name,
            f"[{colour}]{state}[/{colour}]" + (f": {v.error}" if v.error else ""),
            step,
            loss,
            format_duration(v.eta_s) if v.eta_s is not None else "-",
            str(v.exit_code) if v.exit_code is not None else "-",
            str(v.recommended_step) if v.recommended_step is not None else "-",
            where or "-",
        )
    return table
