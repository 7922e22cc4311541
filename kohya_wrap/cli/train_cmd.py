"""`kohya-wrap train` (plan + train, or a planned RUN_DIR, or --resume) and `kohya-wrap run` (prepare + plan + train).

Both build one kohya_wrap.pipeline request and render its result; `-o` is the run directory, as for
`plan` (`--runs-dir` is where a run directory is made when -o is not given).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import click

from kohya_wrap.cli.options import (
    allow_nan_option,
    allow_pickle_option,
    base_model_option,
    json_option,
    machine_options,
    preset_option,
    run_photo_options,
    sd_scripts_option,
    set_option,
    tokenizer_option,
)

if TYPE_CHECKING:
    from kohya_wrap.preset import Preset

_COMMON: list[Callable[[Any], Any]] = [
    preset_option(),
    base_model_option(),
    click.option(
        "-o",
        "--output",
        "run_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The run directory to make (as for `plan`); default RUNS_DIR/<date>-<time>-<name>.",
    ),
    click.option(
        "--runs-dir",
        "runs_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("runs"),
        show_default=True,
        help="Where a run directory is made when -o is not given.",
    ),
    set_option,
    click.option(
        "--gpus",
        type=click.IntRange(min=1),
        default=None,
        help="GPUs of each machine to train on (data parallel with accelerate).",
    ),
    machine_options,
    tokenizer_option,
    allow_pickle_option,
    click.option(
        "--dry-run", is_flag=True, help="Print the command line, its environment and both configs; start nothing."
    ),
    allow_nan_option,
    click.option(
        "--stop-early/--no-stop-early",
        "stop_early",
        default=None,
        help="Stop once live scoring finds that more training can only make it worse (samples copy the photos, "
        "or the likeness stopped improving past the preset's min_steps). Default: the preset's stop_early "
        "(on in the likeness presets). Needs the scorer (kohya-wrap[score]).",
    ),
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
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Continue the stopped run in this run directory from its last saved state.",
)
@click.option(
    "--extend",
    "extend",
    type=click.IntRange(min=1),
    default=None,
    metavar="STEPS",
    help="Continue the finished or early-stopped run RUN_DIR by STEPS more steps (`train --extend 1000 RUN_DIR`).",
)
@_common
def train(
    dataset_dir: Path | None,
    resume_dir: Path | None,
    extend: int | None,
    preset: str | None,
    base_model: str | None,
    run_dir: Path | None,
    runs_dir: Path,
    overrides: tuple[str, ...],
    gpus: int | None,
    machines: Any,
    tokenizer_cache_dir: Path | None,
    allow_pickle: bool,
    dry_run: bool,
    allow_nan: bool,
    stop_early: bool | None,
    sd_scripts: str | None,
    as_json: bool,
) -> None:
    """Plan a run of DATASET_DIR and train it; train a RUN_DIR `plan` made; continue a stopped one with
    --resume RUN_DIR; or train a finished one further with --extend STEPS RUN_DIR.

    While it trains, each checkpoint's samples are scored against the photos (where the scorer is
    installed) and the live view shows likeness, matches and copies; with --stop-early (the likeness
    presets' default) the run stops once more training can only make it worse. It ends with advice:
    the step to export, or how to go on.

    Exit codes: 0 finished (or stopped early), 10 out of GPU memory, 11 the base model or the tokenizer is missing, 12 no images found,
    13 configuration rejected, 14 package missing, 15 NaN loss, 16 crashed, 17 killed,
    18 LoRA failed verification, 130 interrupted.

    The run directory is locked while it trains: a second train, resume or sample of it is refused.
    Ctrl-C stops the trainer (its whole process group) and prints the resume command; a second
    Ctrl-C kills it. --gpus N trains data parallel on N GPUs of this machine. Several machines
    (docs/multi-gpu.md): run the same command on each with --num-machines M --machine-rank R
    --main-process-ip IP of the rank-0 machine.
    """
    from kohya_wrap.pipeline import PipelineRequest, PlanRequest
    from kohya_wrap.rundir import Machines, is_planned

    if resume_dir is not None and (dataset_dir is not None or preset or base_model):
        raise click.UsageError("--resume continues an existing run: give no DATASET_DIR, --preset or --base-model")
    if extend is not None:
        if dataset_dir is None or resume_dir is not None or preset or base_model:
            raise click.UsageError(
                "--extend STEPS RUN_DIR: give the run directory, and no --resume, --preset or --base-model"
            )
        if not is_planned(dataset_dir):
            raise click.UsageError(f"--extend: {dataset_dir} is not a run directory (it holds no plan.json)")
    # a run directory to train as it was planned: --resume RUN_DIR, --extend STEPS RUN_DIR, or a RUN_DIR
    # `kohya-wrap plan` wrote
    planned = resume_dir or (
        dataset_dir if dataset_dir is not None and is_planned(dataset_dir) and not preset and not base_model else None
    )
    if planned is not None:
        if overrides or gpus is not None or machines != Machines() or tokenizer_cache_dir is not None or run_dir:
            raise click.UsageError(
                "a planned run trains as planned: --set, --gpus, --tokenizer-cache-dir, -o and the "
                "machine options apply when planning (give DATASET_DIR, --preset and --base-model)"
            )
        _run(
            PipelineRequest(
                train=_train_request(
                    planned, resume_dir is not None, allow_nan, sd_scripts, stop_early=stop_early, extend=extend
                )
            ),
            as_json=as_json,
            dry_run=dry_run,
        )
        return
    if dataset_dir is None or not preset or not base_model:
        raise click.UsageError(
            "give DATASET_DIR, --preset and --base-model (or a planned RUN_DIR, or --resume RUN_DIR)"
        )
    target = run_dir or _new_run_dir(runs_dir, Path(preset).stem)
    plan = PlanRequest(
        dataset_dir,
        preset,
        base_model,
        target,
        overrides,
        gpus,
        tokenizer_cache_dir,
        sd_scripts,
        allow_pickle,
        machines,
    )
    _run(
        PipelineRequest(train=_train_request(target, False, allow_nan, sd_scripts, stop_early=stop_early), plan=plan),
        as_json=as_json,
        dry_run=dry_run,
    )


@click.command()
@click.argument("src_photos", type=click.Path(file_okay=False, exists=True, path_type=Path))
@run_photo_options
@click.option("--strict", is_flag=True, help="Stop before training when prepare finds anything to warn about.")
@_common
def run(
    src_photos: Path,
    token: str,
    class_word: str,
    crop: str | None,
    size: str | None,
    caption: str,
    repeats: int | None,
    reg_dir: Path | None,
    allow_upscale: bool,
    skip: frozenset[str],
    strict: bool,
    preset: str | None,
    base_model: str | None,
    run_dir: Path | None,
    runs_dir: Path,
    overrides: tuple[str, ...],
    gpus: int | None,
    machines: Any,
    tokenizer_cache_dir: Path | None,
    allow_pickle: bool,
    dry_run: bool,
    allow_nan: bool,
    stop_early: bool | None,
    sd_scripts: str | None,
    as_json: bool,
) -> None:
    """Prepare SRC_PHOTOS, plan and train in one go: the run directory (-o, default RUNS_DIR/<time>-<token>)
    holds the prepared dataset in dataset/.

    The photos are prepared at the preset's [kohya_wrap] size and crop (`kohya-wrap presets show PRESET`)
    unless --size or --crop says otherwise; every warning of the plan is printed before training starts.

    The preset, --set and the base model are checked before any photo is prepared; if prepare or plan
    fails, the run directory is removed. With --dry-run the photos are prepared into a temporary
    folder (the plan counts its images), nothing is kept and no trainer starts. Exit codes as for `train`.
    """
    from kohya_wrap.pipeline import PipelineRequest, PlanRequest, preset_prepare_settings
    from kohya_wrap.prepare import PrepareOptions
    from kohya_wrap.rundir import paths

    if not preset or not base_model:
        raise click.UsageError("give --preset and --base-model")
    chosen: str | Preset = preset
    if size is None or crop is None:
        preset_size, preset_crop, chosen = preset_prepare_settings(preset, overrides)
        size = size or str(preset_size)
        crop = crop or preset_crop
    target = run_dir or _new_run_dir(runs_dir, token)
    dataset = paths(target).dataset_dir
    prepare = PrepareOptions(
        src_dir=src_photos,
        dataset_dir=dataset,
        token=token,
        class_word=class_word,
        size=int(size),
        crop=cast('Literal["face", "center"]', crop),
        caption=caption,
        repeats=repeats,
        reg_dir=reg_dir,
        allow_upscale=allow_upscale,
        skip=skip,
    )
    plan = PlanRequest(
        dataset, chosen, base_model, target, overrides, gpus, tokenizer_cache_dir, sd_scripts, allow_pickle, machines
    )
    request = PipelineRequest(
        train=_train_request(target, False, allow_nan, sd_scripts, stop_early=stop_early),
        plan=plan,
        prepare=prepare,
        remove_on_failure=target,
    )
    _run(request, as_json=as_json, dry_run=dry_run, strict=strict)


def _train_request(
    run_dir: Path,
    resume: bool,
    allow_nan: bool,
    sd_scripts: str | None,
    *,
    stop_early: bool | None = None,
    extend: int | None = None,
) -> Any:
    from kohya_wrap.pipeline import TrainRequest
    from kohya_wrap.train.runner import TrainOptions

    options = TrainOptions(resume=resume, allow_nan=allow_nan, sd_scripts=sd_scripts, extend=extend)
    return TrainRequest(run_dir=run_dir, options=options, score=True, stop_early=stop_early)


def _run(request: Any, *, as_json: bool, dry_run: bool, strict: bool = False) -> None:
    """Run the pipeline with a view of its stages and of the training; a failure exits with its stage's code."""
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kohya_wrap.cli.output import console, err_console
    from kohya_wrap.cli.prepare_cmd import render_summary, strict_line
    from kohya_wrap.cli.train_view import make_view, render_result
    from kohya_wrap.errors import ExitCode, KohyaWrapError
    from kohya_wrap.pipeline import PREPARE, Stages, run_pipeline
    from kohya_wrap.report.html import write_report

    if dry_run:
        _dry_run(request, as_json)
        return
    out = err_console() if as_json else console()
    views: list[Any] = []

    def on_event(event: Any) -> None:
        if not views:
            from kohya_wrap.rundir import read_plan

            views.append(make_view(as_json, out, read_plan(request.train.run_dir).subsets))
        views[0](event)

    def on_signal(_signum: int, count: int) -> None:
        if count == 1:
            err_console().print(
                "[yellow]stopping: interrupt sent to the trainer; press Ctrl-C again to kill it[/yellow]"
            )
        else:
            err_console().print("[red]killing the trainer[/red]")

    # On stderr, and only on a terminal (rich turns it off otherwise): stdout stays clean for --json.
    progress = Progress(
        TextColumn("preparing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    )
    bar = progress.add_task("photos", total=None)

    def on_stage(name: str) -> None:
        if name == PREPARE:
            progress.start()

    def after_prepare(prepared: Any) -> None:
        progress.stop()
        if not as_json:
            render_summary(prepared)
        if strict and prepared.warnings:
            error = KohyaWrapError(
                f"{strict_line(prepared)}; nothing was trained",
                "fix the photos, or leave out --strict",
            )
            error.exit_code = ExitCode.WARNINGS
            raise error

    def after_plan(plan: Any) -> None:
        from kohya_wrap.cli.output import print_warnings

        print_warnings(plan.warnings)

    # the report is rewritten at every checkpoint and at the end, so a stopped run has one too
    train = dataclasses.replace(request.train, on_event=on_event, on_signal=on_signal, on_saved=write_report)
    request = dataclasses.replace(
        request,
        train=train,
        after_prepare=after_prepare,
        after_plan=after_plan,
        on_prepare_progress=lambda done, total: progress.update(bar, completed=done, total=total),
    )
    try:
        result = run_pipeline(request, Stages(on_stage))
    finally:
        progress.stop()
        for view in views:
            view.close()
    if result.trained is not None:
        render_result(result.trained, out)
    if result.score is not None or result.score_note:
        from rich.markup import escape

        from kohya_wrap.score import recommended_line

        line = recommended_line(result.score) if result.score is not None else str(result.score_note)
        out.print(f"[bold]score[/bold]: {escape(line)}", highlight=False, soft_wrap=True)
    if result.advice is not None:
        render_advice(result.advice, out)
    if as_json and result.trained is not None:
        import json
        import sys

        # the last line of the stream: one JSON object, like the events before it, of type "result"
        sys.stdout.write(json.dumps(_result_json(result), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    if result.failure is not None:
        raise result.failure.error()


def _result_json(result: Any) -> dict[str, Any]:
    """--json: after the events, one line with how the run ended, the recommendation and the advice."""
    trained = result.trained
    return {
        "type": "result",
        "run_dir": str(trained.run_dir),
        "outcome": trained.outcome,
        "exit_code": result.exit_code,
        "last_step": trained.last_step,
        "total_steps": trained.total_steps,
        "stopped_early": trained.stopped_early,
        "recommended": (result.score or {}).get("recommended"),
        "advice": result.advice.to_json() if result.advice is not None else None,
        "score_note": result.score_note,
    }


def render_advice(advice: Any, out: Any) -> None:
    from rich.markup import escape

    colour = {"recommended": "green", "copies": "yellow", "not_learnt": "yellow"}.get(advice.kind, "white")
    out.print(f"[bold {colour}]advice[/bold {colour}]: {escape(advice.text)}", highlight=False, soft_wrap=True)
    if advice.command and advice.kind in ("recommended", "copies"):
        out.print(f"  export it: {escape(advice.command)}", highlight=False, soft_wrap=True)


def _dry_run(request: Any, as_json: bool) -> None:
    """The exact command that would run on this machine, with both configs; nothing is kept or started."""
    import dataclasses
    import shutil
    import tempfile

    from kohya_wrap.cli.output import print_warnings
    from kohya_wrap.cli.prepare_cmd import render_summary
    from kohya_wrap.pipeline import check_plan_inputs, make_plan
    from kohya_wrap.prepare import prepare_dataset
    from kohya_wrap.train.runner import prepare_launch, prepare_run

    if request.plan is None:
        prepared = prepare_run(
            request.train.run_dir,
            resume=request.train.options.resume,
            fetch_models=False,
            sd_scripts=request.train.options.sd_scripts,
            extend=request.train.options.extend,
        )
        notes = list(prepared.notes)
        if prepared.state is not None:
            notes.insert(0, f"resumes from {prepared.state.path} at step {prepared.state.step}")
        _print_dry_run(
            prepared, as_json, notes=notes, ending=f"dry run: nothing started; {prepared.plan.run_dir} is unchanged"
        )
        return
    inputs = check_plan_inputs(request.plan)
    scratch: Path | None = None
    try:
        plan_request = request.plan
        findings: dict[str, Any] | None = None
        if request.prepare is not None:
            scratch = Path(tempfile.mkdtemp(prefix="kohya-wrap-dry-run-"))
            options = dataclasses.replace(request.prepare, dataset_dir=scratch / "dataset")
            found = prepare_dataset(options)
            # what prepare found, as `run` shows it; the folder it prepared into is deleted below
            if as_json:
                findings = {k: v for k, v in found.to_json().items() if k in ("subsets", "counts", "findings")}
            else:
                render_summary(found, kept=False)
            plan_request = dataclasses.replace(plan_request, dataset_dir=options.dataset_dir)
        plan = make_plan(plan_request, inputs)
        launch = prepare_launch(plan, resume=False, fetch_models=False, sd_scripts=request.train.options.sd_scripts)
        if not as_json:
            print_warnings(plan.warnings)
        _print_dry_run(
            launch,
            as_json,
            notes=list(launch.notes),
            ending=f"dry run: nothing written, nothing started ({plan.run_dir} would be the run directory)"
            + ("; the photos were prepared into a temporary folder, now deleted" if scratch is not None else ""),
            extra={"prepare": findings, "warnings": list(plan.warnings)} if findings is not None else None,
            # the configs name the dataset where `run` would prepare it, not the temporary folder deleted below
            rename=(str(scratch / "dataset"), str(Path(request.prepare.dataset_dir).expanduser().resolve()))
            if scratch is not None
            else None,
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _renamed(value: Any, rename: tuple[str, str] | None) -> Any:
    """value with every string's `rename[0]` replaced by `rename[1]`, through dicts and lists."""
    if rename is None:
        return value
    if isinstance(value, str):
        return value.replace(*rename)
    if isinstance(value, dict):
        return {k: _renamed(v, rename) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_renamed(v, rename) for v in value]
    return value


def _print_dry_run(
    prepared: Any,
    as_json: bool,
    notes: list[str],
    ending: str,
    extra: dict[str, Any] | None = None,
    rename: tuple[str, str] | None = None,
) -> None:
    import shlex

    from rich.markup import escape

    from kohya_wrap.cli.output import console, print_json
    from kohya_wrap.rundir import ACCELERATE_CONFIG, GPU_DATASET_TOML

    plan = prepared.plan
    raw_files = {**dict(plan.files), ACCELERATE_CONFIG: prepared.accelerate_config}
    if prepared.gpu_dataset_toml is not None:
        raw_files[GPU_DATASET_TOML] = prepared.gpu_dataset_toml
    files = _renamed(raw_files, rename)
    if as_json:
        print_json(
            _renamed(
                {
                    "argv": list(prepared.argv),
                    "env": dict(prepared.env),
                    "cwd": str(plan.run_dir),
                    "files": files,
                    "machine": prepared.machine.to_json(),
                    "notes": notes,
                    "plan": plan.to_json(),
                    **(extra or {}),
                },
                rename,
            )
        )
        return
    con = console()
    con.print("[bold]command[/bold]", highlight=False)
    con.print(shlex.join(prepared.argv), highlight=False, soft_wrap=True, markup=False)
    con.print("[bold]environment[/bold] (added to yours)", highlight=False)
    for key, value in prepared.env.items():
        con.print(f"{key}={shlex.quote(str(value))}", highlight=False, markup=False)
    con.print(f"[bold]working directory[/bold] {escape(str(plan.run_dir))}", highlight=False)
    for name, text in files.items():
        con.print(f"[bold]{name}[/bold]", highlight=False)
        con.print(text, highlight=False, markup=False, soft_wrap=True)
    for note in notes:
        con.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    con.print(f"[dim]{escape(ending)}[/dim]", highlight=False)
