from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import Folder, json_option, sd_scripts_option
from kohya_wrap.errors import ExitCode

if TYPE_CHECKING:
    from kohya_wrap.doctor import DoctorReport


@click.command()
@sd_scripts_option
@click.option(
    "--runs-dir",
    type=Folder(),
    default=Path("runs"),
    show_default=True,
    help="Where runs will go (for the free-disk check).",
)
@json_option
def doctor(sd_scripts: str | None, runs_dir: Path, as_json: bool) -> None:
    """Can this machine train? Exit 0 when training can start, 1 when it cannot."""
    from kohya_wrap import codec
    from kohya_wrap.doctor import run_doctor

    report = run_doctor(sd_scripts=sd_scripts, runs_dir=runs_dir)
    if as_json:
        from kohya_wrap.cli.output import print_json

        print_json(codec.to_builtins(report))
    else:
        _render(report)
    raise SystemExit(ExitCode.OK if report.can_train else ExitCode.ERROR)


def _render(report: DoctorReport) -> None:
    from rich.table import Table

    from kohya_wrap.cli.output import console

    style = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}
    table = Table(title="kohya-wrap doctor", show_header=False, box=None, padding=(0, 1))
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        detail = c.detail if not c.fix else f"{c.detail}\n[cyan]fix: {c.fix}[/cyan]"
        table.add_row(c.name, style[c.status], detail)
    con = console()
    con.print(table)
    if report.can_train:
        con.print("[green]Training can start.[/green]")
    else:
        con.print("[bold red]Training cannot start:[/bold red] fix the FAIL lines above.")
