from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import Folder, PhotoChoices, json_option, photo_options
from kohya_wrap.errors import ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from kohya_wrap.prepare import PrepareResult

# Without -v, the findings table shows at most this many rows of one kind; prepare.json holds them all.
ROWS_PER_KIND = 5


@click.command()
@click.argument("src_dir", type=Folder())
@click.option(
    "-o",
    "--output",
    "dataset_dir",
    required=True,
    type=Folder(),
    help="Dataset folder to write (img/, reg/, prepare.json).",
)
@photo_options
@click.option("--skip-multiple-faces", is_flag=True, help="The same as --skip multi-face.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary, not the findings table.")
@click.option(
    "-v", "--verbose", is_flag=True, help="List every finding (notes too) and every file of a near-duplicate cluster."
)
@click.option("--strict", is_flag=True, help=f"Exit {int(ExitCode.WARNINGS)} when there are warnings.")
@click.option(
    "--force",
    is_flag=True,
    help="Use a non-empty output folder prepare did not make (its img/ and reg/ are moved aside).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Worker processes. Default: every core.")
@json_option
def prepare(
    src_dir: Path,
    dataset_dir: Path,
    photos: PhotoChoices,
    skip_multiple_faces: bool,
    quiet: bool,
    verbose: bool,
    strict: bool,
    force: bool,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Turn a folder of face photos into a Kohya training set in DATASET_DIR (-o).

    Photos are found recursively, oriented, cropped square (around the face by default), resized,
    and written as img/{repeats}_{token} {class}/0001.png + 0001.txt. A summary by kind leads, then the
    findings (near duplicates as one line per cluster; every detail is in prepare.json); with --strict
    warnings make the exit code 4. A second run reuses unchanged outputs.
    """
    from kohya_wrap.cli.output import photo_progress, print_json
    from kohya_wrap.codec import to_builtins
    from kohya_wrap.prepare import prepare_dataset

    if quiet and verbose:
        raise click.UsageError("-q and -v exclude each other")
    options = photos.prepare_options(
        src_dir, dataset_dir, skip_multiple_faces=skip_multiple_faces, force=force, jobs=jobs
    )
    with photo_progress() as on_progress:
        result = prepare_dataset(options, on_progress=on_progress)
    if as_json:
        print_json(to_builtins(result.record()))
    else:
        render_summary(result, quiet=quiet, verbose=verbose)
    if strict and result.warnings:
        from rich.markup import escape

        from kohya_wrap.cli.output import err_console

        # on stderr, also with --json and -q: why the exit code is not 0
        err_console().print(f"[yellow]{escape(strict_line(result))}[/yellow]", highlight=False, soft_wrap=True)
        raise SystemExit(ExitCode.WARNINGS)
    raise SystemExit(ExitCode.OK)


def strict_line(result: PrepareResult) -> str:
    """Why --strict stops: the warnings, counted by kind (prepare.json and the table hold each one)."""
    kinds = next((line for line in summary_lines(result) if line.startswith("warnings: ")), "warnings: ")
    n = len(result.warnings)
    return (
        f"--strict: exit {int(ExitCode.WARNINGS)} because of {n} warning{'s' if n != 1 else ''}: "
        f"{kinds.removeprefix('warnings: ')}"
    )


def plural(n: int, word: str) -> str:
    """'1 repeat', '10 repeats'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_lines(result: PrepareResult) -> list[str]:
    """The findings counted by severity and kind, warnings first: what matters before the details."""
    out = []
    for level in ("warning", "info"):
        counts: dict[str, int] = {}
        for f in result.findings:
            if f.level == level:
                counts[f.code] = counts.get(f.code, 0) + 1
        if not counts:
            continue
        parts = []
        for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if code == "near_duplicate":
                photos = sum(len(f.files) for f in result.findings if f.code == code)
                parts.append(f"{n} near-duplicate cluster{'s' if n > 1 else ''} ({photos} photos)")
            else:
                parts.append(f"{n} {code.replace('_', ' ')}")
        out.append(f"{'warnings' if level == 'warning' else 'notes'}: " + ", ".join(parts))
    return out


def render_summary(result: PrepareResult, *, quiet: bool = False, verbose: bool = False, kept: bool = True) -> None:
    """What prepare found, for a person: the summary first, then the details (also shown by `run`).

    kept=False: the dataset was prepared into a temporary folder that is gone (`run --dry-run`), so
    its folders are named relative to it and no manifest path is printed.
    """
    from rich.markup import escape

    from kohya_wrap.cli.output import console

    con = console()
    train = sum(s.images for s in result.subsets if not s.is_reg)
    con.print(
        f"[bold]prepare[/bold]: {plural(train, 'training image')}, {result.skipped} skipped, "
        f"{plural(len(result.warnings), 'warning')}",
        highlight=False,
    )
    for line in summary_lines(result):
        con.print("  " + escape(line), highlight=False)
    if not quiet:
        table = _findings_table(result, verbose)
        if table is not None:
            con.print(table)
    for subset in result.subsets:
        where = result.dataset_dir / subset.dir if kept else Path(subset.dir)
        con.print(
            f"{escape(str(where))}: {subset.images} images, "
            f"{plural(subset.repeats, 'repeat')}, class tokens {escape(repr(subset.class_tokens))}",
            highlight=False,
        )
    con.print(
        f"{result.processed} processed, {result.reused} reused, {result.skipped} skipped, "
        f"{result.removed} removed. Face detection: {escape(result.face_detection)}",
        highlight=False,
    )
    con.print(escape(identity_line(result)), highlight=False)
    if kept:
        con.print(f"manifest: {escape(str(result.manifest_path))}", highlight=False)


def _findings_table(result: PrepareResult, verbose: bool) -> Table | None:
    """The warnings (every finding with -v), at most ROWS_PER_KIND of one kind without -v; None: nothing to show."""
    from rich.markup import escape
    from rich.table import Table

    shown = sorted((f for f in result.findings if verbose or f.level == "warning"), key=lambda f: f.level != "warning")
    if not shown:
        return None
    table = Table(title="findings", title_justify="left", padding=(0, 1))
    table.add_column("level", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("finding", overflow="fold")
    table.add_column("what to do", overflow="fold")
    style = {"warning": "[yellow]warning[/yellow]", "info": "[dim]info[/dim]"}
    per_kind: dict[str, int] = {}
    for f in shown:
        per_kind[f.code] = per_kind.get(f.code, 0) + 1
        if not verbose and per_kind[f.code] > ROWS_PER_KIND:
            continue
        message = f.message + ("\n" + ", ".join(f.files) if verbose and f.files else "")
        table.add_row(style[f.level], escape(f.file or "(the set)"), escape(message), escape(f.action))
    for code, n in per_kind.items():
        if not verbose and n > ROWS_PER_KIND:
            table.add_row(
                "",
                "",
                escape(f"... and {n - ROWS_PER_KIND} more {code.replace('_', ' ')}"),
                "see prepare.json, or -v",
            )
    return table


def identity_line(result: PrepareResult) -> str:
    """Who the photos show and from which angles, or why that was not checked: one line."""
    check = result.identity
    if check.model is None:
        return f"Identity and poses: {check.note or 'not checked'}"
    poses = ", ".join(f"{n} {pose}" for pose, n in check.poses if n) or "none"
    if check.note:
        who = check.note
    elif check.other_person:
        left_out = sum(1 for f in result.findings if f.code == "skipped_other_person")
        who = (
            f"{len(check.other_person)} of {check.judged} faces look like somebody else (limit {check.threshold:.2f})"
            + (f", {left_out} left out (--skip other-person)" if left_out else "")
        )
    else:
        who = (
            f"all {check.judged} faces are one person "
            f"(typical distance {check.median_distance:.2f}, limit {check.threshold:.2f})"
        )
    return f"Identity: {who}. Poses: {poses}."
