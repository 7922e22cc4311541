"""`kohya-wrap smoke`: the whole chain on generated data with the real sd-scripts, offline; a verdict."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import Folder, json_option, sd_scripts_option

if TYPE_CHECKING:
    from kohya_wrap.cli.output import TrainView
    from kohya_wrap.events import Event
    from kohya_wrap.smoke.run import SmokeResult

_STAGE_NOTES = {
    "base_model": "base model: checking the cached random SD1.5 (the first run builds it: about 2 GB, a minute)",
    "images": "images: drawing faces",
    "prepare": "prepare",
    "plan": "plan: preset smoke",
    # measured: 221 s on a 2-core CPU (4 steps, 2 samples, a checkpoint every 2 steps)
    "train": "train: the real sd-scripts (about 4 minutes on a 2-core CPU; less with more cores or a GPU)",
    "verify": "verify: the LoRA file",
}


@click.command()
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Train this many steps instead of the smoke preset's 4."
)
@click.option(
    "--keep",
    type=Folder(),
    default=None,
    help="Keep everything (photos, dataset, run directory, LoRA) in this new or empty folder.",
)
@sd_scripts_option
@json_option
def smoke(steps: int | None, keep: Path | None, sd_scripts: str | None, as_json: bool) -> None:
    """Prove the whole chain works, offline: draw a few faces, prepare them, plan with the `smoke`
    preset, train a few steps with the real sd-scripts (on the CPU, or the GPU when there is one)
    on a random-weight SD1.5 built locally, and verify the LoRA.

    Prints one line with the time each stage took; exit code 0 only when everything held (else
    1, or the `train` exit code of the failure). Needs the sd-scripts checkout, the [train] extra
    and about 8 GB of memory. The base model is built once into the cache ($KOHYA_WRAP_HOME).
    """
    from kohya_wrap.cli.output import print_json
    from kohya_wrap.smoke.run import SmokeFailed, run_smoke

    screen = _SmokeScreen(as_json)
    try:
        result = run_smoke(
            steps, keep, screen.on_event, sd_scripts=sd_scripts, on_stage=screen.on_stage, on_signal=screen.on_signal
        )
    finally:
        screen.close()
    if as_json:
        from kohya_wrap.codec import to_builtins

        print_json(to_builtins(result.report()))
    else:
        _render(result)
    if not result.ok:
        if result.trainer_tail and not as_json:
            screen.notes.print(f"[dim]last {len(result.trainer_tail)} lines of the trainer's output:[/dim]")
            for line in result.trainer_tail:
                screen.notes.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise SmokeFailed(result)


class _SmokeScreen:
    """A note on stderr as each stage starts, and the training view from the first training event until
    the next stage's note, so a live panel never has other lines printed into it."""

    def __init__(self, as_json: bool) -> None:
        from kohya_wrap.cli.output import err_console

        self.as_json = as_json
        self.notes = err_console()
        self.view: TrainView | None = None

    def on_event(self, event: Event) -> None:
        if self.view is None:
            from kohya_wrap.cli.output import console
            from kohya_wrap.cli.train_view import PlainView, make_view

            self.view = PlainView() if self.as_json else make_view(False, console())
        self.view(event)

    def on_stage(self, name: str) -> None:
        self.close()
        self.notes.print(f"[dim]{_STAGE_NOTES.get(name, name)}[/dim]", highlight=False, soft_wrap=True)

    def on_signal(self, _signum: int, count: int) -> None:
        if count == 1:
            self.notes.print("[yellow]stopping: interrupt sent to the trainer; press Ctrl-C again to kill it[/yellow]")
        else:
            self.notes.print("[red]killing the trainer[/red]")

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None


def verdict_line(result: SmokeResult) -> str:
    """`smoke ok in 71.2 s: base model reused 3.8 s | images 0.1 s | ...; LoRA verified: 264 modules, 4 steps`."""
    from kohya_wrap.smoke.run import BASE_MODEL, STAGE_LABELS

    parts = []
    for name, seconds in result.stage_seconds:
        label = STAGE_LABELS[name]
        if name == BASE_MODEL and result.base_model is not None:
            label += " built" if result.base_model.built else " reused"
        parts.append(f"{label} {seconds:.1f} s")
    head = f"smoke {result.verdict}"
    if not result.ok:
        head += f" at {STAGE_LABELS.get(result.failed_stage or '', result.failed_stage)}"
    head += f" in {result.seconds:.1f} s"
    if result.build_seconds:
        head += f" ({result.budget_seconds:.1f} s without building the base model)"
    line = head + (": " + " | ".join(parts) if parts else "")
    if result.lora is not None and result.lora.ok:
        steps = result.lora.steps
        line += f"; LoRA verified: {result.lora.modules} modules, {steps} step{'' if steps == 1 else 's'}"
    return line


def _render(result: SmokeResult) -> None:
    from rich.markup import escape

    from kohya_wrap.cli.output import console, err_console

    con = console()
    colour = "green" if result.ok else "bold red"
    con.print(f"[{colour}]{escape(verdict_line(result))}[/{colour}]", highlight=False, soft_wrap=True)
    if result.lora is not None and not result.lora.ok:
        for name, ok, detail in result.lora.checks:
            mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
            con.print(f"  {mark} {name}: {escape(detail)}", highlight=False)
    if result.kept and result.work_dir is not None:
        con.print(f"kept in {escape(str(result.work_dir))}", highlight=False)
    elif result.work_dir is not None:
        con.print(
            f"the files named above were in {escape(str(result.work_dir))}, a temporary folder now deleted; "
            "`kohya-wrap smoke --keep DIR` keeps the photos, the dataset, the run directory and the LoRA",
            highlight=False,
            soft_wrap=True,
        )
    for warning in result.warnings:
        err_console().print(f"[dim]plan note: {escape(warning)}[/dim]", highlight=False, soft_wrap=True)
