"""`kohya-wrap train` (plan + train, or a planned RUN_DIR, or --resume) and `kohya-wrap run` (prepare + plan + train).

Both build one kohya_wrap.pipeline request and render its result; `-o` is the run directory, as for
`plan` (`--runs-dir` is where a run directory is made when -o is not given).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import (
    CommandFunction,
    Folder,
    OptionDecorator,
    PhotoChoices,
    PlanChoices,
    allow_nan_option,
    allow_pickle_option,
    base_model_option,
    json_option,
    machine_options,
    plan_choices,
    preset_option,
    run_photo_options,
    sd_scripts_option,
    set_option,
    tokenizer_option,
)
from kohya_wrap.errors import RunDirError

if TYPE_CHECKING:
    from rich.console import Console

    from kohya_wrap.cli.output import TrainView
    from kohya_wrap.events import Event
    from kohya_wrap.pipeline import DryRun, PipelineRequest, PipelineResult, TrainRequest
    from kohya_wrap.prepare import PrepareOptions, PrepareResult
    from kohya_wrap.preset import Preset
    from kohya_wrap.rundir import Plan
    from kohya_wrap.score.advice import Advice

_COMMON: list[OptionDecorator] = [
    preset_option(),
    base_model_option(),
    click.option(
        "-o",
        "--output",
        "run_dir",
        type=Folder(),
        default=None,
        help="The run directory to make (as for `plan`); default RUNS_DIR/<date>-<time>-<name>.",
    ),
    click.option(
        "--runs-dir",
        "runs_dir",
        type=Folder(),
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


def _common(f: CommandFunction) -> CommandFunction:
    """The options train and run share; the ones that say what to plan reach the command as one `plan`."""
    f = plan_choices(f)
    for option in reversed(_COMMON):
        f = option(f)
    return f


def _new_run_dir(runs_dir: Path, label: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_dir / f"{stamp}-{label}"


@click.command()
@click.argument("dataset_dir", required=False, type=Folder())
@click.option(
    "--resume",
    "resume_dir",
    type=Folder(exists=True),
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
    plan: PlanChoices,
    dry_run: bool,
    allow_nan: bool,
    stop_early: bool | None,
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
    from kohya_wrap.pipeline import PipelineRequest

    planned = _planned_run(dataset_dir, resume_dir, extend, plan)
    if planned is not None:
        train = _train_request(planned, plan, allow_nan, stop_early, resume=resume_dir is not None, extend=extend)
        _run(PipelineRequest(train=train), as_json=as_json, dry_run=dry_run)
        return
    if dataset_dir is None or not plan.preset or not plan.base_model:
        if dataset_dir is not None and not dataset_dir.exists():
            raise RunDirError(
                f"{dataset_dir} does not exist",
                "give a run directory `kohya-wrap plan` wrote, or DATASET_DIR with --preset and --base-model",
            )
        raise click.UsageError(
            "give DATASET_DIR, --preset and --base-model (or a planned RUN_DIR, or --resume RUN_DIR)"
        )
    target = plan.run_dir or _new_run_dir(plan.runs_dir, Path(plan.preset).stem)
    train = _train_request(target, plan, allow_nan, stop_early)
    _run(PipelineRequest(train=train, plan=plan.request(dataset_dir, target)), as_json=as_json, dry_run=dry_run)


def _planned_run(
    dataset_dir: Path | None, resume_dir: Path | None, extend: int | None, plan: PlanChoices
) -> Path | None:
    """The run directory to train as it was planned: --resume RUN_DIR, --extend STEPS RUN_DIR, or a RUN_DIR
    `kohya-wrap plan` wrote; None: DATASET_DIR is to be planned. Refuses options that do not go together."""
    from kohya_wrap.rundir import is_planned

    if resume_dir is not None and (dataset_dir is not None or plan.preset or plan.base_model):
        raise click.UsageError("--resume continues an existing run: give no DATASET_DIR, --preset or --base-model")
    if extend is not None:
        if dataset_dir is None or resume_dir is not None or plan.preset or plan.base_model:
            raise click.UsageError(
                "--extend STEPS RUN_DIR: give the run directory, and no --resume, --preset or --base-model"
            )
        if not is_planned(dataset_dir):
            state = "is not a run directory (it holds no plan.json)" if dataset_dir.exists() else "does not exist"
            raise RunDirError(f"--extend: {dataset_dir} {state}", "give the run directory of a finished run")
    planned = resume_dir or (
        dataset_dir
        if dataset_dir is not None and is_planned(dataset_dir) and not plan.preset and not plan.base_model
        else None
    )
    if planned is not None and plan.changes_plan:
        raise click.UsageError(
            "a planned run trains as planned: --set, --gpus, --tokenizer-cache-dir, -o and the "
            "machine options apply when planning (give DATASET_DIR, --preset and --base-model)"
        )
    return planned


@click.command()
@click.argument("src_photos", type=Folder(exists=True))
@run_photo_options
@click.option("--strict", is_flag=True, help="Stop before training when prepare finds anything to warn about.")
@_common
def run(
    src_photos: Path,
    photos: PhotoChoices,
    strict: bool,
    plan: PlanChoices,
    dry_run: bool,
    allow_nan: bool,
    stop_early: bool | None,
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
    from kohya_wrap.pipeline import PipelineRequest
    from kohya_wrap.rundir import paths

    if not plan.preset or not plan.base_model:
        raise click.UsageError("give --preset and --base-model")
    target = plan.run_dir or _new_run_dir(plan.runs_dir, photos.token)
    dataset = paths(target).dataset_dir
    prepare, chosen = _run_prepare_options(photos, plan, src_photos, dataset)
    request = PipelineRequest(
        train=_train_request(target, plan, allow_nan, stop_early),
        plan=dataclasses.replace(plan.request(dataset, target), preset=chosen),
        prepare=prepare,
        remove_on_failure=target,
    )
    _run(request, as_json=as_json, dry_run=dry_run, strict=strict)


def _run_prepare_options(
    photos: PhotoChoices, plan: PlanChoices, src_photos: Path, dataset: Path
) -> tuple[PrepareOptions, str | Preset]:
    """`run` prepares at the preset's [kohya_wrap] size and crop unless --size or --crop says otherwise; the
    preset, loaded when they were read from it (the plan takes it as it is: `run` loads it once), else its name."""
    assert plan.preset is not None
    chosen: str | Preset = plan.preset
    if photos.size is None or photos.crop is None:
        from kohya_wrap.pipeline import preset_prepare_settings

        preset_size, preset_crop, chosen = preset_prepare_settings(plan.preset, plan.overrides)
        photos = dataclasses.replace(photos, size=photos.size or str(preset_size), crop=photos.crop or preset_crop)
    return photos.prepare_options(src_photos, dataset), chosen


def _train_request(
    run_dir: Path,
    plan: PlanChoices,
    allow_nan: bool,
    stop_early: bool | None,
    *,
    resume: bool = False,
    extend: int | None = None,
) -> TrainRequest:
    from kohya_wrap.pipeline import TrainRequest
    from kohya_wrap.train.runner import TrainOptions

    options = TrainOptions(resume=resume, allow_nan=allow_nan, sd_scripts=plan.sd_scripts, extend=extend)
    return TrainRequest(run_dir=run_dir, options=options, score=True, stop_early=stop_early)


def _run(request: PipelineRequest, *, as_json: bool, dry_run: bool, strict: bool = False) -> None:
    """Run the pipeline with a view of its stages and of the training; a failure exits with its stage's code."""
    if dry_run:
        _dry_run(request, as_json)
        return
    from kohya_wrap.cli.output import console, err_console
    from kohya_wrap.pipeline import Stages, run_pipeline

    out = err_console() if as_json else console()
    screen = _TrainScreen(request.train.run_dir, out, as_json=as_json, strict=strict)
    try:
        result = run_pipeline(screen.watch(request), Stages(screen.on_stage))
    finally:
        screen.close()
    _render_outcome(result, out, as_json)
    if result.failure is not None:
        raise result.failure.error()


class _TrainScreen:
    """What `train` and `run` show while the pipeline runs: prepare's bar (on stderr, only on a terminal),
    prepare's summary, the plan's warnings, then the training view from its first event."""

    def __init__(self, run_dir: Path, out: Console, *, as_json: bool, strict: bool) -> None:
        from kohya_wrap.cli.output import new_photo_progress

        self.run_dir = run_dir
        self.out = out
        self.as_json = as_json
        self.strict = strict
        self.progress, self.on_prepare_progress = new_photo_progress()
        self.view: TrainView | None = None

    def watch(self, request: PipelineRequest) -> PipelineRequest:
        """The request with this screen's callbacks."""
        from kohya_wrap.report.html import write_report

        # the report is rewritten at every checkpoint and at the end, so a stopped run has one too
        train = dataclasses.replace(request.train, on_event=self.on_event, on_signal=_on_signal, on_saved=write_report)
        return dataclasses.replace(
            request,
            train=train,
            after_prepare=self.after_prepare,
            after_plan=_after_plan,
            on_prepare_progress=self.on_prepare_progress,
        )

    def on_stage(self, name: str) -> None:
        from kohya_wrap.pipeline import PREPARE

        if name == PREPARE:
            self.progress.start()

    def after_prepare(self, prepared: PrepareResult) -> None:
        from kohya_wrap.cli.prepare_cmd import render_summary, strict_line
        from kohya_wrap.errors import ExitCode, KohyaWrapError

        self.progress.stop()
        stopping = self.strict and bool(prepared.warnings)
        if not self.as_json:
            # a run that stops here is removed with its dataset: no manifest path to point at
            render_summary(prepared, kept=not stopping)
        if stopping:
            error = KohyaWrapError(
                f"{strict_line(prepared)}; nothing was trained",
                "fix the photos, or leave out --strict",
            )
            error.exit_code = ExitCode.WARNINGS
            raise error

    def on_event(self, event: Event) -> None:
        if self.view is None:
            from kohya_wrap.cli.train_view import make_view
            from kohya_wrap.rundir import read_plan

            self.view = make_view(self.as_json, self.out, read_plan(self.run_dir).subsets)
        self.view(event)

    def close(self) -> None:
        self.progress.stop()
        if self.view is not None:
            self.view.close()


def _on_signal(_signum: int, count: int) -> None:
    from kohya_wrap.cli.output import err_console

    if count == 1:
        err_console().print("[yellow]stopping: interrupt sent to the trainer; press Ctrl-C again to kill it[/yellow]")
    else:
        err_console().print("[red]killing the trainer[/red]")


def _after_plan(plan: Plan) -> None:
    from kohya_wrap.cli.output import print_warnings

    print_warnings(plan.warnings)


def _render_outcome(result: PipelineResult, out: Console, as_json: bool) -> None:
    """How the run ended, its score and the advice; with --json, the last line of the stream."""
    from rich.markup import escape

    from kohya_wrap.cli.train_view import render_result

    if result.trained is not None:
        render_result(result.trained, out)
    if result.score is not None or result.score_note:
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


def _result_json(result: PipelineResult) -> dict[str, object]:
    """--json: after the events, one line with how the run ended, the recommendation and the advice."""
    from kohya_wrap.codec import to_builtins

    trained = result.trained
    assert trained is not None
    return {
        "type": "result",
        "run_dir": str(trained.run_dir),
        "outcome": trained.outcome,
        "exit_code": result.exit_code,
        "last_step": trained.last_step,
        "total_steps": trained.total_steps,
        "stopped_early": to_builtins(trained.stopped_early),
        "recommended": to_builtins(result.score.recommended) if result.score is not None else None,
        "advice": to_builtins(result.advice) if result.advice is not None else None,
        "score_note": result.score_note,
    }


def render_advice(advice: Advice, out: Console) -> None:
    from rich.markup import escape

    colour = {"recommended": "green", "copies": "yellow", "not_learnt": "yellow"}.get(advice.kind, "white")
    out.print(f"[bold {colour}]advice[/bold {colour}]: {escape(advice.text)}", highlight=False, soft_wrap=True)
    if advice.command and advice.kind in ("recommended", "copies"):
        out.print(f"  export it: {escape(advice.command)}", highlight=False, soft_wrap=True)


def _dry_run(request: PipelineRequest, as_json: bool) -> None:
    """The exact command that would run on this machine, with both configs; nothing is kept or started."""
    from kohya_wrap.cli.prepare_cmd import render_summary
    from kohya_wrap.pipeline import dry_run

    if not as_json:  # what prepare found, as `run` shows it; the folder it prepared into is deleted
        request = dataclasses.replace(request, after_prepare=lambda found: render_summary(found, kept=False))
    _print_dry_run(dry_run(request), as_json)


def _print_dry_run(done: DryRun, as_json: bool) -> None:
    import shlex

    from rich.markup import escape

    from kohya_wrap.cli.output import console, print_json, print_warnings
    from kohya_wrap.rundir import ACCELERATE_CONFIG, GPU_DATASET_TOML

    launch, plan = done.launch, done.launch.plan
    files = {**dict(plan.files), ACCELERATE_CONFIG: launch.accelerate_config}
    if launch.gpu_dataset_toml is not None:
        files[GPU_DATASET_TOML] = launch.gpu_dataset_toml
    if as_json:
        print_json(_dry_run_json(done, files), rename=done.rename)
        return
    print_warnings(done.warnings)
    if done.rename is not None:
        # the configs name the dataset where `run` would prepare it, not the temporary folder
        files = {name: text.replace(*done.rename) for name, text in files.items()}
    con = console()
    con.print("[bold]command[/bold]", highlight=False)
    con.print(shlex.join(launch.argv), highlight=False, soft_wrap=True, markup=False)
    con.print("[bold]environment[/bold] (added to yours)", highlight=False)
    for key, value in launch.env.items():
        con.print(f"{key}={shlex.quote(str(value))}", highlight=False, markup=False)
    con.print(f"[bold]working directory[/bold] {escape(str(plan.run_dir))}", highlight=False)
    for name, text in files.items():
        con.print(f"[bold]{name}[/bold]", highlight=False)
        con.print(text, highlight=False, markup=False, soft_wrap=True)
    for note in done.notes:
        con.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    con.print(f"[dim]{escape(done.ending)}[/dim]", highlight=False)


def _dry_run_json(done: DryRun, files: dict[str, str]) -> dict[str, object]:
    from kohya_wrap.codec import to_builtins
    from kohya_wrap.train.manifest import machine_entry

    launch, plan = done.launch, done.launch.plan
    doc: dict[str, object] = {
        "argv": list(launch.argv),
        "env": dict(launch.env),
        "cwd": str(plan.run_dir),
        "files": files,
        "machine": to_builtins(machine_entry(launch.machine)),
        "notes": list(done.notes),
        "plan": to_builtins(plan.document()),
    }
    if done.prepared is not None:
        kept = ("subsets", "counts", "findings")
        doc["prepare"] = {k: v for k, v in to_builtins(done.prepared.record()).items() if k in kept}
        doc["warnings"] = list(done.warnings)
    return doc
