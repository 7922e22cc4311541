"""`kohya-wrap score` and `kohya-wrap export`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import Folder, json_option

if TYPE_CHECKING:
    from kohya_wrap.score.advice import Advice
    from kohya_wrap.score.records import ScoreReport


def _fmt(value: object, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@click.command()
@click.argument("run_dir", required=False, type=Folder(exists=True))
@click.option(
    "--reference",
    "reference",
    type=click.Path(path_type=Path),
    metavar="PHOTOS_DIR",
    help="Photos of the person (default for a run: its training images).",
)
@click.option(
    "--samples",
    "samples",
    type=click.Path(path_type=Path),
    metavar="SAMPLES_DIR",
    help="Images to score instead of a run's: named the sd-scripts way, or one subfolder per step.",
)
@click.option("--no-cache", is_flag=True, help="Look at the reference photos again instead of using the cache.")
@json_option
def score(run_dir: Path | None, reference: Path | None, samples: Path | None, no_cache: bool, as_json: bool) -> None:
    """Which checkpoint looks like the person, and which copies the photos.

    Scores each checkpoint's samples against photos of the person with a face identity model
    (dlib, offline, on the CPU): faces found, likeness (0..1), samples judged the person, samples
    that copy a photo; then recommends a checkpoint or says why none. `score RUN_DIR` writes
    RUN_DIR/score.json; `score --reference PHOTOS --samples DIR` scores any images. How it is
    computed: docs/score.md. Exit 0 when scoring ran, whatever it found; 1 on bad input.
    """
    from kohya_wrap import score as score_mod
    from kohya_wrap.cli.output import err_console

    if run_dir is None and (reference is None or samples is None):
        raise click.UsageError("give RUN_DIR, or both --reference PHOTOS_DIR and --samples SAMPLES_DIR")
    if run_dir is not None and samples is not None:
        raise click.UsageError("give RUN_DIR or --samples, not both")
    progress = None if as_json else (lambda line: err_console().print(f"[dim]{line}[/dim]"))
    if run_dir is not None:
        _refuse_a_run_in_use(run_dir)
        report = score_mod.score_run(run_dir, reference_dir=reference, use_cache=not no_cache, progress=progress)
    else:
        assert reference is not None and samples is not None
        report = score_mod.score_images(reference, samples, use_cache=not no_cache, progress=progress)
    from kohya_wrap.codec import to_builtins
    from kohya_wrap.score.advice import advise

    advice = advise(report, run_dir)
    if as_json:
        from kohya_wrap.cli.output import print_json

        print_json({**to_builtins(report), "advice": to_builtins(advice)})
        return
    _render_score(report, advice, run_dir)


def _refuse_a_run_in_use(run_dir: Path) -> None:
    """score writes score.json: not while train holds the run (its live scoring writes that file as it goes)."""
    from kohya_wrap import rundir

    holder = rundir.lock_holder(run_dir)
    if holder is not None:
        raise rundir.RunBusy(
            f"{run_dir} is in use by {holder.describe()}; its live scoring writes score.json while it trains",
            "`kohya-wrap status RUN_DIR` shows the scores so far; score it once the run has ended",
        )


def _render_score(report: ScoreReport, advice: Advice, run_dir: Path | None) -> None:
    """The checkpoints' table, the recommendation and why, the files left out, the advice."""
    from rich.markup import escape
    from rich.table import Table

    from kohya_wrap import score as score_mod
    from kohya_wrap.cli.output import console

    table = Table(title=f"score: {report.references.faces} reference faces, {report.samples}")
    for column in ("step", "samples", "faces", "likeness", "matches", "copies", "variety", "checkpoint"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    best = report.recommended_step
    for c in report.checkpoints:
        style = "bold green" if c.step == best else None
        table.add_row(
            str(c.step),
            str(c.samples),
            str(c.faces),
            _fmt(c.likeness),
            str(c.matches),
            str(c.copies) + (" copying" if c.copying else ""),
            _fmt(c.variety),
            c.checkpoint or "-",
            style=style,
        )
    out = console()
    out.print(table)
    out.print(score_mod.recommended_line(report) if best is not None else f"no checkpoint recommended: {report.reason}")
    if best is not None:
        out.print(f"why: {report.reason}")
        if report.confidence:
            out.print(f"how sure: {report.confidence}")
    left_out = report.left_out
    if left_out:
        out.print(f"[yellow]left out: {len(left_out)} file{'s' if len(left_out) != 1 else ''}[/yellow]")
        for item in left_out[:10]:
            out.print(f"  {item.kind} {escape(item.file)}: {escape(item.why)}")
        if len(left_out) > 10:
            out.print(f"  ... and {len(left_out) - 10} more (--json lists them all)")
    from kohya_wrap.cli.train_cmd import render_advice

    render_advice(advice, out)
    if run_dir is not None:
        from kohya_wrap import rundir

        out.print(f"written: {rundir.paths(run_dir).score_json}")


@click.command()
@click.argument("run_dir", type=Folder(exists=True))
@click.option("--step", type=click.IntRange(min=0), default=None, help="Export this step's checkpoint instead.")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(),  # a string: its trailing slash says "a folder"
    metavar="PATH",
    help="The LoRA file to write (.safetensors), or a folder to write it into (an existing one, or any PATH "
    "ending in /). Never overwritten.",
)
@json_option
def export(run_dir: Path, step: int | None, out: str, as_json: bool) -> None:
    """Write one checkpoint of a run as a standalone LoRA file, with its score in the metadata.

    --step N when given, else the recommended checkpoint of RUN_DIR/score.json, else the last
    complete one (saying why). The sd-scripts metadata is kept, the tensors are copied byte for
    byte, and the score is added under `kohya_wrap_score`.
    """
    from kohya_wrap.score.export import A1111_FOLDER, COMFYUI_FOLDER, export_checkpoint

    result = export_checkpoint(run_dir, out, step=step)
    if as_json:
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(result))
        return
    from kohya_wrap.cli.output import console

    c = console()
    c.print(f"exported step {result.step} ({result.why}) -> {result.path}")
    if result.note:
        c.print(f"[yellow]{result.note}[/yellow]")
    if result.score is not None:
        c.print(
            f"score: likeness {_fmt(result.score.likeness)}, {result.score.matches}/"
            f"{result.score.samples} samples the person, {result.score.copies} copies"
        )
    c.print(f"Automatic1111: copy it into {A1111_FOLDER}/    ComfyUI: into {COMFYUI_FOLDER}/")
    c.print(f"prompt: {result.prompt}", markup=False)
