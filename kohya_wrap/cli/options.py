"""Options shared by several commands."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:
    from kohya_wrap.plan import PlanRequest
    from kohya_wrap.prepare import PrepareOptions
    from kohya_wrap.prepare.records import CropMode
    from kohya_wrap.rundir import Machines

# A command's function, before click.command() turns it into a click.Command; an option decorator adds to it.
CommandFunction = Callable[..., None]
OptionDecorator = Callable[[CommandFunction], CommandFunction]
FC = TypeVar("FC", bound=CommandFunction)

# Kept here, not imported from kohya_wrap.preset, so that --help imports no stage (tests/unit/test_cli.py
# checks they agree): the most repeats a dataset folder may name, preset.MAX_STEPS.
MAX_REPEATS = 1_000_000


class Folder(click.Path):
    """A folder argument: a file in its place, or (exists=True) nothing there, is bad input (exit 1, naming the
    argument and the path), as every command's own check of its folders says it, not bad usage (exit 2)."""

    def __init__(self, *, exists: bool = False, as_text: bool = False) -> None:
        super().__init__(exists=exists, file_okay=False, path_type=None if as_text else Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            from kohya_wrap.errors import KohyaWrapError

            if isinstance(param, click.Option):
                where = param.opts[0]
            else:
                where = param.human_readable_name if param is not None else "folder"
            state = "is not a folder" if Path(value).exists() else "does not exist"
            wanted = "an existing folder" if self.exists else "a folder, not a file"
            raise KohyaWrapError(f"{where} {value} {state}", f"check the path; give {wanted}") from None


sd_scripts_option = click.option(
    "--sd-scripts",
    "sd_scripts",
    type=Folder(as_text=True),
    default=None,
    help="sd-scripts checkout to use (else $KOHYA_WRAP_SD_SCRIPTS, else the submodule third_party/sd-scripts).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def preset_option(required: bool = False) -> Callable[[FC], FC]:
    return click.option(
        "--preset", required=required, help="A shipped preset name (`kohya-wrap presets list`) or a preset file."
    )


def base_model_option(required: bool = False) -> Callable[[FC], FC]:
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
    type=Folder(),
    help="Folder holding the CLIP tokenizer (default: kohya-wrap's cache, filled by train).",
)
allow_nan_option = click.option(
    "--allow-nan", is_flag=True, help="Keep training when the loss becomes NaN or infinite."
)
allow_pickle_option = click.option(
    "--allow-pickle", is_flag=True, help="Accept a .ckpt/.pt/.bin base model (loading it runs code in it)."
)

# Several machines training one run (docs/multi-gpu.md); every machine runs the same command with its own rank.
_MACHINE_OPTIONS: list[OptionDecorator] = [
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


def machine_options(f: CommandFunction) -> CommandFunction:
    """The four machine options, handed to the command as one `machines` argument (rundir.Machines)."""

    @functools.wraps(f)
    def wrapper(
        *args: object,
        num_machines: int,
        machine_rank: int,
        main_process_ip: str | None,
        main_process_port: int,
        **kwargs: object,
    ) -> None:
        from kohya_wrap.rundir import Machines

        f(*args, machines=Machines(num_machines, machine_rank, main_process_ip, main_process_port), **kwargs)

    return _apply(_MACHINE_OPTIONS, wrapper)


def _apply(options: list[OptionDecorator], f: CommandFunction) -> CommandFunction:
    for option in reversed(options):
        f = option(f)
    return f


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


_PHOTO_OPTIONS: list[OptionDecorator] = [
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
        type=click.IntRange(min=1, max=MAX_REPEATS),
        default=None,
        help="Repeats in the folder name. Default: 1, and `plan` chooses them (one epoch).",
    ),
    click.option(
        "--reg",
        "reg_dir",
        type=Folder(exists=True),
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


@dataclass(frozen=True)
class PhotoChoices:
    """What `prepare` and `run` were told about the photos, handed to the command as one `photos` argument."""

    token: str
    class_word: str
    size: str | None  # None (`run`): the preset's [kohya_wrap] size
    crop: str | None  # None (`run`): the preset's [kohya_wrap] crop
    caption: str
    repeats: int | None
    reg_dir: Path | None
    allow_upscale: bool
    skip: frozenset[str]

    def prepare_options(
        self,
        src_dir: Path,
        dataset_dir: Path,
        *,
        skip_multiple_faces: bool = False,
        force: bool = False,
        jobs: int | None = None,
    ) -> PrepareOptions:
        """PrepareOptions for these choices; size and crop must be known (given, or the preset's)."""
        from kohya_wrap.prepare import PrepareOptions

        assert self.size is not None and self.crop is not None
        return PrepareOptions(
            src_dir=src_dir,
            dataset_dir=dataset_dir,
            token=self.token,
            class_word=self.class_word,
            size=int(self.size),
            crop=cast("CropMode", self.crop),
            caption=self.caption,
            repeats=self.repeats,
            reg_dir=self.reg_dir,
            allow_upscale=self.allow_upscale,
            skip_multiple_faces=skip_multiple_faces,
            skip=self.skip,
            force=force,
            jobs=jobs,
        )


def _gathered(kind: type[PhotoChoices] | type[PlanChoices], argument: str, f: CommandFunction) -> CommandFunction:
    """f, called with the options named as the fields of the dataclass `kind` handed over as one `argument`."""
    names = [field.name for field in dataclasses.fields(kind)]

    @functools.wraps(f)
    def wrapper(*args: object, **kwargs: Any) -> None:  # what click parsed, of the types its options give
        choices = kind(**{name: kwargs.pop(name) for name in names})
        f(*args, **{argument: choices}, **kwargs)

    return wrapper


def _photo_choices(options: list[OptionDecorator], f: CommandFunction) -> CommandFunction:
    return _apply(options, _gathered(PhotoChoices, "photos", f))


def photo_options(f: CommandFunction) -> CommandFunction:
    """What `prepare` and `run` ask of the photos: the subject's words, the crop, the captions, the layout."""
    return _photo_choices(_PHOTO_OPTIONS, f)


# `run` has a preset: the size and crop its [kohya_wrap] table names, unless given here.
_RUN_PHOTO_OPTIONS: list[OptionDecorator] = [
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


def run_photo_options(f: CommandFunction) -> CommandFunction:
    """photo_options for `run`: --size and --crop default to the preset's."""
    return _photo_choices(_RUN_PHOTO_OPTIONS, f)


@dataclass(frozen=True)
class PlanChoices:
    """What `train` and `run` were told about the run to plan, handed to the command as one `plan` argument."""

    preset: str | None
    base_model: str | None
    run_dir: Path | None  # -o
    runs_dir: Path
    overrides: tuple[str, ...]
    gpus: int | None
    machines: Machines
    tokenizer_cache_dir: Path | None
    allow_pickle: bool
    sd_scripts: str | None

    @property
    def changes_plan(self) -> bool:
        """Whether an option was given that only planning uses (a planned run trains as planned)."""
        from kohya_wrap.rundir import Machines

        return bool(
            self.overrides
            or self.gpus is not None
            or self.machines != Machines()
            or self.tokenizer_cache_dir is not None
            or self.run_dir
        )

    def request(self, dataset_dir: Path, run_dir: Path) -> PlanRequest:
        """The PlanRequest for DATASET_DIR into run_dir; preset and base model must be given."""
        from kohya_wrap.plan import PlanRequest

        assert self.preset is not None and self.base_model is not None
        return PlanRequest(
            dataset_dir=dataset_dir,
            preset=self.preset,
            base_model=self.base_model,
            run_dir=run_dir,
            overrides=self.overrides,
            gpus=self.gpus,
            tokenizer_cache_dir=self.tokenizer_cache_dir,
            sd_scripts=self.sd_scripts,
            allow_pickle=self.allow_pickle,
            machines=self.machines,
        )


def plan_choices(f: CommandFunction) -> CommandFunction:
    """Hands the options that say what to plan (added by the command's own decorators) to f as one PlanChoices."""
    return _gathered(PlanChoices, "plan", f)
