"""Rendering helpers for the CLI: consoles, JSON, errors. Imported lazily (rich is not free)."""

from __future__ import annotations

import json
import sys
import traceback
from functools import cache
from typing import Any

from rich.console import Console

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.fsutil import user_cache_dir


# emoji=False: rich would turn ":x:" or ":fire:" in a LoRA's name, a file name or a prompt into an emoji
# (`<lora:x:0.8>` printed as `<lora❌0.8>`); nothing kohya-wrap prints is an emoji code
@cache
def console() -> Console:
    return Console(emoji=False)


@cache
def err_console() -> Console:
    return Console(stderr=True, emoji=False)


def print_json(obj: Any) -> None:
    """Machine output: plain JSON on stdout, never wrapped or coloured."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def print_warnings(warnings: Any) -> None:
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
