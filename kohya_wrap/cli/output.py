"""Rendering helpers for the CLI: consoles, JSON, errors. Imported lazily (rich is not free)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Protocol

from rich.console import Console

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.fsutil import user_cache_dir

if TYPE_CHECKING:
    from rich.progress import Progress

    from kohya_wrap.events import Event


# emoji=False: rich would turn ":x:" or ":fire:" in a LoRA's name, a file name or a prompt into an emoji
# (`<lora:x:0.8>` printed as `<lora❌0.8>`); nothing kohya-wrap prints is an emoji code
@cache
def console() -> Console:
    return Console(emoji=False)


@cache
def err_console() -> Console:
    return Console(stderr=True, emoji=False)


def print_json(obj: object, rename: tuple[str, str] | None = None) -> None:
    """Machine output: plain JSON on stdout, never wrapped or coloured.

    rename (old, new): every `old` inside a string written as `new` (JSON escapes each character on its
    own, so the escaped texts can be replaced in the escaped whole).
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str)
    if rename is not None:
        old, new = (json.dumps(part, ensure_ascii=False)[1:-1] for part in rename)
        text = text.replace(old, new)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def new_photo_progress() -> tuple[Progress, Callable[[int, int], None]]:
    """prepare's bar of photos and what moves it. On stderr, and only on a terminal (rich turns it off
    otherwise): stdout stays clean for --json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("preparing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    )
    bar = progress.add_task("photos", total=None)
    return progress, lambda done, total: progress.update(bar, completed=done, total=total)


@contextmanager
def photo_progress() -> Iterator[Callable[[int, int], None]]:
    """new_photo_progress shown while the block runs; yields what moves it."""
    progress, on_progress = new_photo_progress()
    with progress:
        yield on_progress


def print_warnings(warnings: Iterable[str]) -> None:
    """Warnings (a plan's), on stderr, so stdout stays clean for --json: `plan`, `train`, `run` and `sweep` show them."""
    from rich.markup import escape

    for w in warnings:
        err_console().print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)


def print_error(e: KohyaWrapError) -> None:
    from rich.markup import escape  # messages quote TOML tables like [network]: not markup

    con = err_console()
    con.print(f"[bold red]error:[/bold red] {escape(e.message)}", markup=True, highlight=False, soft_wrap=True)
    if e.hint:
        con.print(f"[yellow]hint:[/yellow] {escape(e.hint)}", markup=True, highlight=False, soft_wrap=True)


def report_unexpected(e: BaseException) -> None:
    log = user_cache_dir() / "last-error.log"
    try:
        from kohya_wrap import __version__
        from kohya_wrap.codec import utc_now_text

        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            f"kohya-wrap {__version__} at {utc_now_text()}\n"
            f"argv: {sys.argv}\npython: {sys.version}\n\n" + "".join(traceback.format_exception(e)),
            encoding="utf-8",
        )
        where = str(log)
    except OSError:
        where = "(could not write the log)"
    err_console().print(
        f"[bold red]unexpected error:[/bold red] {type(e).__name__}: {e}\n"
        f"This is a bug in kohya-wrap; details in {where}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )


class TrainView(Protocol):
    """A view of a training (cli.train_view's): called with each event, closed when the training ended."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...
