"""`kohya-wrap presets`: list, show, diff, validate and export presets."""

from __future__ import annotations

from pathlib import Path

import click

from kohya_wrap.cli.options import Folder, json_option


@click.group()
def presets() -> None:
    """Presets: sparse TOML files of sd-scripts settings (see `presets show likeness-sd15`)."""


@presets.command("list")
@json_option
def list_(as_json: bool) -> None:
    """The presets kohya-wrap ships."""
    from kohya_wrap.preset import load_preset, shipped_names

    rows = [(name, load_preset(name)) for name in shipped_names()]
    if as_json:
        from kohya_wrap.cli.output import print_json

        print_json(
            [{"name": n, "description": p.description, "extends": [f.stem for f in p.files[1:]]} for n, p in rows]
        )
        return
    from rich.table import Table

    from kohya_wrap.cli.output import console

    table = Table(box=None, padding=(0, 2))
    table.add_column("preset", no_wrap=True, style="bold")
    table.add_column("extends", no_wrap=True)
    table.add_column("description")
    for name, p in rows:
        table.add_row(name, " -> ".join(f.stem for f in p.files[1:]) or "-", p.description)
    console().print(table)


@presets.command()
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a value (repeatable).")
@click.option("--all", "show_all", is_flag=True, help="Also list every sd-scripts argument left at its default.")
@json_option
def show(name: str, overrides: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Every value a preset resolves to, and where it came from (default, which preset, --set)."""
    from kohya_wrap.preset import all_values, load_preset, preset_view, view_of

    preset = load_preset(name, overrides)
    values = all_values(preset) if show_all else [(k, view_of(s)) for k, s in sorted(preset.values.items())]
    if as_json:
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(preset_view(preset, values)))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from kohya_wrap.cli.output import console

    con = console()
    con.print(f"[bold]{escape(preset.name)}[/bold]: {escape(preset.description)}", highlight=False, soft_wrap=True)
    con.print("files: " + escape(" -> ".join(str(f) for f in preset.files)), highlight=False, soft_wrap=True)
    # A value is never cut: on a terminal a long one wraps (folds) in its column; into a pipe or a file,
    # where rich would assume 80 columns, each row is as wide as it needs (`grep`, `diff` see whole values).
    wide = con if con.is_terminal else Console(width=100_000, no_color=con.no_color, emoji=False)
    ours = [(k, view_of(s)) for k, s in sorted(preset.ours.items())]
    for title, rows in (("sd-scripts arguments", values), ("[kohya_wrap]", ours)):
        # escaped: rich reads "[kohya_wrap]" as a markup tag and prints a blank title
        table = Table(title=escape(title), title_justify="left", box=None, padding=(0, 2))
        table.add_column("key", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_column("source", no_wrap=True, style="dim")
        for key, setting in rows:
            table.add_row(key, _fmt(setting.value), setting.source)
        wide.print(table)


@presets.command()
@click.argument("a")
@click.argument("b")
@json_option
def diff(a: str, b: str, as_json: bool) -> None:
    """The values that differ between presets A and B."""
    from kohya_wrap.preset import diff as preset_diff
    from kohya_wrap.preset import load_preset

    pa, pb = load_preset(a), load_preset(b)
    diffs = preset_diff(pa, pb)
    if as_json:
        from kohya_wrap.cli.output import print_json

        print_json(
            [
                {
                    "key": d.key,
                    "a": d.a.value if d.a else None,
                    "b": d.b.value if d.b else None,
                    "a_source": d.a.source if d.a else "default",
                    "b_source": d.b.source if d.b else "default",
                }
                for d in diffs
            ]
        )
        return
    from rich.table import Table

    from kohya_wrap.cli.output import console

    if not diffs:
        console().print(f"{pa.name} and {pb.name} resolve to the same values.")
        return
    table = Table(box=None, padding=(0, 2))
    table.add_column("key", no_wrap=True)
    table.add_column(pa.name)
    table.add_column(pb.name)
    for d in diffs:
        table.add_row(
            d.key,
            _fmt(d.a.value) if d.a else "[dim](default)[/dim]",
            _fmt(d.b.value) if d.b else "[dim](default)[/dim]",
        )
    console().print(table)


@presets.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def validate(file: Path, as_json: bool) -> None:
    """Check a preset file: every key, type and choice, the forbidden keys, and sd-scripts' conflicts."""
    from kohya_wrap.preset import PresetErrors, load_preset, warnings_of

    try:
        preset = load_preset(str(file) if str(file).endswith(".toml") or "/" in str(file) else f"./{file}")
    except PresetErrors as e:  # every problem, not the first: printed by the CLI, or as JSON
        if not as_json:
            raise
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.errors import ExitCode

        print_json(
            {"valid": False, "file": str(file), "errors": [{"message": p.message, "hint": p.hint} for p in e.problems]}
        )
        raise SystemExit(ExitCode.ERROR) from None
    warnings = warnings_of(preset)
    if as_json:
        from kohya_wrap.cli.output import print_json

        print_json({"valid": True, "name": preset.name, "files": [str(f) for f in preset.files], "warnings": warnings})
        return
    from kohya_wrap.cli.output import console

    con = console()
    for w in warnings:
        con.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    con.print(
        f"[green]valid:[/green] {file} ({len(preset.values)} sd-scripts values, extends "
        f"{' -> '.join(f.stem for f in preset.files[1:]) or 'nothing'})",
        highlight=False,
    )


@presets.command()
@click.argument("run_dir", type=Folder())
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The preset file to write (refused if it exists).",
)
def export(run_dir: Path, output: Path) -> None:
    """A shareable preset from a run's plan.json: no paths, no secrets, with the sd-scripts commit."""
    from kohya_wrap.cli.output import console
    from kohya_wrap.errors import PresetError
    from kohya_wrap.fsutil import atomic_write_text
    from kohya_wrap.preset import export_text
    from kohya_wrap.rundir import read_plan

    if output.exists():
        raise PresetError(f"{output} exists; export never overwrites a file", "choose another -o FILE")
    plan = read_plan(run_dir)
    text = export_text(
        plan.values,
        plan.ours,
        name=plan.run_dir.name,
        sources=plan.sources,
        sd_scripts_commit=plan.sd_scripts.commit,
        comment_lines=[
            f"Exported by kohya-wrap from run {plan.run_dir.name} (preset {plan.preset_name}).",
            f"sd-scripts commit: {plan.sd_scripts.commit or 'unknown'}",
        ],
    )
    atomic_write_text(output, text)
    console().print(f"wrote {output}", highlight=False)


def _fmt(value: object) -> str:
    from rich.markup import escape

    return escape(
        repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    )
