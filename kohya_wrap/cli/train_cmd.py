"""`kohya-wrap train` (plan + train, or --resume) and `kohya-wrap run` (prepare + plan + train)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from kohya_wrap.cli.options import json_option, machine_options, sd_scripts_option

_COMMON = [
    click.option("--preset", help="Preset name or .toml file."),
    click.option("--base-model", "base_model", help="SD1.5 base model: a .safetensors file, a Diffusers folder or a hub id."),
    click.option("-o", "--runs-dir", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                 show_default=True, help="Where new run directories are made (one per run)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset value (repeatable)."),
    click.option("--gpus", type=click.IntRange(min=1), default=None,
                 help="GPUs of this machine to train on (data parallel with accelerate)."),
    machine_options,
    click.option("--tokenizer-cache-dir", "tokenizer_cache_dir", type=click.Path(file_okay=False, path_type=Path),
                 default=None, help="Folder holding the CLIP tokenizer (offline use)."),
    click.option("--dry-run", is_flag=True, help="Print the command line, its environment and both configs; start nothing."),
    click.option("--allow-nan", is_flag=True, help="Keep training when the loss becomes NaN or infinite."),
    sd_scripts_option,
    json_option,
]


def _common(f: Any) -> Any:
    for option in reversed(_COMMON):
        f = option(f)
    return f


def _new_run_dir(runs_dir: Path, label: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_dir / f"{stamp}-{label}"


@click.command()
@click.argument("dataset_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Continue the stopped run in this run directory from its last saved state.")
@_common
def train(dataset_dir: Path | None, resume_dir: Path | None, preset: str | None, base_model: str | None,
          runs_dir: Path, overrides: tuple[str, ...], gpus: int | None, machines: Any, tokenizer_cache_dir: Path | None,
          dry_run: bool, allow_nan: bool, sd_scripts: str | None, as_json: bool) -> None:
    """Plan a run of DATASET_DIR and train it; train a RUN_DIR `plan` made; or continue one with --resume RUN_DIR.

    Exit codes: 0 finished, 10 out of GPU memory, 11 base model missing, 12 no images found,
    13 configuration rejected, 14 package missing, 15 NaN loss, 16 crashed, 17 killed,
    18 LoRA failed verification, 130 interrupted.

    Ctrl-C stops the trainer (its whole process group) and prints the resume command; a second
    Ctrl-C kills it. --gpus N trains data parallel on N GPUs of this machine. Several machines
    (docs/multi-gpu.md): run the same command on each with --num-machines M --machine-rank R
    --main-process-ip IP of the rank-0 machine.
    """
    from kohya_wrap.plan import Machines

    if resume_dir is not None and (dataset_dir is not None or preset or base_model):
        raise click.UsageError("--resume continues an existing run: give no DATASET_DIR, --preset or --base-model")
    # a run directory to train as it was planned: --resume RUN_DIR, or a RUN_DIR `kohya-wrap plan` wrote
    planned = resume_dir or (dataset_dir if dataset_dir is not None and (dataset_dir / "plan.json").is_file()
                             and not preset and not base_model else None)
    if planned is not None:
        if overrides or gpus is not None or machines != Machines() or tokenizer_cache_dir is not None:
            raise click.UsageError("a planned run trains as planned: --set, --gpus, --tokenizer-cache-dir and the "
                                   "machine options apply when planning (give DATASET_DIR, --preset and --base-model)")
        _train_run_dir(planned, resume=resume_dir is not None, allow_nan=allow_nan, as_json=as_json, dry_run=dry_run)
        return
    if dataset_dir is None or not preset or not base_model:
        raise click.UsageError("give DATASET_DIR, --preset and --base-model (or a planned RUN_DIR, or --resume RUN_DIR)")
    from kohya_wrap.plan import make_plan, write_plan

    plan = make_plan(dataset_dir, preset=preset, base_model=base_model, run_dir=_new_run_dir(runs_dir, Path(preset).stem),
                     overrides=overrides, gpus=gpus, tokenizer_cache_dir=tokenizer_cache_dir, sd_scripts=sd_scripts,
                     machines=machines)
    if dry_run:
        _print_dry_run(plan, as_json)
        return
    write_plan(plan)
    _train_run_dir(plan.run_dir, resume=False, allow_nan=allow_nan, as_json=as_json)


@click.command()
@click.argument("src_photos", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--token", required=True, help="The rare word that will mean this face, e.g. ohwx.")
@click.option("--class", "class_word", required=True, help="What the subject is, e.g. man, woman, person.")
@click.option("--crop", type=click.Choice(("face", "center")), default="face", show_default=True)
@click.option("--size", type=click.Choice(("512", "768")), default="512", show_default=True)
@click.option("--allow-upscale", is_flag=True, help="Keep photos whose crop is smaller than --size (upscaled).")
@_common
def run(src_photos: Path, token: str, class_word: str, crop: str, size: str, allow_upscale: bool, preset: str | None,
        base_model: str | None, runs_dir: Path, overrides: tuple[str, ...], gpus: int | None, machines: Any,
        tokenizer_cache_dir: Path | None, dry_run: bool, allow_nan: bool, sd_scripts: str | None, as_json: bool) -> None:
    """Prepare SRC_PHOTOS, plan and train in one go: RUNS_DIR/<time>-<token>/{dataset,run}.

    With --dry-run the dataset is prepared (the plan counts its images) but nothing is planned on
    disk and no trainer starts. Exit codes as for `train`.
    """
    if not preset or not base_model:
        raise click.UsageError("give --preset and --base-model")
    from kohya_wrap.plan import make_plan, write_plan
    from kohya_wrap.prepare import PrepareOptions, prepare_dataset

    root = _new_run_dir(runs_dir, token)
    prepared = prepare_dataset(PrepareOptions(src_dir=src_photos, dataset_dir=root / "dataset", token=token,
                                              class_word=class_word, size=int(size), crop=crop,  # type: ignore[arg-type]
                                              allow_upscale=allow_upscale))
    plan = make_plan(prepared.dataset_dir, preset=preset, base_model=base_model, run_dir=root / "run",
                     overrides=overrides, gpus=gpus, tokenizer_cache_dir=tokenizer_cache_dir, sd_scripts=sd_scripts,
                     machines=machines)
    if dry_run:
        _print_dry_run(plan, as_json)
        return
    write_plan(plan)
    _train_run_dir(plan.run_dir, resume=False, allow_nan=allow_nan, as_json=as_json)


def _train_run_dir(run_dir: Path, *, resume: bool, allow_nan: bool, as_json: bool, dry_run: bool = False) -> None:
    from kohya_wrap.cli.output import console, err_console
    from kohya_wrap.cli.train_view import make_view, render_result
    from kohya_wrap.report.html import write_report
    from kohya_wrap.train.outcome import TrainingFailed
    from kohya_wrap.train.runner import TrainOptions, prepare_run, run_training

    if dry_run:
        _print_prepared(prepare_run(run_dir, resume=resume, fetch_models=False), as_json)
        return

    out = err_console() if as_json else console()
    view = make_view(as_json, out)

    def on_signal(_signum: int, count: int) -> None:
        if count == 1:
            err_console().print("[yellow]stopping: interrupt sent to the trainer; press Ctrl-C again to kill it[/yellow]")
        else:
            err_console().print("[red]killing the trainer[/red]")

    try:
        # the report is rewritten at every checkpoint and at the end, so a stopped run has one too
        result = run_training(run_dir, TrainOptions(allow_nan=allow_nan, resume=resume), on_event=view,
                              on_signal=on_signal, on_saved=write_report)
    finally:
        view.close()
    render_result(result, out)
    if result.outcome != "finished":
        message = f"training {result.outcome}"
        if result.last_step is not None:
            message += f" at step {result.last_step}/{result.total_steps}"
        message += f"; full output: {result.log_path}"
        raise TrainingFailed(result.outcome, message, result.advice or None)


def _print_dry_run(plan: Any, as_json: bool, argv: Any = None, notes: Any = (), ending: str | None = None) -> None:
    import shlex

    from rich.markup import escape

    from kohya_wrap.cli.output import console, print_json

    argv = list(argv if argv is not None else plan.argv)
    if as_json:
        print_json({"argv": argv, "env": dict(plan.env), "cwd": str(plan.cwd), "files": dict(plan.files),
                    "notes": list(notes), "plan": plan.to_json()})
        return
    con = console()
    con.print("[bold]command[/bold]", highlight=False)
    con.print(shlex.join(argv), highlight=False, soft_wrap=True, markup=False)
    con.print("[bold]environment[/bold] (added to yours)", highlight=False)
    for key, value in plan.env.items():
        con.print(f"{key}={shlex.quote(str(value))}", highlight=False, markup=False)
    con.print(f"[bold]working directory[/bold] {escape(str(plan.cwd))}", highlight=False)
    for name, text in plan.files.items():
        con.print(f"[bold]{name}[/bold]", highlight=False)
        con.print(text, highlight=False, markup=False, soft_wrap=True)
    for note in notes:
        con.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    con.print(f"[dim]{escape(ending or f'dry run: nothing written, nothing started ({plan.run_dir} would be the run directory)')}[/dim]",
              highlight=False)


def _print_prepared(prepared: Any, as_json: bool) -> None:
    """`train RUN_DIR --dry-run` and `train --resume RUN_DIR --dry-run`: the command that would run."""
    state = prepared.state
    notes = list(prepared.notes)
    if state is not None:
        notes.insert(0, f"resumes from {state.path} at step {state.step}")
    _print_dry_run(prepared.job.plan, as_json, argv=prepared.argv, notes=notes,
                   ending=f"dry run: nothing started; {prepared.job.run_dir} is unchanged")
