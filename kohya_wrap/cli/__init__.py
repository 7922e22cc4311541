"""The `kohya-wrap` command. Thin: each command parses, calls one stage function, renders.

Command modules are imported only when their command runs (or --help lists them), and stage
modules only inside the command body, so `kohya-wrap --help` never imports torch, PIL or numpy.
"""

from __future__ import annotations

import importlib

import click

from kohya_wrap import __version__
from kohya_wrap.errors import ExitCode, KohyaWrapError

# command name -> "module:attribute" under kohya_wrap.cli
COMMANDS: dict[str, str] = {
    "doctor": "doctor_cmd:doctor",
    "prepare": "prepare_cmd:prepare",
    "presets": "presets_cmd:presets",
    "plan": "plan_cmd:plan",
    "train": "train_cmd:train",
    "run": "train_cmd:run",
    "smoke": "smoke_cmd:smoke",
    "status": "status_cmd:status",
    "report": "report_cmd:report",
    "sample": "report_cmd:sample",
    "inspect": "report_cmd:inspect_",
    "runs": "report_cmd:runs",
    "score": "score_cmd:score",
    "export": "score_cmd:export",
    "sweep": "sweep_cmd:sweep",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # click suggests from the commands a group holds, and this one holds none until they load
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS and not ctx.resilient_parsing:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            ctx.fail(f"No such command {name!r}." + (f" Did you mean {close[0]!r}?" if close else ""))
        return super().resolve_command(ctx, args)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"kohya_wrap.cli.{module_name}")
        except ModuleNotFoundError as e:
            # A command whose module is not written yet is simply not offered.
            if e.name == f"kohya_wrap.cli.{module_name}":
                return None
            raise
        return getattr(module, attr, None)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KohyaWrapError as e:
            from kohya_wrap.cli.output import print_error

            print_error(e)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            from kohya_wrap.cli.output import err_console

            err_console().print("[yellow]interrupted[/yellow]")
            ctx.exit(ExitCode.INTERRUPTED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as e:
            from kohya_wrap.cli.output import print_error, report_unexpected
            from kohya_wrap.errors import disk_error, path_through_a_file

            problem = disk_error(e) or path_through_a_file(e)
            if problem is None:
                report_unexpected(e)
                ctx.exit(ExitCode.UNEXPECTED)
            print_error(problem)
            ctx.exit(problem.exit_code)
        except Exception as e:  # noqa: BLE001  one place turns bugs into a log and exit 3
            from kohya_wrap.cli.output import report_unexpected

            report_unexpected(e)
            ctx.exit(ExitCode.UNEXPECTED)
        return None


def _version_message() -> str:
    from kohya_wrap.sdscripts import PINNED_COMMIT, PINNED_TAG

    return f"kohya-wrap {__version__} (sd-scripts {PINNED_TAG}, {PINNED_COMMIT[:12]})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print kohya-wrap's version and the sd-scripts version it is pinned to.",
)
def cli() -> None:
    """Train a Stable Diffusion 1.5 likeness LoRA with kohya-ss sd-scripts from the terminal.

    photos -> prepare -> plan -> train -> report. Start with `kohya-wrap doctor`, or
    `kohya-wrap smoke` for a complete offline run.
    """


def main() -> None:
    cli(prog_name="kohya-wrap")


if __name__ == "__main__":  # pragma: no cover
    main()
