"""`kohya-wrap plan`: a preset plus a prepared dataset become a run directory, validated before anything runs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import (
    Folder,
    allow_pickle_option,
    base_model_option,
    json_option,
    machine_options,
    preset_option,
    sd_scripts_option,
    set_option,
    tokenizer_option,
)

if TYPE_CHECKING:
    from kohya_wrap.rundir import Machines, Plan


@click.command()
@click.argument("dataset_dir", type=Folder())
@preset_option(required=True)
@base_model_option(required=True)
@click.option(
    "-o",
    "--output",
    "run_dir",
    required=True,
    type=Folder(),
    help="The run directory to write (a new one; a finished run is never overwritten).",
)
@set_option
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPUs of this machine to train on (default 1).")
@machine_options
@tokenizer_option
@allow_pickle_option
@sd_scripts_option
@json_option
def plan(
    dataset_dir: Path,
    preset: str,
    base_model: str,
    run_dir: Path,
    overrides: tuple[str, ...],
    gpus: int | None,
    machines: Machines,
    tokenizer_cache_dir: Path | None,
    allow_pickle: bool,
    sd_scripts: str | None,
    as_json: bool,
) -> None:
    """Write RUN_DIR: config.toml, dataset.toml, sample_prompts.txt and plan.json for DATASET_DIR.

    plan says what to train and never touches the network: a hub model and kohya-wrap's tokenizer
    cache are fetched by `train` on the machine that trains, which also chooses the device flags and,
    unless the preset sets it, the mixed precision. `train RUN_DIR --dry-run` shows that command.
    """
    from kohya_wrap.pipeline import PlanRequest, plan_run

    result = plan_run(
        PlanRequest(
            dataset_dir,
            preset,
            base_model,
            run_dir,
            overrides,
            gpus,
            tokenizer_cache_dir,
            sd_scripts,
            allow_pickle,
            machines,
        )
    )
    if as_json:
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(result.document()))
        return
    render_plan(result)


def render_plan(result: Plan) -> None:
    """The plan as a person reads it."""

    from rich.markup import escape

    from kohya_wrap.cli.output import console, print_warnings
    from kohya_wrap.cli.prepare_cmd import plural

    con = console()
    con.print(f"[bold]run[/bold] {escape(str(result.run_dir))}  (preset {escape(result.preset_name)})", highlight=False)
    for s in result.subsets:
        kind = "reg " if s.is_reg else ""
        con.print(
            f"  {kind}{escape(s.dir)}: {plural(s.images, 'image')} x {plural(s.repeats, 'repeat')}", highlight=False
        )
    con.print(f"[bold]steps[/bold] {escape(result.steps.arithmetic)}", highlight=False)
    con.print(f"[bold]model[/bold] {escape(result.base_model.path or result.base_model.source)}", highlight=False)
    con.print(f"[bold]output[/bold] {escape(str(result.lora_file))}", highlight=False)
    con.print(
        f"[bold]train it[/bold] kohya-wrap train {escape(shlex.quote(str(result.run_dir)))}"
        f"   (the exact command: add --dry-run)",
        highlight=False,
        soft_wrap=True,
    )
    print_warnings(result.warnings)
