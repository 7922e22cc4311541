"""report, sample, inspect, runs: look at runs and LoRA files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import Folder, json_option, sd_scripts_option
from kohya_wrap.errors import ExitCode
from kohya_wrap.sdscripts.gen_command import SAMPLERS

if TYPE_CHECKING:
    from rich.table import Table

    from kohya_wrap.report.inspect import LoraInspection
    from kohya_wrap.report.runs import RunRow
    from kohya_wrap.sample.generate import SampleOptions, SampleProgress
    from kohya_wrap.sample.session import SampleSession
    from kohya_wrap.sdscripts.lora import TrainingInfo


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page (default: RUN_DIR/report.html).",
)
def report(run_dir: Path, out: Path | None) -> None:
    """Write a self-contained HTML report of a run: summary, loss curve, sample grid, manifest.

    Given a SWEEP_DIR, one page comparing its variants: loss curves overlaid, score per step, the best one.
    """
    from kohya_wrap.cli.output import console
    from kohya_wrap.report.html import write_report
    from kohya_wrap.sweep import is_sweep_dir, write_sweep_report

    path = write_sweep_report(run_dir, out) if is_sweep_dir(run_dir) else write_report(run_dir, out)
    console().print(f"report written: {path}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    required=True,
    help="What to draw; repeat for several prompts. sd-scripts' own prompt options (a negative prompt, ...) work.",
)
@click.option(
    "--steps-of",
    default="all",
    show_default=True,
    help="Which checkpoints of a run: all, last, or step numbers like 500,1000.",
)
@click.option("--weight", type=float, default=0.8, show_default=True, help="LoRA strength.")
@click.option("--seed", type=int, default=None, help="First seed (image k of each prompt uses seed+k); default random.")
@click.option("-n", "count", type=int, default=1, show_default=True, help="Images per prompt and checkpoint.")
@click.option("--size", type=int, default=512, show_default=True, help="Width and height in pixels (multiple of 8).")
@click.option("--sampler-steps", type=int, default=30, show_default=True, help="Denoising steps per image.")
@click.option("--scale", type=float, default=7.5, show_default=True, help="Classifier-free guidance scale.")
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default="euler_a",
    show_default=True,
    help="Sampler of sd-scripts' generator.",
)
@click.option(
    "--base-model",
    type=click.Path(path_type=Path),
    default=None,
    help="SD1.5 checkpoint (default: the run's base model from plan.json).",
)
@click.option(
    "--tokenizer-cache-dir",
    type=Folder(),
    default=None,
    help="Offline CLIP tokenizer folder (default: the run's).",
)
@click.option(
    "--out-dir",
    type=Folder(),
    default=None,
    help="Where sessions go (default: RUN_DIR/samples).",
)
@sd_scripts_option
@json_option
def sample(
    target: Path,
    prompts: tuple[str, ...],
    steps_of: str,
    weight: float,
    seed: int | None,
    count: int,
    size: int,
    sampler_steps: int,
    scale: float,
    sampler: str,
    base_model: Path | None,
    tokenizer_cache_dir: Path | None,
    out_dir: Path | None,
    sd_scripts: str | None,
    as_json: bool,
) -> None:
    """Generate images with a LoRA (TARGET a .safetensors file) or each checkpoint of a run (TARGET a run folder).

    A progress view shows which LoRA is sampled and the images made; the generator's own output is in the
    session folder's gen.log. A checkpoint cut short (killed mid-save) is skipped with a warning; given
    alone, it is refused (exit 1). Exit 11 when the CLIP tokenizer is missing and cannot be fetched (offline).
    """
    from kohya_wrap.cli.output import console, print_json
    from kohya_wrap.sample.generate import SampleOptions

    opts = SampleOptions(
        prompts=prompts,
        weight=weight,
        seed=seed,
        count=count,
        width=size,
        height=size,
        sampler_steps=sampler_steps,
        scale=scale,
        sampler=sampler,
        steps_of=steps_of,
    )
    view = _SampleProgress()
    session = view.sample(target, opts, base_model, tokenizer_cache_dir, out_dir, sd_scripts)
    if as_json:
        print_json(_session_json(session, view.skipped))
        return
    console().print(
        f"{len(session.images)} images in {session.folder} (seed {session.seed})", highlight=False, soft_wrap=True
    )


class _SampleProgress:
    """A progress view, as train's: the generator's own output goes to the session's gen.log (shown
    when it fails), not to the terminal. On stderr, and live only on a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from kohya_wrap.cli.output import err_console

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("sampling {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console(),
            transient=True,
        )
        self.bar = self.progress.add_task("", total=None)
        self.finished: list[str] = []
        self.skipped: list[str] = []

    def sample(
        self,
        target: Path,
        opts: SampleOptions,
        base_model: Path | None,
        tokenizer_cache_dir: Path | None,
        out_dir: Path | None,
        sd_scripts: str | None,
    ) -> SampleSession:
        """Run the sampling with this view; the report is written again once it is done."""
        from kohya_wrap.report.html import write_report
        from kohya_wrap.sample.generate import SampleHooks
        from kohya_wrap.sample.generate import sample as run_sample

        with self.progress:
            return run_sample(
                target,
                opts,
                base_model=base_model,
                tokenizer_cache_dir=tokenizer_cache_dir,
                out_dir=out_dir,
                sd_scripts=sd_scripts,
                hooks=SampleHooks(on_done=write_report, on_progress=self.on_progress, on_note=self.on_note),
            )

    def on_note(self, note: str) -> None:
        from rich.markup import escape

        self.skipped.append(note)
        self.progress.console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)

    def on_progress(self, p: SampleProgress) -> None:
        from rich.markup import escape

        self.progress.update(self.bar, description=f"{p.lora} ({p.index}/{p.loras})", completed=p.done, total=p.total)
        if p.done == p.index * (p.total // p.loras) and p.lora not in self.finished:
            self.finished.append(p.lora)
            self.progress.console.print(f"sampled {escape(p.lora)} ({p.done}/{p.total} images)", highlight=False)


def _session_json(session: SampleSession, skipped: list[str]) -> dict[str, object]:
    return {
        "folder": str(session.folder),
        "seed": session.seed,
        "skipped": skipped,
        "images": [
            {
                "path": str(i.path),
                "lora": i.lora_file,
                "step": i.step,
                "prompt_index": i.prompt_index,
                "image_index": i.image_index,
                "seed": i.seed,
            }
            for i in session.images
        ],
    }


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--metadata", "show_metadata", is_flag=True, help="Also list every raw metadata key.")
@click.option("--strict", is_flag=True, help="Also exit 4 on a warning (a check shown but not part of health).")
@json_option
def inspect_(file: Path, show_metadata: bool, strict: bool, as_json: bool) -> None:
    """What is inside a LoRA .safetensors file (from any trainer), and a health check.

    Exit 1 when a health check FAILs; with --strict, exit 4 when only a note is shown.
    """
    from kohya_wrap.report.inspect import inspect_lora, inspection_record

    result = inspect_lora(file)
    if as_json:
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(inspection_record(result)))
    else:
        _render_inspection(result, show_metadata)
    if not result.healthy:  # a FAIL (NaN weights, all-zero up weights...) is an error a script must see
        raise SystemExit(ExitCode.ERROR)
    if strict and any(not c.ok for c in result.checks):
        raise SystemExit(ExitCode.WARNINGS)


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _render_inspection(r: LoraInspection, show_metadata: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from kohya_wrap.cli.output import console

    con = console()
    t = Table(title=escape(str(r.path)), show_header=False, box=None, padding=(0, 1))
    t.add_column("what", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for name, value in [*_file_rows(r), *_training_rows(r.info), *_run_rows(r)]:
        if value is not None:
            t.add_row(escape(name), escape(_fmt(value)))
    con.print(t)
    con.print(_health_table(r))
    if show_metadata and r.metadata:
        meta = Table(title="metadata", show_header=False, box=None, padding=(0, 1))
        meta.add_column("key", no_wrap=True)
        meta.add_column("value", overflow="fold")
        for k, v in r.metadata.items():
            meta.add_row(escape(k), escape(v if len(v) <= 400 else v[:400] + "…"))
        con.print(meta)


def _file_rows(r: LoraInspection) -> list[tuple[str, object]]:
    """What the weights themselves say."""
    return [
        ("size", f"{r.size_bytes / 2**20:.1f} MiB"),
        ("sha256", r.sha256),
        ("key naming", r.naming + (f" ({r.variant})" if r.variant else "")),
        ("tensors", f"{r.tensors} ({', '.join(r.dtypes)})"),
        ("modules", f"U-Net {r.unet_modules}, text encoder {r.text_encoder_modules}"),
        ("rank (from weights)", ", ".join(map(str, r.ranks)) or None),
        ("alpha (from weights)", ", ".join(_fmt(a) for a in r.alphas) or None),
    ]


def _training_rows(i: TrainingInfo | None) -> list[tuple[str, object]]:
    """What the trainer wrote into the file's metadata (ss_* keys)."""
    from kohya_wrap.rundir import format_duration

    if i is None:
        return [("training metadata", "none in this file")]
    lr = _fmt(i.learning_rate)
    if i.unet_lr is not None or i.text_encoder_lr is not None:
        lr += f" (U-Net {_fmt(i.unet_lr)}, text encoder {_fmt(i.text_encoder_lr)})"
    base = _fmt(i.base_model_name) + (f" [{i.base_model_hash}]" if i.base_model_hash else "")
    images = f"{_fmt(i.train_images)} train (with repeats), {_fmt(i.reg_images)} reg"
    folders = ", ".join(f"{d.name} ({_fmt(d.images)} images x {_fmt(d.repeats)})" for d in i.dataset_dirs)
    return [
        ("title", i.title),
        ("network module", i.network_module),
        ("dim", i.network_dim),
        ("alpha", i.network_alpha),
        ("network args", i.network_args),
        ("base model", base),
        ("base model sha256", i.base_model_sha256),
        ("base model version", i.base_model_version),
        ("resolution", i.resolution),
        ("steps", f"{_fmt(i.steps)} of {_fmt(i.max_train_steps)}" if i.steps is not None else None),
        ("epoch", f"{_fmt(i.epoch)} of {_fmt(i.epochs)}" if i.epoch is not None else None),
        ("learning rate", lr),
        ("scheduler", i.lr_scheduler),
        ("optimizer", i.optimizer),
        ("batch size", i.batch_size),
        ("images", images if i.train_images is not None else None),
        ("dataset folders", folders or None),
        ("top tags", ", ".join(f"{t.tag} ({t.count})" for t in i.top_tags[:10]) or None),
        ("training time", format_duration(i.training_seconds) if i.training_seconds is not None else None),
        ("precision", i.mixed_precision),
        ("seed", i.seed),
        ("sd-scripts", i.sd_scripts_commit),
    ]


def _run_rows(r: LoraInspection) -> list[tuple[str, object]]:
    """The kohya-wrap run beside the file, when there is one."""
    if r.run_manifest_path is None or r.run_manifest is None:
        return []
    m = r.run_manifest
    return [
        ("kohya-wrap run", str(r.run_manifest_path)),
        ("  outcome", m.outcome),
        ("  kohya_wrap_version", m.kohya_wrap_version),
        ("  started_at", m.started_at),
        ("  ended_at", m.ended_at),
    ]


def _health_table(r: LoraInspection) -> Table:
    from rich.markup import escape
    from rich.table import Table

    health = Table(title="health", show_header=False, box=None, padding=(0, 1))
    health.add_column("status", no_wrap=True)
    health.add_column("check", no_wrap=True)
    health.add_column("detail", overflow="fold")
    for c in r.checks:
        if c.ok:
            status = "[green]ok[/green]"
        else:
            status = "[yellow]note[/yellow]" if c.informational else "[bold red]FAIL[/bold red]"
        health.add_row(status, escape(c.name), escape(c.detail))
    return health


@click.command()
@click.argument("runs_dir", type=click.Path(path_type=Path), default=Path("runs"), required=False)
@json_option
def runs(runs_dir: Path, as_json: bool) -> None:
    """A table of the runs in RUNS_DIR (default ./runs): when, preset, steps, outcome, final loss, output.

    Given a SWEEP_DIR, its variants' runs (SWEEP_DIR/runs).
    """
    from kohya_wrap.report.runs import list_runs
    from kohya_wrap.sweep import is_sweep_dir, sweep_runs_dir

    if is_sweep_dir(runs_dir) and sweep_runs_dir(runs_dir).is_dir():
        runs_dir = sweep_runs_dir(runs_dir)
    rows = list_runs(runs_dir)
    if as_json:
        from kohya_wrap.cli.output import print_json
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(rows))
    else:
        _print_runs(runs_dir, rows)


def _print_runs(runs_dir: Path, rows: list[RunRow]) -> None:
    from rich.box import SIMPLE_HEAD
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from kohya_wrap.cli.output import console

    con = console()
    if not rows:
        con.print(f"no runs in {runs_dir}", highlight=False)
        return
    t = Table(
        title=f"runs in {escape(str(runs_dir))}", box=SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False
    )
    # No cell is ever broken, file names least of all (they are what one copies): a terminal too narrow
    # for the table gets one line per run instead; a pipe or a file gets rows as wide as they need.
    for col in ("run", "when", "preset", "steps", "outcome", "loss", "output"):
        t.add_column(col, no_wrap=True)
    lines = []
    for r in rows:
        cells = _run_cells(r)
        t.add_row(*cells)
        lines.append(f"[bold]{cells[0]}[/bold]\n  " + "  ".join(cells[1:]))
    if not con.is_terminal:
        Console(width=100_000, no_color=con.no_color, emoji=False).print(t)
    elif con.measure(t, options=con.options.update(width=100_000)).maximum <= con.width:
        con.print(t)
    else:
        con.print(f"runs in {escape(str(runs_dir))} (when, preset, steps, outcome, loss, output):", highlight=False)
        for line in lines:
            con.print(line, highlight=False)  # wrapped between cells, never inside one


def _run_cells(r: RunRow) -> tuple[str, ...]:
    from rich.markup import escape

    if r.outcome in ("finished", "stopped_early"):
        colour = "green"
    else:
        colour = "yellow" if r.outcome in ("planned", "unfinished") else "red"
    steps = f"{_fmt(r.steps_done)}/{_fmt(r.steps_total)}" if r.steps_done is not None else f"—/{_fmt(r.steps_total)}"
    when = r.when.replace("T", " ")[:16] if r.when else None
    output = r.output.name if r.output is not None else None  # in the run folder: the name is enough
    return (
        escape(r.run_dir.name),
        escape(_fmt(when)),
        escape(_fmt(r.preset)),
        steps,
        f"[{colour}]{escape(r.outcome)}[/{colour}]",
        _fmt(round(r.final_loss, 4) if r.final_loss is not None else None),
        escape("plan.json unreadable" if r.problem else _fmt(output)),
    )
