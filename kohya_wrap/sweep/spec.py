"""What a sweep trains: datasets x grid values x the train options, from the command line or a TOML file.

The command line is the user's own, so it is trusted like `--set` (names, types and choices are
checked, paths allowed). A sweep file may come from someone else: every [set] and [grid] value is
checked like an untrusted preset's (kohya_wrap/preset.py, sdscripts.arguments.check_argument), and an
error names the file, the table, the key and, for a grid, which value.

    schema = 1
    description = "learning rate x dim on two likenesses"
    datasets = ["data/alice", "data/bob"]   # relative to this file
    preset = "likeness-sd15"                # a shipped name, or a .toml beside this file
    base_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    [set]                                   # every variant, like --set
    save_every_n_steps = 250
    [grid]                                  # one variant per combination
    learning_rate = [1e-4, 5e-5]
    network_dim = [8, 16]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import msgspec

from kohya_wrap.codec import TomlValue
from kohya_wrap.errors import KohyaWrapError, PresetError
from kohya_wrap.preset import OUR_KEYS, OURS_TABLE, convert_ours, parse_override
from kohya_wrap.sdscripts.arguments import ArgumentError, argument_table, check_argument, did_you_mean, unknown_key_hint

if TYPE_CHECKING:
    from typing_extensions import Unpack

SWEEP_SCHEMA = 1
FILE_KEYS = ("schema", "description", "datasets", "preset", "base_model", "set", "grid")


class SweepError(KohyaWrapError):
    """A sweep that cannot start: a bad spec, a bad variant, a SWEEP_DIR holding another sweep."""


@dataclass(frozen=True)
class GridAxis:
    """One swept key: its values typed as the plan will hold them, and as `--set` text."""

    key: str
    values: tuple[TomlValue, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class SweepSpec:
    datasets: tuple[Path, ...]
    preset: str
    base_model: str
    grid: tuple[GridAxis, ...] = ()
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE for every variant
    tokenizer_cache_dir: Path | None = None
    sd_scripts: str | None = None
    allow_nan: bool = False
    source: str = "command line"  # or the sweep file's path
    description: str = ""


class PassedOn(TypedDict, total=False):
    """SweepSpec's fields that a sweep file does not hold: from_file passes them on as given."""

    tokenizer_cache_dir: Path | None
    sd_scripts: str | None
    allow_nan: bool


@dataclass(frozen=True)
class SweepFile:
    """A sweep file, read and checked (from_file adds what the command line gives)."""

    description: str
    datasets: tuple[Path, ...]  # resolved against the file's folder
    preset: str | None  # a shipped name, or a preset file's resolved path
    base_model: str | None
    overrides: tuple[str, ...]  # [set] as --set KEY=VALUE
    grid: tuple[GridAxis, ...]


def value_text(value: object) -> str:
    """A typed value as `--set` text that converts back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        import tomli_w

        return tomli_w.dumps({"v": value}).partition("=")[2].strip()
    return str(value) if not isinstance(value, float) else repr(value)


def check_value(key: str, value: object, *, from_text: bool, trusted: bool) -> TomlValue:
    """The value as the plan will hold it, checked as `--set` (trusted) or a preset (untrusted) checks it.

    Raises ArgumentError naming the key.
    """
    if key.startswith(f"{OURS_TABLE}."):
        key = key[len(OURS_TABLE) + 1 :]
    if key in OUR_KEYS and key not in argument_table():
        return convert_ours(key, value, from_text=from_text)
    if key not in argument_table():
        raise ArgumentError(
            key,
            f"unknown key {key!r} (neither an sd-scripts argument nor a kohya-wrap setting)",
            unknown_key_hint(key, list(argument_table()) + list(OUR_KEYS)),  # a Kohya GUI name: the real one
        )
    return check_argument(key, value, trusted=trusted, from_text=from_text)


def split_values(text: str) -> list[str]:
    """V1,V2,... split at commas outside brackets and quotes (a TOML array is one value)."""
    out: list[str] = []
    depth, quote, current = 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        current += ch
    out.append(current.strip())
    return out


def _axis(key: str, values: Sequence[TomlValue], texts: Sequence[str]) -> GridAxis:
    if key.startswith(f"{OURS_TABLE}."):
        key = key[len(OURS_TABLE) + 1 :]
    return GridAxis(key, tuple(values), tuple(texts))


def parse_grid(options: Sequence[str], overrides: Sequence[str] = ()) -> tuple[GridAxis, ...]:
    """`--grid KEY=V1,V2,...` options, each value checked like `--set KEY=V`."""
    axes: list[GridAxis] = []
    set_keys = {parse_override(o)[0] for o in overrides}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise SweepError(f"--grid {option!r}: expected KEY=V1,V2,...", "for example --grid network_dim=8,16")
        texts = split_values(raw)
        values = []
        for i, text in enumerate(texts, 1):
            if not text:
                raise SweepError(f"--grid {option}: value {i} is empty", "separate values with single commas")
            try:
                values.append(check_value(key, text, from_text=True, trusted=True))
            except ArgumentError as e:
                raise SweepError(f"--grid {option}: value {i} ({text!r}): {e.message}", e.hint) from None
        axis = _axis(key, values, texts)
        _check_axis(axis, f"--grid {option}", set_keys, axes)
        axes.append(axis)
    return tuple(axes)


def _check_axis(axis: GridAxis, where: str, set_keys: set[str], earlier: Sequence[GridAxis]) -> None:
    if any(a.key == axis.key for a in earlier):
        raise SweepError(f"{where}: {axis.key} is swept twice", "give all its values in one grid entry")
    if axis.key in set_keys:
        raise SweepError(f"{where}: {axis.key} is also fixed with set", "sweep it or fix it, not both")
    seen: list[TomlValue] = []
    for value in axis.values:
        if value in seen:
            raise SweepError(f"{where}: value {value!r} is given twice", "each value once")
        seen.append(value)


def from_command_line(
    datasets: Sequence[Path],
    *,
    preset: str,
    base_model: str,
    grid: Sequence[str] = (),
    overrides: Sequence[str] = (),
    tokenizer_cache_dir: Path | None = None,
    sd_scripts: str | None = None,
    allow_nan: bool = False,
) -> SweepSpec:
    if not datasets:
        raise SweepError("give at least one DATASET_DIR (or a sweep FILE.toml)")
    axes = parse_grid(grid, overrides)
    return SweepSpec(
        datasets=tuple(Path(d).expanduser().resolve() for d in datasets),
        preset=preset,
        base_model=base_model,
        grid=axes,
        overrides=tuple(overrides),
        tokenizer_cache_dir=tokenizer_cache_dir,
        sd_scripts=sd_scripts,
        allow_nan=allow_nan,
    )


def _where(path: Path, table: str | None, key: str | None = None) -> str:
    return f"{path}: " + (f"[{table}] " if table else "") + (key or "")


def load_file(path: Path) -> SweepFile:
    """A sweep file read and checked; a SweepError (or PresetError) naming the file, table and key."""
    from kohya_wrap.fsutil import TomlFileError, load_toml_file

    try:
        doc = load_toml_file(path, "a sweep file")
    except TomlFileError as e:
        raise SweepError(e.message, e.hint) from None
    _check_top_level(path, doc)
    datasets = doc.get("datasets", [])
    fixed = _table(path, doc, "set", "a table of KEY = VALUE")
    overrides = tuple(f"{key}={_file_value(path, 'set', key, value)[1]}" for key, value in fixed.items())
    return SweepFile(
        description=doc.get("description", ""),
        datasets=tuple((path.parent / Path(d).expanduser()).resolve() for d in datasets),
        preset=_preset_ref(path, doc["preset"]) if "preset" in doc else None,
        base_model=doc.get("base_model"),
        overrides=overrides,
        grid=_file_grid(path, _table(path, doc, "grid", "a table of KEY = [V1, V2, ...]"), set(fixed)),
    )


def _check_top_level(path: Path, doc: dict[str, object]) -> None:
    schema = doc.get("schema")
    if schema != SWEEP_SCHEMA or isinstance(schema, bool):
        raise SweepError(
            f"{_where(path, None, 'schema')}: expected {SWEEP_SCHEMA}, got {schema!r}",
            f"put `schema = {SWEEP_SCHEMA}` on the first line",
        )
    for key in doc:
        if key not in FILE_KEYS:
            raise SweepError(
                f"{_where(path, None, key)}: unknown key (a sweep file holds {', '.join(FILE_KEYS)})",
                did_you_mean(key, FILE_KEYS) or "put sd-scripts arguments in [set] or [grid]",
            )
    for key in ("description", "preset", "base_model"):
        if key in doc and (not isinstance(doc[key], str) or not doc[key]):
            raise SweepError(f"{_where(path, None, key)}: must be a non-empty string, got {doc[key]!r}")
    datasets = doc.get("datasets", [])
    if not isinstance(datasets, list) or not all(isinstance(d, str) and d for d in datasets):
        raise SweepError(f"{_where(path, None, 'datasets')}: must be a list of folder paths, got {datasets!r}")


def _table(path: Path, doc: dict[str, object], key: str, what: str) -> dict[str, object]:
    """[set] or [grid]: a TOML table (what the user wrote; any value in it is checked by check_value)."""
    try:
        return msgspec.convert(doc.get(key, {}), dict[str, object])
    except msgspec.ValidationError:
        raise SweepError(f"{_where(path, None, key)}: must be {what}") from None


def _preset_ref(path: Path, ref: str) -> str:
    # a preset file is looked up beside the sweep file, as `extends` looks beside a preset
    return str((path.parent / ref).resolve()) if ref.endswith(".toml") or "/" in ref else ref


def _file_value(path: Path, table: str, key: str, value: object, index: int | None = None) -> tuple[TomlValue, str]:
    """A [set] or [grid] value checked as an untrusted preset's, and its --set text."""
    try:
        converted = check_value(key, value, from_text=False, trusted=False)
    except ArgumentError as e:
        which = f" value {index} ({value!r})" if index is not None else ""
        raise PresetError(f"{_where(path, table, key)}{which}: {e.message}", e.hint) from None
    return converted, _round_trip(path, table, key, converted)


def _file_grid(path: Path, grid: dict[str, object], set_keys: set[str]) -> tuple[GridAxis, ...]:
    axes: list[GridAxis] = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(
                f"{_where(path, 'grid', key)}: must be a non-empty list of values, got {values!r}",
                f"for example {key} = [{value_text(values)}]" if values is not None else None,
            )
        checked = [_file_value(path, "grid", key, value, i) for i, value in enumerate(values, 1)]
        axis = _axis(key, [c for c, _ in checked], [t for _, t in checked])
        _check_axis(axis, _where(path, "grid", key), set_keys, axes)
        axes.append(axis)
    return tuple(axes)


def _round_trip(path: Path, table: str, key: str, value: TomlValue) -> str:
    text = value_text(value)
    try:
        back = check_value(key, text, from_text=True, trusted=True)
    except ArgumentError:
        back = None
    if back != value:
        raise SweepError(
            f"{_where(path, table, key)}: {value!r} cannot be passed on as --set {key}=...",
            "write it as the command line would take it",
        )
    return text


def from_file(
    path: Path,
    *,
    datasets: Sequence[Path] = (),
    preset: str | None = None,
    base_model: str | None = None,
    grid: Sequence[str] = (),
    overrides: Sequence[str] = (),
    **passed: Unpack[PassedOn],
) -> SweepSpec:
    """A sweep file; what the command line gives as well (datasets, preset, model, --set, --grid) wins or adds."""
    path = Path(path).expanduser().resolve()
    doc = load_file(path)
    chosen_datasets = tuple(Path(d).expanduser().resolve() for d in datasets) or doc.datasets
    if not chosen_datasets:
        raise SweepError(f"{path}: no datasets", 'add `datasets = ["data/ohwx"]`, or give DATASET_DIR after the file')
    chosen_preset = preset or doc.preset
    chosen_model = base_model or doc.base_model
    if not chosen_preset or not chosen_model:
        missing = "preset" if not chosen_preset else "base_model"
        option = "--" + missing.replace("_", "-")
        raise SweepError(f"{path}: no {missing}", f"add `{missing} = ...` to the file, or give {option}")
    given = {parse_override(c)[0] for c in overrides}
    file_overrides = [o for o in doc.overrides if parse_override(o)[0] not in given]
    all_overrides = tuple(file_overrides) + tuple(overrides)
    cli_axes = parse_grid(grid, all_overrides)
    cli_keys = {a.key for a in cli_axes}
    axes = tuple(a for a in doc.grid if a.key not in cli_keys) + cli_axes
    fixed_keys = {parse_override(o)[0] for o in all_overrides}
    for axis in axes:
        if axis.key in fixed_keys:
            raise SweepError(f"{path}: [grid] {axis.key} is also fixed with set", "sweep it or fix it, not both")
    return SweepSpec(
        datasets=chosen_datasets,
        preset=chosen_preset,
        base_model=chosen_model,
        grid=axes,
        overrides=all_overrides,
        source=str(path),
        description=doc.description,
        **passed,
    )
