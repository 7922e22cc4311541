"""Rendering a training run: a rich live view on a terminal, plain periodic lines otherwise, or
JSON Lines events on stdout (--json). Each view is an on_event callback plus close(); what they
show is folded from the events by kohya_wrap.rundir.RunFold, as status and the report fold them."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kohya_wrap.events import (
    Checkpoint,
    Epoch,
    Error,
    Event,
    Finished,
    Phase,
    Progress,
    Sample,
    Score,
    StateSaved,
    StopEarly,
    Summary,
    Warning_,
    event_line,
)
from kohya_wrap.rundir import RunFold, format_duration

if TYPE_CHECKING:
    from kohya_wrap.rundir import PlanSubset
    from kohya_wrap.train.runner import TrainResult

PHASE_LABELS = {
    "preparing": "preparing",
    "loading_model": "loading the base model",
    "caching_latents": "caching latents",
    "training": "training",
    "sampling": "generating samples",
    "saving": "saving",
    "finished": "finished",
}


def score_text(score: Score) -> str:
    """One checkpoint's live score in words: `step 750: likeness 0.69, 3/3 the person, 0 copies`."""
    likeness = "-" if score.likeness is None else f"{score.likeness:.2f}"
    text = f"step {score.step}: likeness {likeness}, {score.matches}/{score.samples} the person, {score.copies} copies"
    if score.faces < score.samples:
        text += f", {score.samples - score.faces} without a face"
    return text


def _scores_table(s: RunFold) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("step", "likeness", "the person", "copies"):
        table.add_column(column, justify="right")
    scores = s.score_list
    best = scores[-1].recommended if scores else None
    for score in scores[-8:]:
        style = "bold green" if score.step == best else ("yellow" if score.copies * 2 > score.samples else None)
        table.add_row(
            str(score.step),
            "-" if score.likeness is None else f"{score.likeness:.2f}",
            f"{score.matches}/{score.samples}",
            str(score.copies),
            style=style,
        )
    return table


def _speed(p: Progress) -> str:
    if p.rate is None:
        return "?"
    return f"{p.rate:.2f} {p.rate_unit}"


class LiveView:
    """A rich Live panel, redrawn at most 4 times a second."""

    def __init__(self, console: Console) -> None:
        self.state = RunFold()
        self.console = console
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self) -> Table:
        s = self.state
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("phase", PHASE_LABELS.get(s.phase or "", s.phase or "starting"))
        p = s.last_progress
        if p is not None:
            total = p.total or 1
            table.add_row(
                "step", Group(ProgressBar(total=total, completed=p.step, width=40), Text(f"{p.step}/{p.total}"))
            )
            table.add_row(
                "speed", f"{_speed(p)}   elapsed {format_duration(p.elapsed_s)}   ETA {format_duration(p.eta_s)}"
            )
            if s.loss:
                table.add_row("loss", f"{s.loss[-1].loss:.4g}  {s.trend()}")
        if s.epoch is not None:
            table.add_row("epoch", f"{s.epoch}/{s.epochs}")
        if s.last_checkpoint:
            table.add_row("checkpoint", escape(s.last_checkpoint.path))
        if s.last_state:
            table.add_row("state", escape(s.last_state.path))
        if s.samples:
            table.add_row("samples", str(len(s.samples)))
        if s.scores:
            best = s.score_list[-1].recommended
            table.add_row("likeness", _scores_table(s))
            table.add_row("recommended", "-" if best is None else f"step {best} (so far)")
        if s.stop_early is not None:
            table.add_row("[cyan]stopping early[/cyan]", escape(s.stop_early.reason))
        if s.warnings:
            table.add_row("[yellow]warning[/yellow]", escape(s.warnings[-1]))
        if s.last_failure is not None:
            table.add_row("[red]error[/red]", escape(s.last_failure.message))
        return table

    def __call__(self, event: Event) -> None:
        self.state.feed(event)
        self.live.update(self._render())

    def close(self) -> None:
        self.live.update(self._render())
        self.live.stop()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def images_text(subsets: Sequence[PlanSubset], with_repeats: int | None) -> str:
    """'10 images x 60 repeats', from the plan's training subsets; the trainer's own count (images x
    repeats) alone when the plan is not known, or beside it when the two differ."""
    train = [s for s in subsets if not s.is_reg]
    if not train:
        return f"{with_repeats} images with repeats"
    text = " + ".join(f"{_plural(s.images, 'image')} x {_plural(s.repeats, 'repeat')}" for s in train)
    if with_repeats is not None and with_repeats != sum(s.images * s.repeats for s in train):
        text += f" ({with_repeats} with repeats, as the trainer counts them)"
    return text


class PlainView:
    """Plain lines for logs and CI: every change of phase, epoch, checkpoint, warning and error, and a
    progress line at most every `interval` seconds (and at the last step)."""

    def __init__(
        self, stream: TextIO | None = None, interval: float = 30.0, subsets: Sequence[PlanSubset] = ()
    ) -> None:
        self.state = RunFold()
        self.stream = stream or sys.stderr
        self.interval = interval
        self.subsets = tuple(subsets)  # the plan's (images, repeats, is_reg): what the trainer's count is made of
        self._last_print: float | None = None  # the first progress line is always printed
        self._last_phase: str | None = None

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        self.state.feed(event)
        if isinstance(event, Phase):
            self._last_phase = event.phase
            self._print(f"[{PHASE_LABELS.get(event.phase, event.phase)}]")
        elif isinstance(event, Progress):
            now = time.monotonic()
            if self._last_print is None or now - self._last_print >= self.interval or event.step == event.total:
                self._last_print = now
                loss = "" if event.avr_loss is None else f" loss {event.avr_loss:.4g}"
                self._print(f"step {event.step}/{event.total} {_speed(event)} ETA {format_duration(event.eta_s)}{loss}")
        elif isinstance(event, Summary):
            self._print(
                f"{event.total_steps} steps: {images_text(self.subsets, event.train_images)}, "
                f"{event.epochs} epoch{'' if event.epochs == 1 else 's'}, batch {event.batch_size}"
            )
        elif isinstance(event, Epoch):
            self._print(f"epoch {event.epoch}/{event.total}")
        elif isinstance(event, Checkpoint):
            self._print(f"checkpoint: {event.path}")
        elif isinstance(event, StateSaved):
            self._print(f"state saved: {event.path}")
        elif isinstance(event, Sample):
            self._print(f"sample: {event.path}")
        elif isinstance(event, Warning_):
            self._print(f"warning: {event.message}")
        elif isinstance(event, Error) and event.kind != "interrupted":
            # a KeyboardInterrupt is how the trainer stops on SIGINT (Ctrl-C, or a stop early): no error;
            # the outcome line says how the run ended
            self._print(f"error: {event.message}")
        elif isinstance(event, Score):
            best = "" if event.recommended is None else f" (recommended so far: step {event.recommended})"
            self._print(f"score {score_text(event)}{best}")
        elif isinstance(event, StopEarly):
            self._print(f"stopping early after step {event.step}: {event.reason}")
        elif isinstance(event, Finished) and event.outcome != self._last_phase:
            # the trainer's own "finished" phase line already said it
            self._print(f"[{event.outcome}]")

    def close(self) -> None:
        pass


class JsonView:
    """Every event as one JSON line on stdout, flushed, for CI."""

    def __call__(self, event: Event) -> None:
        sys.stdout.write(event_line(event) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


def make_view(as_json: bool, console: Console, subsets: Sequence[PlanSubset] = ()) -> LiveView | PlainView | JsonView:
    """subsets: the plan's (images, repeats, is_reg), for the plain view's line about the images."""
    if as_json:
        return JsonView()
    if console.is_terminal:
        return LiveView(console)
    return PlainView(subsets=subsets)


def render_result(result: TrainResult, console: Console) -> None:
    """The end of a run: what came out, where it goes, or what went wrong and what to do."""
    if result.outcome == "finished":
        _render_finished(result, console)
    elif result.outcome == "stopped_early":
        _render_stopped_early(result, console)
    else:
        console.print(f"[bold red]{result.outcome}[/bold red] (exit code {result.exit_code})", highlight=False)
    if result.verification is not None:
        for check in result.verification.checks:
            mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
            console.print(f"  {mark} {check.name}: {escape(check.detail)}", highlight=False)
    if result.outcome == "crashed" and result.tail:
        console.print(f"[dim]last {len(result.tail)} lines of the trainer's output:[/dim]")
        for line in result.tail:
            console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    if result.outcome in ("interrupted", "nan", "crashed", "killed", "oom"):
        _render_next_step(result, console)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False)
    if result.report_path is not None:
        console.print(f"report: {escape(str(result.report_path))}", highlight=False)
    console.print(
        f"[dim]log: {escape(str(result.log_path))}   events: {escape(str(result.events_path))}   "
        f"manifest: {escape(str(result.manifest_path))}[/dim]",
        highlight=False,
    )


def _render_finished(result: TrainResult, console: Console) -> None:
    console.print(f"[green]finished[/green]: {escape(str(result.lora_file))}", highlight=False)
    if result.final_loss is not None:
        console.print(
            f"final loss {result.final_loss:.4g}"
            + (f", {result.mean_it_per_s:.2f} it/s on average" if result.mean_it_per_s else "")
        )
    name = result.output_name
    console.print(
        "Use it: copy the file into Automatic1111's [bold]models/Lora/[/bold] or ComfyUI's "
        f"[bold]models/loras/[/bold], and prompt with [bold]{escape(f'<lora:{name}:0.8>')}[/bold].",
        highlight=False,
    )


def _render_stopped_early(result: TrainResult, console: Console) -> None:
    console.print(
        f"[green]stopped early[/green] at step {result.last_step} of {result.total_steps}: "
        "live scoring found that more training could only make it worse",
        highlight=False,
    )
    stopped = result.stopped_early
    if stopped is not None and stopped.reason:
        console.print(f"why: {escape(stopped.reason)}", highlight=False, soft_wrap=True)
    if stopped is not None and stopped.steps_saved:
        seconds = stopped.seconds_saved
        time_saved = f", about {format_duration(float(seconds))} of GPU time" if seconds else ""
        console.print(f"saved {stopped.steps_saved} steps{time_saved}", highlight=False)
    if result.last_checkpoint:
        console.print(f"last checkpoint: {escape(result.last_checkpoint)}", highlight=False)


def _render_next_step(result: TrainResult, console: Console) -> None:
    """After a stop: what was saved, and `train --resume` when the run's view says it continues."""
    if result.last_checkpoint:
        console.print(f"last checkpoint: {escape(result.last_checkpoint)}", highlight=False)
    if result.last_state is not None:
        console.print(
            f"last saved state: {escape(str(result.last_state.path))} (step {result.last_state.step})",
            highlight=False,
        )
    if result.resume_command is not None:
        console.print(f"resume with: [bold]{escape(result.resume_command)}[/bold]", highlight=False)
    else:
        why = result.not_resumable or "no state was saved yet"
        console.print(f"this run cannot be resumed: {escape(why)}; plan a new run (a new directory) to train again.")
