"""Options shared by several commands."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from kohya_wrap.preset import MAX_STEPS

sd_scripts_option = click.option(
    "--sd-scripts",
    "sd_scripts",
    type=click.Path(file_okay=False),
    default=None,
    help="sd-scripts checkout to use (else $KOHYA_WRAP_SD_SCRIPTS, else the submodule third_party/sd-scripts).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def preset_option(required: bool = False) -> Any:
    return click.option(
        "--preset", required=required, help="A shipped preset name (`kohya-wrap presets list`) or a preset file."
    )


def base_model_option(required: bool = False) -> Any:
    return click.option(
        "--base-model",
        "base_model",
        required=required,
        help="SD 1.5 checkpoint: a .safetensors file, a diffusers folder or a Hugging Face repo id "
        "(train fetches it once into the Hugging Face cache).",
    )


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a preset value, e.g. --set network_dim=16 (repeatable; checked like preset values).",
)
tokenizer_option = click.option(
    "--tokenizer-cache-dir",
    "tokenizer_cache_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the CLIP tokenizer (default: kohya-wrap's cache, filled by train).",
)
allow_nan_option = click.option(
    "--allow-nan", is_flag=True, help="Keep training when the loss becomes NaN or infinite."
)
allow_pickle_option = click.option(
    "--allow-pickle", is_flag=True, help="Accept a .ckpt/.pt/.bin base model (loading it runs code in it)."
)

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


# Kept here, not imported from kohya_wrap.prepare, so that --help does not import PIL.
PREPARE_SIZES = ("512", "768")
DEFAULT_CAPTION = "photo of {token} {class}"
SKIP_KINDS = ("no-face", "multi-face", "blurred", "other-person")  # prepare.records.SKIP_KINDS


def _parse_skip(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> frozenset[str]:
    kinds = {k.strip() for v in values for k in v.split(",") if k.strip()}
    unknown = sorted(kinds - set(SKIP_KINDS))
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: not one of {', '.join(SKIP_KINDS)}")
    return frozenset(kinds)


_PHOTO_OPTIONS = [
    click.option("--token", required=True, help="The rare word that will mean this face, e.g. ohwx."),
    click.option("--class", "class_word", required=True, help="What the subject is, e.g. man, woman, person."),
    click.option(
        "--size",
        type=click.Choice(PREPARE_SIZES),
        default="512",
        show_default=True,
        help="Side of the prepared images in pixels.",
    ),
    click.option(
        "--crop",
        type=click.Choice(("face", "center")),
        default="face",
        show_default=True,
        help="Square around the detected face, or the centre square (no detection).",
    ),
    click.option(
        "--caption",
        default=DEFAULT_CAPTION,
        show_default=True,
        help="Caption template; placeholders {token} and {class}.",
    ),
    click.option(
        "--repeats",
        type=click.IntRange(min=1, max=MAX_STEPS),
        default=None,
        help="Repeats in the folder name. Default: 1, and `plan` chooses them (one epoch).",
    ),
    click.option(
        "--reg",
        "reg_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        default=None,
        help="Regularization photos of the class, prepared into the dataset's reg/.",
    ),
    click.option("--allow-upscale", is_flag=True, help="Keep photos whose crop is smaller than --size (upscaled)."),
    click.option(
        "--skip",
        "skip",
        multiple=True,
        callback=_parse_skip,
        metavar="KINDS",
        help="Leave out photos of these kinds: no-face, multi-face, blurred, other-person (comma-separated, repeatable).",
    ),
]


def photo_options(f: Any) -> Any:
    """What `prepare` and `run` ask of the photos: the subject's words, the crop, the captions, the layout."""
    for option in reversed(_PHOTO_OPTIONS):
        f = option(f)
    return f


# `run` has a preset: the size and crop its [kohya_wrap] table names, unless given here.
_RUN_PHOTO_OPTIONS = [
    *_PHOTO_OPTIONS[:2],
    click.option(
        "--size",
        type=click.Choice(PREPARE_SIZES),
        default=None,
        help="Side of the prepared images in pixels. Default: the preset's [kohya_wrap] size.",
    ),
    click.option(
        "--crop",
        type=click.Choice(("face", "center")),
        default=None,
        help="Square around the detected face, or the centre square. Default: the preset's [kohya_wrap] crop.",
    ),
    *_PHOTO_OPTIONS[4:],
]


def run_photo_options(f: Any) -> Any:
    """photo_options for `run`: --size and --crop default to the preset's."""
    for option in reversed(_RUN_PHOTO_OPTIONS):
        f = option(f)
    return f
