from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.options import json_option
from kohya_wrap.errors import ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from kohya_wrap.events import Event
    from kohya_wrap.rundir import SavedFile
    from kohya_wrap.status import LiveScore, RunStatus

# Without a terminal, --follow prints a progress line at most this often (events that matter at once).
PLAIN_PROGRESS_EVERY_S = 10.0


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep reading events.jsonl until the run finishes; exit with the run's own exit code.",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="A run with no event and no trainer output for this long, and no 'finished' event, "
    "is reported as stalled (its process died or hangs).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --follow: how often to look for new events.",
)
@json_option
def status(run_dir: Path, follow: bool, stale_after: float, interval: float, as_json: bool) -> None:
    """Where a run stands: phase, step, speed, ETA, loss, last checkpoint, outcome.

    Reads RUN_DIR/events.jsonl, which `kohya-wrap train` writes as it goes, so it works from another
    shell, after a disconnect, or on a copied run folder. Exit 0 when the status was read; with
    --follow, the exit code of the run (0 finished, else the failure's code; 130 on Ctrl-C).
    """
    from kohya_wrap.sweep import is_sweep_dir

    if is_sweep_dir(run_dir):  # a SWEEP_DIR: the table of its variants
        from kohya_wrap.cli.sweep_cmd import print_sweep_status

        return print_sweep_status(run_dir, as_json=as_json, follow=follow)
    from kohya_wrap import status as status_mod

    if not run_dir.is_dir():  # exit 1 like `report`, not click's usage error (2)
        from kohya_wrap.errors import RunDirError

        state = "is not a folder" if run_dir.exists() else "does not exist"
        raise RunDirError(f"{run_dir} {state}.", "Give the run folder that `kohya-wrap plan` created.")
    if not follow:
        result = status_mod.read_status(run_dir, stale_after_s=stale_after)
        if as_json:
            from kohya_wrap.cli.output import print_json
            from kohya_wrap.codec import to_builtins

            print_json(to_builtins(result))
        else:
            from kohya_wrap.cli.output import console

            console().print(_table(result))
        return

    renderer = _JsonLines() if as_json else (_LiveView() if sys.stdout.isatty() else _PlainLines())
    try:
        with renderer:
            final = status_mod.follow(run_dir, renderer.update, poll_s=interval, stale_after_s=stale_after)
    except KeyboardInterrupt:
        from kohya_wrap.cli.output import err_console

        err_console().print("stopped following; the run itself is not affected")
        raise SystemExit(ExitCode.INTERRUPTED) from None
    raise SystemExit(final.exit_code if final.exit_code is not None else ExitCode.ERROR)


_STATE_COLOUR = {
    "finished": "green",
    "running": "cyan",
    "stalled": "yellow",
    "interrupted": "yellow",
    "failed": "bold red",
    "planned": "white",
}


def _table(s: RunStatus) -> Table:
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in [*_progress_rows(s), *_saved_rows(s), *_next_rows(s)]:
        table.add_row(name, value)
    return table


def _state_text(s: RunStatus) -> str:
    from kohya_wrap.status import format_duration

    colour = _STATE_COLOUR[s.state]
    state = f"[{colour}]{s.state}[/{colour}]"
    quiet = format_duration(s.seconds_since_last_event)
    if s.state == "stalled" and s.lock_file:
        return state + f" (stopped: no process holds the run and there is no 'finished' event; last event {quiet} ago)"
    if s.state == "stalled":
        return state + f" (stalled or stopped: no event for {quiet} and no 'finished' event)"
    if s.state == "running" and s.held_by:
        return state + f" ({s.held_by})"
    if s.outcome is not None:
        return state + f" (outcome {s.outcome}, exit code {s.exit_code})"
    return state


def _progress_rows(s: RunStatus) -> list[tuple[str, str]]:
    rows = [
        ("run", f"{s.run_dir}" + (f"  (preset {s.preset})" if s.preset else "")),
        ("state", _state_text(s)),
        ("phase", s.phase or "-"),
        ("step", _progress_text(s)),
        ("loss", "-" if s.avr_loss is None else f"{s.avr_loss:.4g}"),
    ]
    if s.epoch is not None:
        rows.append(("epoch", f"{s.epoch}/{s.epochs}" if s.epochs is not None else str(s.epoch)))
    return rows


def _saved_rows(s: RunStatus) -> list[tuple[str, str]]:
    from kohya_wrap.status import format_duration

    rows = []
    if s.last_checkpoint:
        rows.append(("checkpoint", _saved_text(s.last_checkpoint)))
    if s.last_state:
        rows.append(("saved state", _saved_text(s.last_state)))
    if s.samples and s.last_sample is not None:
        rows.append(("samples", f"{s.samples}, last {s.last_sample.path}"))
    if s.last_warning:
        rows.append(("last warning", f"[yellow]{_escape(s.last_warning)}[/yellow] ({s.warnings} in all)"))
    if s.last_error:
        rows.append(("error", f"[red]{_escape(s.last_error)}[/red]"))
    if s.last_event_at:
        rows.append(("last event", f"{s.last_event_at} ({format_duration(s.seconds_since_last_event)} ago)"))
    if s.segments > 1:
        rows.append(("resumed", f"{s.segments - 1} time(s)"))
    if s.lora_file and s.lora_exists:
        rows.append(("LoRA", s.lora_file))
    return rows


def _next_rows(s: RunStatus) -> list[tuple[str, str]]:
    """How good it is so far, and what to do next."""
    from kohya_wrap.rundir import EVENTS_JSONL

    rows = []
    if s.validation_loss is not None:
        rows.append(("validation loss", f"{s.validation_loss:.4g} at step {s.validation_step}"))
    if s.scores:
        rows.append(("likeness", _escape("; ".join(_score_text(c) for c in s.scores[-6:]))))
    if s.stop_early:
        rows.append(("stopped early", _escape(s.stop_early)))
    if s.score:
        rows.append(("score", _escape(s.score)))
    if s.advice:
        rows.append(("advice", _escape(s.advice.text)))
    if s.resume_command:
        rows.append(("resume with", f"[cyan]{_escape(s.resume_command)}[/cyan]"))
    elif s.not_resumable:
        rows.append(("cannot resume", f"{_escape(s.not_resumable)}: plan a new run to train again"))
    if s.unreadable_lines:
        rows.append((EVENTS_JSONL, f"[yellow]{s.unreadable_lines} unreadable line(s) skipped[/yellow]"))
    return rows


def _score_text(c: LiveScore) -> str:
    likeness = "-" if c.likeness is None else f"{c.likeness:.2f}"
    return f"{c.step}: {likeness} ({c.matches}/{c.samples}, {c.copies} copies)"


def _progress_text(s: RunStatus) -> str:
    from kohya_wrap.status import format_duration

    if s.step is None:
        return "-" if s.total_steps is None else f"0/{s.total_steps}"
    parts = [f"{s.step}/{s.total_steps}" if s.total_steps is not None else str(s.step)]
    if s.percent is not None:
        parts[0] += f" ({s.percent:.0f}%)"
    if s.rate is not None:
        parts.append(f"{s.rate:.2f} {s.rate_unit}")
    if s.state == "running" and s.eta_s is not None:
        parts.append(f"ETA {format_duration(s.eta_s)}")
    return "  ".join(parts)


def _saved_text(saved: SavedFile) -> str:
    return saved.path if saved.step is None else f"{saved.path} (step {saved.step})"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _one_line(s: RunStatus) -> str:
    parts = [s.state if s.phase is None or s.done else f"{s.state}/{s.phase}", _progress_text(s)]
    if s.avr_loss is not None:
        parts.append(f"loss {s.avr_loss:.4g}")
    if s.epoch is not None and s.epochs is not None:
        parts.append(f"epoch {s.epoch}/{s.epochs}")
    return "  ".join(parts)


class _JsonLines:
    """--follow --json: one compact status object per line whenever it changes; the last is final."""

    def __enter__(self) -> _JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, s: RunStatus, _new: list[Event]) -> None:
        from kohya_wrap.codec import to_builtins

        sys.stdout.write(json.dumps(to_builtins(s), ensure_ascii=False) + "\n")
        sys.stdout.flush()


class _PlainLines:
    """--follow without a terminal (nohup, a notebook, a log file): events that matter, progress now and then."""

    def __init__(self) -> None:
        self._last_progress = 0.0

    def __enter__(self) -> _PlainLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, s: RunStatus, new: list[Event]) -> None:
        notable = [_event_text(e) for e in new]
        for text in filter(None, notable):
            click.echo(text)
        now = time.monotonic()
        if not new or any(notable) or now - self._last_progress >= PLAIN_PROGRESS_EVERY_S or s.done:
            click.echo(_one_line(s))
            self._last_progress = now


def _event_text(e: Event) -> str | None:
    from kohya_wrap import events as ev

    if isinstance(e, ev.Phase):
        return f"phase: {e.phase}"
    if isinstance(e, ev.Epoch):
        return f"epoch {e.epoch}/{e.total}"
    if isinstance(e, ev.Checkpoint):
        return f"checkpoint saved: {e.path}"
    if isinstance(e, ev.StateSaved):
        return f"state saved: {e.path}"
    if isinstance(e, ev.Sample):
        return f"sample written: {e.path}"
    if isinstance(e, ev.Warning_):
        return f"warning: {e.message}"
    if isinstance(e, ev.Error):
        return f"error: {e.message}"
    if isinstance(e, ev.Score):
        likeness = "-" if e.likeness is None else f"{e.likeness:.2f}"
        best = "" if e.recommended is None else f" (recommended so far: step {e.recommended})"
        return f"score step {e.step}: likeness {likeness}, {e.matches}/{e.samples} the person, {e.copies} copies{best}"
    if isinstance(e, ev.StopEarly):
        return f"stopping early after step {e.step}: {e.reason}"
    if isinstance(e, ev.Finished):
        return f"finished: {e.outcome} (exit code {e.exit_code})"
    return None


class _LiveView:
    """--follow on a terminal: the status table, redrawn in place."""

    def __enter__(self) -> _LiveView:
        from rich.live import Live

        from kohya_wrap.cli.output import console

        self._live = Live(console=console(), auto_refresh=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, s: RunStatus, _new: list[Event]) -> None:
        self._live.update(_table(s), refresh=True)
