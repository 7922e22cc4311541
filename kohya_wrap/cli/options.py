"""Options shared by several commands."""

from __future__ import annotations

import click

sd_scripts_option = click.option(
    "--sd-scripts", "sd_scripts", type=click.Path(file_okay=False), default=None,
    help="sd-scripts checkout to use (else $KOHYA_WRAP_SD_SCRIPTS, else the submodule third_party/sd-scripts).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
