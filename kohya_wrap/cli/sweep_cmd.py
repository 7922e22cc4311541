"""`kohya-wrap sweep`: many runs from one command (datasets x --grid values), on this machine or on Ray."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, cast

import click

from kohya_wrap.cli.options import (
    Folder,
    allow_nan_option,
    base_model_option,
    json_option,
    preset_option,
    sd_scripts_option,
    set_option,
    tokenizer_option,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.console import Console
    from rich.table import Table

    from kohya_wrap.sweep.run import SweepResult
    from kohya_wrap.sweep.spec import SweepSpec
    from kohya_wrap.sweep.state import VariantEntry


@click.command()
@click.argument("datasets", nargs=-1, type=click.Path(path_type=Path))
@preset_option()
@base_model_option()
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Sweep a preset value over these values (repeatable: the variants are every combination).",
)
@set_option
@click.option(
    "-o",
    "--output",
    "sweep_dir",
    required=True,
    type=Folder(),
    help="SWEEP_DIR: sweep.json and one run directory per variant (SWEEP_DIR/runs/<variant>).",
)
@click.option(
    "--backend",
    type=click.Choice(("local", "ray")),
    default="local",
    show_default=True,
    help="local: one variant per GPU of this machine (one at a time without a GPU); ray: a Ray task each.",
)
@click.option(
    "--ray-address",
    "ray_address",
    default=None,
    metavar="ADDR",
    help="An existing Ray cluster (whose nodes see SWEEP_DIR); without it --backend ray starts a local one.",
)
@click.option(
    "--max-parallel",
    "max_parallel",
    type=click.IntRange(min=1),
    default=None,
    help="Train at most this many variants at once.",
)
@tokenizer_option
@allow_nan_option
@sd_scripts_option
@json_option
def sweep(
    datasets: tuple[Path, ...],
    preset: str | None,
    base_model: str | None,
    grid: tuple[str, ...],
    overrides: tuple[str, ...],
    sweep_dir: Path,
    backend: str,
    ray_address: str | None,
    max_parallel: int | None,
    tokenizer_cache_dir: Path | None,
    allow_nan: bool,
    sd_scripts: str | None,
    as_json: bool,
) -> None:
    """Train DATASET... x every --grid combination, each variant an ordinary run directory under SWEEP_DIR.

    Or give a sweep file first: `kohya-wrap sweep FILE.toml -o SWEEP_DIR` (docs/sweep.md). Every variant is
    planned and validated before any trains. Running the same command again skips finished variants,
    resumes stopped ones from their saved state and starts the rest. Ctrl-C stops every trainer.

    Exit codes: 0 every variant finished, 1 nothing started (a bad variant, a bad sweep file),
    19 some variant did not finish (sweep.json says which), 130 interrupted.
    """
    from kohya_wrap.sweep.run import SweepInterrupted, run_sweep

    spec = _spec(datasets, preset, base_model, grid, overrides, tokenizer_cache_dir, allow_nan, sd_scripts)
    from kohya_wrap.cli.output import console, err_console, print_warnings

    out = err_console() if as_json else console()

    def on_change(entry: VariantEntry) -> None:
        out.print(_line(entry), highlight=False, markup=False, soft_wrap=True)

    try:
        result = run_sweep(
            spec,
            sweep_dir,
            backend=cast('Literal["local", "ray"]', backend),
            ray_address=ray_address,
            max_parallel=max_parallel,
            on_change=on_change,
            on_warning=lambda name, warning: print_warnings([f"{name}: {warning}"]),
        )
    except SweepInterrupted as stopped:
        _interrupted(stopped.result, out, as_json)
    _render_result(result, out, as_json)


def _interrupted(result: SweepResult, out: Console, as_json: bool) -> NoReturn:
    """Ctrl-C: where every variant stands, and the command that goes on."""
    from kohya_wrap.cli.output import err_console, print_json
    from kohya_wrap.codec import to_builtins

    argv = shlex.join(["kohya-wrap", "sweep", *sys.argv[2:]]) if len(sys.argv) > 2 else "the same command"
    if as_json:
        print_json(to_builtins(result))
    else:
        out.print(_table(result.variants))
    err_console().print(
        f"[yellow]interrupted: every trainer of the sweep stopped; run {argv} again to resume "
        "the stopped variants and start the rest[/yellow]",
        highlight=False,
    )
    raise SystemExit(result.exit_code) from None


def _render_result(result: SweepResult, out: Console, as_json: bool) -> None:
    from kohya_wrap.cli.output import print_json
    from kohya_wrap.codec import to_builtins

    if as_json:
        print_json(to_builtins(result))
    else:
        out.print(_table(result.variants))
        out.print(
            f"{result.trained} trained, {result.skipped} finished before, {result.failed} did not finish; "
            f"sweep.json: {result.sweep_json}",
            highlight=False,
            markup=False,
        )
    if result.exit_code:
        raise SystemExit(result.exit_code)


def _spec(
    datasets: tuple[Path, ...],
    preset: str | None,
    base_model: str | None,
    grid: tuple[str, ...],
    overrides: tuple[str, ...],
    tokenizer_cache_dir: Path | None,
    allow_nan: bool,
    sd_scripts: str | None,
) -> SweepSpec:
    """The sweep the command line asks for: a sweep file given first, else DATASET... x --grid."""
    from kohya_wrap.sweep import spec as spec_mod

    if datasets and datasets[0].suffix == ".toml" and datasets[0].exists():
        return spec_mod.from_file(
            datasets[0],
            datasets=datasets[1:],
            preset=preset,
            base_model=base_model,
            grid=grid,
            overrides=overrides,
            tokenizer_cache_dir=tokenizer_cache_dir,
            sd_scripts=sd_scripts,
            allow_nan=allow_nan,
        )
    if not datasets or not preset or not base_model:
        raise click.UsageError("give DATASET... with --preset and --base-model, or a sweep FILE.toml")
    return spec_mod.from_command_line(
        datasets,
        preset=preset,
        base_model=base_model,
        grid=grid,
        overrides=overrides,
        tokenizer_cache_dir=tokenizer_cache_dir,
        sd_scripts=sd_scripts,
        allow_nan=allow_nan,
    )


def _line(entry: VariantEntry) -> str:
    name, status = entry.name, entry.status
    if status == "running":
        where = f" on GPU {entry.device}" if entry.device not in (None, "") else ""
        host = f" ({entry.host})" if entry.host else ""
        return f"started  {name}{where}{host}" + (" (resuming)" if entry.resume else "")
    if status == "skipped":
        return f"skipped  {name}: finished before"
    if status == "error":
        return f"error    {name}: {entry.error}"
    return f"{entry.outcome or status:<8} {name} (exit code {entry.exit_code})" + (
        f", final loss {entry.final_loss:.4g}" if entry.final_loss is not None else ""
    )


def _table(entries: Iterable[VariantEntry]) -> Table:
    from rich.table import Table

    table = Table(title="sweep", show_lines=False)
    for column in ("variant", "status", "outcome", "exit", "steps", "final loss", "LoRA"):
        table.add_column(column, overflow="fold")
    for e in entries:
        steps = f"{e.last_step}/{e.total_steps}" if e.total_steps else "-"
        loss = f"{e.final_loss:.4g}" if e.final_loss is not None else "-"
        table.add_row(
            e.name,
            e.status,
            str(e.outcome or "-"),
            str(e.exit_code),
            steps,
            loss,
            Path(e.lora_file).name if e.lora_file else "-",
        )
    return table


def print_sweep_status(sweep_dir: Path, *, as_json: bool, follow: bool = False) -> None:
    """`kohya-wrap status SWEEP_DIR`: the variants' table (or --json)."""
    if follow:
        raise click.UsageError(
            "--follow follows one run: give SWEEP_DIR/runs/<variant> (`status SWEEP_DIR` lists them)"
        )
    from kohya_wrap.cli.output import console, print_json
    from kohya_wrap.sweep import sweep_status
    from kohya_wrap.sweep.status import status_table

    status = sweep_status(sweep_dir)
    if as_json:
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(status))
    else:
        console().print(status_table(status))
