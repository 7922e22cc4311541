"""Presets: sparse TOML files of sd-scripts argument values plus our own [kohya_wrap] table.

A preset from someone else is untrusted input: every key and value is checked against sd-scripts'
argument table (names, types, choices), keys that read or write paths, import code or upload are
refused (sdscripts.arguments.check_argument), and sd-scripts' run-time conflicts are found at load time.
The user's own `--set key=value` overrides are checked the same way but may carry paths.

    schema = 1                    # the preset format version
    extends = "likeness-sd15"     # a shipped preset name, or a sibling file "mine.toml"
    description = "..."
    [network]                     # any table name: tables only group keys for readers
    network_dim = 32
    [kohya_wrap]                  # our settings (OUR_KEYS)
    target_steps = 3000
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from kohya_wrap.codec import Record, TomlScalar, TomlValue, as_table, convert
from kohya_wrap.errors import PresetError
from kohya_wrap.fsutil import sha256_bytes
from kohya_wrap.sdscripts.arguments import (
    ArgumentError,
    argument_table,
    check_argument,
    cross_checks,
    did_you_mean,
    sample_prompt_problem,
    unknown_key_hint,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CURRENT_SCHEMA = 1
OLDEST_SCHEMA = 1
# schema N -> the function that turns an N document into an N+1 document. Applied in turn on load.
MIGRATIONS: dict[int, Callable[[dict[str, object]], dict[str, object]]] = {}

OURS_TABLE = "kohya_wrap"
# the most steps (or repeats, epochs) a [kohya_wrap] count may ask for: weeks of training on any GPU
MAX_STEPS = 1_000_000
# sd_scripts_commit: informational, written by `presets export`: the sd-scripts commit the values ran on.
TOP_LEVEL_KEYS = ("schema", "extends", "description", "sd_scripts_commit")
PRESETS_PACKAGE = "kohya_wrap.presets"


@dataclass(frozen=True)
class OurKey:
    name: str
    kind: str  # "int", "float", "str", "bool", "str_list"
    default: TomlValue
    help: str
    choices: tuple[TomlScalar, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None  # far beyond any use: a bigger value is a mistake (or a hostile preset)


OUR_KEYS: Mapping[str, OurKey] = MappingProxyType(
    {
        k.name: k
        for k in (
            OurKey("target_steps", "int", 3000, "total optimization steps plan aims for", minimum=1, maximum=MAX_STEPS),
            OurKey("min_steps", "int", 2000, "fewest total steps plan accepts", minimum=1, maximum=MAX_STEPS),
            OurKey("max_steps", "int", 5000, "most total steps plan accepts", minimum=1, maximum=MAX_STEPS),
            OurKey(
                "preferred_epochs",
                "int",
                10,
                "among equally near totals, plan picks about this many epochs",
                minimum=1,
                maximum=MAX_STEPS,
            ),
            OurKey("max_repeats", "int", 1000, "the most repeats plan gives a folder", minimum=1, maximum=MAX_STEPS),
            OurKey(
                "keep_repeats",
                "bool",
                False,
                "plan keeps the repeats of the dataset's folder names (a Kohya GUI folder such as "
                "10_ohwx woman) and chooses only the epochs",
            ),
            OurKey(
                "single_epoch",
                "bool",
                True,
                "plan puts every step in one epoch (repeats instead of epochs), so a stopped run resumes correctly",
            ),
            OurKey(
                "stop_early",
                "bool",
                False,
                "train stops once live scoring finds that more training can only make it worse "
                "(samples copy the photos, or the likeness stopped improving past min_steps)",
            ),
            OurKey(
                "size",
                "int",
                512,
                "prepare: the side of the square training images, in pixels",
                minimum=64,
                maximum=4096,
            ),
            OurKey("crop", "str", "face", "prepare: how a photo is cropped to a square", choices=("face", "center")),
            OurKey(
                "auto_mixed_precision",
                "bool",
                False,
                "when mixed_precision is not set: bf16 on GPUs that support it, else fp16; no on a CPU",
            ),
            OurKey(
                "prompts",
                "str_list",
                [],
                "sample prompts; {subject} is the class tokens ('ohwx man'), "
                "{token} the trigger word, {class} the class word",
            ),
            OurKey("negative_prompt", "str", "", "negative prompt for every sample"),
            OurKey("sample_steps", "int", 28, "sampling steps per sample image", minimum=1, maximum=1000),
            OurKey(
                "sample_scale", "float", 7.0, "classifier-free guidance scale of the samples", minimum=0, maximum=100
            ),
            OurKey(
                "sample_seed",
                "int",
                1234,
                "seed of the first sample prompt; the next ones count up",
                minimum=0,
                maximum=2**32 - 1000,
            ),
            OurKey(
                "sample_size",
                "int",
                0,
                "side of the sample images in pixels; 0: the training resolution",
                minimum=0,
                maximum=4096,
            ),
        )
    }
)


@dataclass(frozen=True)
class Setting:
    value: TomlValue
    source: str  # "default", "preset:<name>", "--set"
    file: str | None = None  # the file it was read from
    table: str | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    files: tuple[Path, ...]  # the chain, the named preset first, the root of its `extends` last
    description: str
    schema: int
    values: Mapping[str, Setting]  # sd-scripts arguments the chain (and --set) set
    ours: Mapping[str, Setting]  # every OUR_KEYS entry, defaults included
    sha256: str  # of the chain's resolved values, before --set

    def value(self, key: str, default: TomlValue | None = None) -> TomlValue | None:
        if key in self.values:
            return self.values[key].value
        if key in self.ours:
            return self.ours[key].value
        return default

    @property
    def settings(self) -> OurSettings:
        """The [kohya_wrap] settings, typed (convert_ours checked each value against OUR_KEYS)."""
        return convert({k: s.value for k, s in self.ours.items()}, OurSettings, source=f"preset {self.name}")


class OurSettings(Record, frozen=True):
    """The [kohya_wrap] table with every default filled in: a field per OUR_KEYS entry."""

    target_steps: int
    min_steps: int
    max_steps: int
    preferred_epochs: int
    max_repeats: int
    keep_repeats: bool
    single_epoch: bool
    stop_early: bool
    size: int
    crop: Literal["face", "center"]  # OUR_KEYS' choices
    auto_mixed_precision: bool
    prompts: tuple[str, ...]
    negative_prompt: str
    sample_steps: int
    sample_scale: float
    sample_seed: int
    sample_size: int


class SettingView(Record, frozen=True):
    """A value as `presets show --json` prints it, and where it came from."""

    value: TomlValue | None  # None: an sd-scripts argument left at its default of None
    source: str


class PresetView(Record, frozen=True):
    """A resolved preset as `presets show --json` prints it."""

    name: str
    files: tuple[str, ...]
    description: str
    schema: int
    sha256: str
    values: dict[str, SettingView]
    ours: dict[str, SettingView]


def preset_view(preset: Preset, values: Iterable[tuple[str, SettingView]] | None = None) -> PresetView:
    """`preset` as a record; values: the sd-scripts values to show (all_values'), else the ones it sets."""
    shown = values if values is not None else ((k, view_of(s)) for k, s in preset.values.items())
    return PresetView(
        name=preset.name,
        files=tuple(str(f) for f in preset.files),
        description=preset.description,
        schema=preset.schema,
        sha256=preset.sha256,
        values=dict(shown),
        ours={k: view_of(s) for k, s in preset.ours.items()},
    )


def view_of(setting: Setting) -> SettingView:
    return SettingView(value=setting.value, source=setting.source)


def shipped_dir() -> Path:
    return Path(str(resources.files(PRESETS_PACKAGE)))


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.toml") if not p.name.startswith("_"))


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def find(ref: str | Path) -> Path:
    """A preset name (shipped) or a path to a TOML file given by the user."""
    ref_s = str(ref)
    if _is_path(ref_s):
        path = Path(ref_s).expanduser()
        if not path.is_file():
            if path.exists():  # a folder, a FIFO (which would block the read), a device
                raise PresetError(f"preset file {path} is not a regular file", "give a TOML file")
            raise PresetError(f"preset file {path} does not exist")
        return path.resolve()
    path = shipped_dir() / f"{ref_s}.toml"
    if not path.is_file():
        hint = did_you_mean(ref_s, shipped_names())
        raise PresetError(
            f"no preset named {ref_s!r}", (hint + " " if hint else "") + "presets: " + ", ".join(shipped_names())
        )
    return path


def _where(path: Path, table: str | None, key: str | None) -> str:
    where = str(path)
    if table:
        where += f": [{table}]"
    if key:
        where += f" {key}"
    return where


def _read(path: Path) -> dict[str, object]:
    from kohya_wrap.fsutil import TomlFileError, load_toml_file

    try:
        doc = load_toml_file(path, "a preset")
    except TomlFileError as e:
        raise PresetError(e.message, e.hint) from None
    return migrate(doc, path)


def migrate(doc: dict[str, object], path: Path) -> dict[str, object]:
    """Bring a document of an older schema to CURRENT_SCHEMA, one step at a time."""
    schema = doc.get("schema")
    if schema is None:
        raise PresetError(f"{path}: no `schema` number", f"add `schema = {CURRENT_SCHEMA}` as the first line")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise PresetError(f"{_where(path, None, 'schema')}: must be an integer, got {schema!r}")
    if schema > CURRENT_SCHEMA:
        raise PresetError(
            f"{path}: preset uses schema {schema}; this kohya-wrap understands up to {CURRENT_SCHEMA}",
            "upgrade kohya-wrap (pip install --upgrade kohya-wrap)",
        )
    if schema < OLDEST_SCHEMA:
        raise PresetError(
            f"{path}: preset uses schema {schema}, which kohya-wrap no longer reads (it reads {OLDEST_SCHEMA}-{CURRENT_SCHEMA})",
            f"rewrite it for schema {CURRENT_SCHEMA}: compare it with `kohya-wrap presets show likeness-sd15`",
        )
    while schema < CURRENT_SCHEMA:
        doc = MIGRATIONS[schema](dict(doc))
        schema += 1
        doc["schema"] = schema
    return doc


def _our_typed(kind: str, value: object) -> TomlValue | None:
    """`value` as a [kohya_wrap] value of `kind` (a float widened from an int), or None when it is none:
    a bool is never an int or a float here."""
    if isinstance(value, bool):
        return value if kind == "bool" else None
    if kind == "int" and isinstance(value, int):
        return value
    if kind == "float" and isinstance(value, (int, float)):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "str_list" and isinstance(value, list) and all(isinstance(x, str) for x in value):
        items: list[TomlScalar] = [str(x) for x in value]
        return items
    return None


def _unquote_hint(key: str, kind: str, value: object) -> str | None:
    """For a TOML string that reads as the setting's type ("2000", "true"): write it without the quotes."""
    if not isinstance(value, str) or kind in ("str", "str_list"):
        return None
    try:
        typed = _our_typed(kind, _our_text(kind, value, ArgumentError(key, "")))
    except ArgumentError:
        return None
    return None if typed is None else f"write it without quotes: {key} = {value.strip()}"


def _our_text(kind: str, value: object, bad: ArgumentError) -> object:
    """A --set value of kohya-wrap's own as TOML reads it (a string as it is; one string is a list of one)."""
    text = str(value).strip()
    if kind == "str":
        return str(value)
    if kind == "str_list" and not text.startswith("["):
        return [str(value)]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        raise bad from None


def convert_ours(key: str, value: object, *, from_text: bool = False) -> TomlValue:
    spec = OUR_KEYS[key]
    bad = ArgumentError(key, f"{key} must be {_our_type_name(spec.kind)}, got {value!r}")
    if from_text:
        value = _our_text(spec.kind, value, bad)
    typed = _our_typed(spec.kind, value)
    if typed is None:
        raise ArgumentError(key, bad.message, _unquote_hint(key, spec.kind, value))
    if spec.choices is not None and typed not in spec.choices:
        raise ArgumentError(key, f"{key} = {typed!r} is not one of " + ", ".join(map(repr, spec.choices)))
    if isinstance(typed, (int, float)):
        _check_our_range(key, spec, typed)
    if key == "prompts" and isinstance(typed, list):
        for template in typed:
            _check_prompt_template(str(template))
    elif key == "negative_prompt" and isinstance(typed, str):
        problem = sample_prompt_problem(typed, negative=True)
        if problem:
            raise ArgumentError(key, f"negative_prompt: {problem}")
    return typed


def _check_our_range(key: str, spec: OurKey, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise ArgumentError(key, f"{key} must be at least {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ArgumentError(key, f"{key} = {value!r} is out of range: it must be at most {spec.maximum:g}")


# The words plan puts into a prompt template; validate fills them with a stand-in to check what plan checks.
PROMPT_WORDS = ("subject", "token", "class")


def _check_prompt_template(template: str) -> None:
    """plan's checks of one [kohya_wrap] prompts entry, made when the preset is read (so `presets validate` agrees)."""
    try:
        text = template.format(**{w: "x" for w in PROMPT_WORDS})
    except (KeyError, IndexError, ValueError) as e:
        raise ArgumentError(
            "prompts", f"prompts: {template!r} has an unknown placeholder {e}", "use {subject}, {token} or {class}"
        ) from None
    problem = sample_prompt_problem(text)
    if problem:
        raise ArgumentError("prompts", f"prompts: {problem}")


def _our_type_name(kind: str) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "str_list": "a list of strings",
    }[kind]


class PresetErrors(PresetError):
    """Every problem found in a preset (and its --set overrides), not only the first; `problems` lists them."""

    def __init__(self, problems: Sequence[PresetError]) -> None:
        self.problems = tuple(problems)
        if len(problems) == 1:
            super().__init__(problems[0].message, problems[0].hint)
        else:
            lines = [f"{len(problems)} problems:"] + [
                f"  - {p.message}" + (f" ({p.hint})" if p.hint else "") for p in problems
            ]
            from_files = any(not p.message.startswith("--set ") for p in problems)
            validate = "; `kohya-wrap presets validate FILE` lists them all" if from_files else ""
            super().__init__("\n".join(lines), f"fix each one{validate}")


def _layer(
    path: Path, doc: dict[str, object], source: str, errors: list[PresetError]
) -> tuple[dict[str, Setting], dict[str, Setting]]:
    """One file's settings, every key validated; each problem (naming the file, table and key) goes to `errors`."""
    values: dict[str, Setting] = {}
    ours: dict[str, Setting] = {}
    for key in ("description", "sd_scripts_commit"):
        if key in doc and not isinstance(doc[key], str):
            errors.append(PresetError(f"{_where(path, None, key)}: must be a string, got {doc[key]!r}"))
    for key, item in doc.items():
        if key in TOP_LEVEL_KEYS:
            continue
        table = as_table(item)
        if table is None:
            hint = "put sd-scripts arguments in a table such as [training]"
            if key in OUR_KEYS:
                hint = f"put it in the [{OURS_TABLE}] table"
            elif key not in argument_table():
                hint = unknown_key_hint(key, list(argument_table()) + list(TOP_LEVEL_KEYS)) or hint
            errors.append(
                PresetError(
                    f"{_where(path, None, key)}: unknown top-level key (top level holds only "
                    f"{', '.join(TOP_LEVEL_KEYS)} and tables)",
                    hint,
                )
            )
            continue
        for sub, value in table.items():
            where = _where(path, key, sub)
            try:
                if key == OURS_TABLE:
                    if sub not in OUR_KEYS:
                        raise ArgumentError(sub, f"unknown [{OURS_TABLE}] key {sub!r}", did_you_mean(sub, OUR_KEYS))
                    ours[sub] = Setting(convert_ours(sub, value), source, str(path), key)
                    continue
                if sub in OUR_KEYS and sub not in argument_table():
                    raise ArgumentError(sub, f"{sub!r} is a kohya-wrap setting", f"move it to the [{OURS_TABLE}] table")
                if as_table(value) is not None:
                    raise ArgumentError(sub, "tables nest one level only (sd-scripts flattens one level)")
                converted = check_argument(sub, value, trusted=False)
            except ArgumentError as e:
                errors.append(PresetError(f"{where}: {e.message}", e.hint))
                continue
            if sub in values:
                errors.append(PresetError(f"{where}: also set in [{values[sub].table}] of the same file", "keep one"))
                continue
            values[sub] = Setting(converted, source, str(path), key)
    return values, ours


def _chain(start: Path) -> list[tuple[Path, dict[str, object]]]:
    chain: list[tuple[Path, dict[str, object]]] = []
    seen: list[Path] = []
    path = start
    while True:
        if path in seen:
            cycle = " -> ".join(p.name for p in seen + [path])
            raise PresetError(f"{start}: `extends` forms a cycle: {cycle}", "make one preset the root (no extends)")
        seen.append(path)
        doc = _read(path)
        chain.append((path, doc))
        parent = doc.get("extends")
        if parent is None:
            return chain
        if not isinstance(parent, str) or not parent:
            raise PresetError(f"{_where(path, None, 'extends')}: must be a preset name, got {parent!r}")
        if "/" in parent or "\\" in parent or "\0" in parent or parent in (".", ".."):
            # an untrusted preset must not make us read any file: only siblings and shipped presets
            raise PresetError(
                f"{_where(path, None, 'extends')}: {parent!r} must be a file in the same folder (NAME.toml, "
                "without a path) or a shipped preset name",
                "presets: " + ", ".join(shipped_names()),
            )
        if parent.endswith(".toml"):
            folder = path.parent
            path = folder / parent
            if not path.is_file():
                what = "is not a regular file" if path.exists() else "does not exist"
                raise PresetError(f"{_where(chain[-1][0], None, 'extends')}: {path} {what}")
            if path.resolve().parent != folder.resolve():
                raise PresetError(
                    f"{_where(chain[-1][0], None, 'extends')}: {parent!r} is a link out of the preset's folder; "
                    "extends must name a file in the same folder"
                )
        else:
            try:
                path = find(parent)
            except PresetError as e:
                raise PresetError(f"{_where(chain[-1][0], None, 'extends')}: {e.message}", e.hint) from None


def _name_of(path: Path) -> str:
    return path.stem


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise PresetError(f"--set {text!r}: expected key=value", "for example --set network_dim=32")
    if key.startswith(f"{OURS_TABLE}."):
        key = key[len(OURS_TABLE) + 1 :]
    return key, value


def load_preset(ref: str | Path, overrides: Sequence[str] = ()) -> Preset:
    """The preset `ref` (a shipped name or a file) resolved through its `extends` chain, then --set overrides."""
    chain = _chain(find(ref))
    values: dict[str, Setting] = {}
    ours: dict[str, Setting] = {k: Setting(spec.default, "default") for k, spec in OUR_KEYS.items()}
    errors: list[PresetError] = []
    for path, doc in reversed(chain):  # the root first, so children win
        layer_values, layer_ours = _layer(path, doc, f"preset:{_name_of(path)}", errors)
        values.update(layer_values)
        ours.update(layer_ours)
    name = _name_of(chain[0][0])
    canonical = json.dumps(
        {
            "values": {k: s.value for k, s in sorted(values.items())},
            "ours": {k: s.value for k, s in sorted(ours.items())},
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    sha = sha256_bytes(canonical.encode("utf-8"))
    for text in overrides:
        _apply_override(text, values, ours, errors)
    descriptions = [doc.get("description") for _, doc in chain]
    description = next((d for d in descriptions if isinstance(d, str)), "") or ""
    preset = Preset(
        name=name,
        files=tuple(p for p, _ in chain),
        description=description,
        schema=CURRENT_SCHEMA,
        values=MappingProxyType(values),
        ours=MappingProxyType(ours),
        sha256=sha,
    )
    errors.extend(_check(preset))
    if errors:
        raise PresetErrors(errors)
    return preset


def _apply_override(text: str, values: dict[str, Setting], ours: dict[str, Setting], errors: list[PresetError]) -> None:
    """One --set KEY=VALUE into the values (or kohya-wrap's own settings); a bad one joins the errors."""
    try:
        key, raw = parse_override(text)
    except PresetError as e:
        errors.append(e)
        return
    try:
        if key in OUR_KEYS and key not in argument_table():
            ours[key] = Setting(convert_ours(key, raw, from_text=True), "--set")
            return
        converted = check_argument(key, raw, trusted=True, from_text=True)
    except ArgumentError as e:
        hint = e.hint
        if key not in argument_table() and key not in OUR_KEYS:
            hint = unknown_key_hint(key, list(argument_table()) + list(OUR_KEYS))
        errors.append(PresetError(f"--set {text}: {e.message}", hint))
        return
    values[key] = Setting(converted, "--set")


def _check(preset: Preset) -> list[PresetError]:
    """The conflicts between values, each naming where its first key was set. Packages are plan's check."""
    out: list[PresetError] = []
    o = preset.settings
    if not o.min_steps <= o.target_steps <= o.max_steps:
        out.append(
            PresetError(
                f"{_steps_origin(preset)}: [{OURS_TABLE}] needs min_steps <= target_steps <= max_steps, "
                f"got {o.min_steps} <= {o.target_steps} <= {o.max_steps}",
                "set the other step counts to match, e.g. --set min_steps=N (or in the preset's [kohya_wrap] table)",
            )
        )
    problems = cross_checks({k: s.value for k, s in preset.values.items()}, packages=False)
    for problem in (p for p in problems if p.severity == "error"):
        key = problem.keys[0]
        setting = preset.values.get(key)
        where = (
            _where(Path(setting.file), setting.table, key)
            if setting and setting.file
            else ("--set" if setting else f"preset {preset.name}")
        )
        out.append(PresetError(f"{where}: {problem.message}", problem.hint))
    return out


def _steps_origin(preset: Preset) -> str:
    """Where the conflicting step counts were set: the --set ones first (they changed what the preset had), else the
    file of the first one a preset set."""
    keys = ("target_steps", "min_steps", "max_steps")
    given = [f"--set {k}={preset.ours[k].value}" for k in keys if preset.ours[k].source == "--set"]
    if given:
        return ", ".join(given)
    return next((f for f in (preset.ours[k].file for k in keys) if f), f"preset {preset.name}")


def warnings_of(preset: Preset, extra: Mapping[str, TomlValue] | None = None) -> list[str]:
    values = {k: s.value for k, s in preset.values.items()}
    values.update(extra or {})
    return [p.message for p in cross_checks(values) if p.severity == "warning"]


@dataclass(frozen=True)
class Difference:
    key: str
    a: Setting | None
    b: Setting | None


def diff(a: Preset, b: Preset) -> list[Difference]:
    out = []
    for table_a, table_b in ((a.values, b.values), (a.ours, b.ours)):
        for key in sorted(set(table_a) | set(table_b)):
            sa, sb = table_a.get(key), table_b.get(key)
            if (sa.value if sa else None) != (sb.value if sb else None):
                out.append(Difference(key, sa, sb))
    return out


def all_values(preset: Preset) -> list[tuple[str, SettingView]]:
    """Every sd-scripts argument: set by the preset, or sd-scripts' own default."""
    return [
        (k, view_of(preset.values[k]) if k in preset.values else SettingView(value=a.default, source="default"))
        for k, a in sorted(argument_table().items())
    ]


# Sources of a value the user chose (a preset file or --set); "plan" and "default" are decided per run and machine.
CHOSEN_SOURCES = ("preset:", "--set")


def is_chosen(source: str) -> bool:
    return source.startswith(CHOSEN_SOURCES)


def export_text(
    values: Mapping[str, TomlValue | None],
    ours: Mapping[str, TomlValue],
    *,
    name: str,
    comment_lines: Iterable[str],
    sources: Mapping[str, str] | None = None,
    sd_scripts_commit: str | None = None,
) -> str:
    """A shareable preset (schema CURRENT_SCHEMA) from resolved values: whatever a preset may not carry is left out.

    sources: each value's source (plan.json); only what the user chose is exported, so the automatic
    choices (mixed_precision from this machine's GPU, the resolution from [kohya_wrap] size, the
    paths of this run) are made again wherever the preset is used.
    """
    import tomli_w

    kept: dict[str, dict[str, TomlValue]] = {}
    dropped: list[str] = []
    decided: list[str] = []
    for key, value in sorted(values.items()):
        if value is None:
            continue
        if sources is not None and not is_chosen(sources.get(key, "plan")):
            if sources.get(key, "plan") != "default":
                decided.append(key)
            continue
        try:
            check_argument(key, value, trusted=False)
        except ArgumentError:
            dropped.append(key)
            continue
        kept.setdefault(argument_table()[key].category.replace("/", "_"), {})[key] = value
    doc: dict[str, object] = {"schema": CURRENT_SCHEMA, "description": f"exported from run {name}"}
    if sd_scripts_commit:
        doc["sd_scripts_commit"] = sd_scripts_commit
    doc.update(kept)
    doc[OURS_TABLE] = {k: v for k, v in ours.items() if k in OUR_KEYS}
    header = list(comment_lines)
    if decided:
        header.append("decided again by each plan (machine, dataset, run directory): " + ", ".join(decided))
    if dropped:
        header.append("left out (paths, code, uploads or planned per run): " + ", ".join(dropped))
    return "".join(f"# {line}\n" for line in header) + "\n" + tomli_w.dumps(doc)
