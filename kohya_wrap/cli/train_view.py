"""Rendering a training run: a rich live view on a terminal, plain periodic lines otherwise, or
JSON Lines events on stdout (--json). Each view is an on_event callback plus close()."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kohya_wrap.events import (
    Checkpoint, Epoch, Error, Event, Finished, Phase, Progress, Sample, StateSaved, Summary, Warning_, to_json,
)

PHASE_LABELS = {
    "preparing": "preparing", "loading_model": "loading the base model", "caching_latents": "caching latents",
    "training": "training", "sampling": "generating samples", "saving": "saving", "finished": "finished",
}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _speed(p: Progress) -> str:
    if p.rate is None:
        return "?"
    return f"{p.rate:.2f} {p.rate_unit}"


class _State:
    """What every view shows, folded from the events."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.progress: Progress | None = None
        self.losses: list[float] = []
        self.epoch: Epoch | None = None
        self.total: int | None = None
        self.checkpoint: str | None = None
        self.state: str | None = None
        self.warning: str | None = None
        self.error: str | None = None
        self.samples = 0

    def update(self, event: Event) -> None:
        if isinstance(event, Phase):
            self.phase = event.phase
        elif isinstance(event, Progress):
            self.progress = event
            self.total = event.total
            if event.avr_loss is not None and (not self.losses or self.losses[-1] != event.avr_loss):
                self.losses.append(event.avr_loss)
        elif isinstance(event, Summary):
            self.total = event.total_steps
        elif isinstance(event, Epoch):
            self.epoch = event
        elif isinstance(event, Checkpoint):
            self.checkpoint = event.path
        elif isinstance(event, StateSaved):
            self.state = event.path
        elif isinstance(event, Warning_):
            self.warning = event.message
        elif isinstance(event, Error):
            self.error = event.message
        elif isinstance(event, Sample):
            self.samples += 1

    def trend(self) -> str:
        """The loss now against a tenth of the run ago: falling, flat or rising."""
        if len(self.losses) < 3:
            return ""
        back = self.losses[-max(2, len(self.losses) // 10)]
        now = self.losses[-1]
        if back != back or now != now:  # NaN
            return "NaN"
        change = (now - back) / back if back else 0.0
        return "falling" if change < -0.01 else "rising" if change > 0.01 else "flat"


class LiveView:
    """A rich Live panel, redrawn at most 4 times a second."""

    def __init__(self, console: Console) -> None:
        self.state = _State()
        self.console = console
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self) -> Any:
        s = self.state
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("phase", PHASE_LABELS.get(s.phase or "", s.phase or "starting"))
        p = s.progress
        if p is not None:
            total = p.total or 1
            table.add_row("step", Group(ProgressBar(total=total, completed=p.step, width=40),
                                        Text(f"{p.step}/{p.total}")))
            table.add_row("speed", f"{_speed(p)}   elapsed {_clock(p.elapsed_s)}   ETA {_clock(p.eta_s)}")
            if s.losses:
                table.add_row("loss", f"{s.losses[-1]:.4g}  {s.trend()}")
        if s.epoch is not None:
            table.add_row("epoch", f"{s.epoch.epoch}/{s.epoch.total}")
        if s.checkpoint:
            table.add_row("checkpoint", escape(s.checkpoint))
        if s.state:
            table.add_row("state", escape(s.state))
        if s.samples:
            table.add_row("samples", str(s.samples))
        if s.warning:
            table.add_row("[yellow]warning[/yellow]", escape(s.warning))
        if s.error:
            table.add_row("[red]error[/red]", escape(s.error))
        return table

    def __call__(self, event: Event) -> None:
        self.state.update(event)
        self.live.update(self._render())

    def close(self) -> None:
        self.live.update(self._render())
        self.live.stop()


class PlainView:
    """Plain lines for logs and CI: every change of phase, epoch, checkpoint, warning and error, and a
    progress line at most every `interval` seconds (and at the last step)."""

    def __init__(self, stream: Any = None, interval: float = 30.0) -> None:
        self.state = _State()
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last_print: float | None = None  # the first progress line is always printed
        self._last_phase: str | None = None

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        self.state.update(event)
        if isinstance(event, Phase):
            self._last_phase = event.phase
            self._print(f"[{PHASE_LABELS.get(event.phase, event.phase)}]")
        elif isinstance(event, Progress):
            now = time.monotonic()
            if self._last_print is None or now - self._last_print >= self.interval or event.step == event.total:
                self._last_print = now
                loss = "" if event.avr_loss is None else f" loss {event.avr_loss:.4g}"
                self._print(f"step {event.step}/{event.total} {_speed(event)} ETA {_clock(event.eta_s)}{loss}")
        elif isinstance(event, Summary):
            self._print(f"{event.total_steps} steps: {event.train_images} images x repeats, "
                        f"{event.epochs} epoch{'' if event.epochs == 1 else 's'}, batch {event.batch_size}")
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
        elif isinstance(event, Error):
            self._print(f"error: {event.message}")
        elif isinstance(event, Finished) and event.outcome != self._last_phase:
            # the trainer's own "finished" phase line already said it
            self._print(f"[{event.outcome}]")

    def close(self) -> None:
        pass


class JsonView:
    """Every event as one JSON line on stdout, flushed, for CI."""

    def __call__(self, event: Event) -> None:
        sys.stdout.write(to_json(event) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


def make_view(as_json: bool, console: Console) -> LiveView | PlainView | JsonView:
    if as_json:
        return JsonView()
    if console.is_terminal:
        return LiveView(console)
    return PlainView()


def render_result(result: Any, console: Console) -> None:
    """The end of a run: what came out, where it goes, or what went wrong and what to do."""
    if result.outcome == "finished":
        console.print(f"[green]finished[/green]: {escape(str(result.lora_file))}", highlight=False)
        if result.final_loss is not None:
            console.print(f"final loss {result.final_loss:.4g}"
                          + (f", {result.mean_it_per_s:.2f} it/s on average" if result.mean_it_per_s else ""))
        name = result.output_name
        console.print("Use it: copy the file into Automatic1111's [bold]models/Lora/[/bold] or ComfyUI's "
                      f"[bold]models/loras/[/bold], and prompt with [bold]{escape(f'<lora:{name}:0.8>')}[/bold].",
                      highlight=False)
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
        if result.last_checkpoint:
            console.print(f"last checkpoint: {escape(result.last_checkpoint)}", highlight=False)
        if result.last_state is not None:
            console.print(f"last saved state: {escape(str(result.last_state.path))} (step {result.last_state.step})",
                          highlight=False)
            console.print(f"resume with: [bold]{escape(result.resume_command)}[/bold]", highlight=False)
        else:
            console.print("no state was saved yet, so this run cannot be resumed; start it again.")
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False)
    report = result.run_dir / "report.html"
    if report.is_file():
        console.print(f"report: {escape(str(report))}", highlight=False)
    console.print(f"[dim]log: {escape(str(result.log_path))}   events: {escape(str(result.events_path))}   "
                  f"manifest: {escape(str(result.manifest_path))}[/dim]", highlight=False)
