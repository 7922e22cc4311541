"""Options shared by several commands."""

from __future__ import annotations

import functools
from typing import Any

import click

sd_scripts_option = click.option(
    "--sd-scripts",
    "sd_scripts",
    type=click.Path(file_okay=False),
    default=None,
    help="sd-scripts checkout to use (else $KOHYA_WRAP_SD_SCRIPTS, else the submodule third_party/sd-scripts).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")

# Several machines training one run (docs/multi-gpu.md); every machine runs the same command with its own rank.
_MACHINE_OPTIONS = [
    click.option(
        "--num-machines",
        "num_machines",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Machines training this run together (each with --gpus GPUs).",
    ),
    click.option(
        "--machine-rank",
        "machine_rank",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="This machine's rank: 0 on the main machine, 1, 2, ... on the others.",
    ),
    click.option("--main-process-ip", "main_process_ip", default=None, help="Address of the rank-0 machine."),
    click.option(
        "--main-process-port",
        "main_process_port",
        type=click.IntRange(1, 65535),
        default=29500,
        show_default=True,
        help="Port of the rank-0 machine.",
    ),
]


def machine_options(f: Any) -> Any:
    """The four machine options, handed to the command as one `machines` argument (rundir.Machines)."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        num_machines: int,
        machine_rank: int,
        main_process_ip: str | None,
        main_process_port: int,
        **kwargs: Any,
    ) -> Any:
        from kohya_wrap.rundir import Machines

        return f(*args, machines=Machines(num_machines, machine_rank, main_process_ip, main_process_port), **kwargs)

    for option in reversed(_MACHINE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
