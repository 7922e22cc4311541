"""The arguments of sd-scripts v0.10.1 train_network.py: names, types, choices, defaults, and which are unsafe.

The table (data/train_network_args.json) was produced by running the real `add_argument` calls. sd-scripts
applies no type conversion and no choices check to `--config_file` values (library/train_util.py: read_config_from_file; docs/sd-scripts.md#no-type-conversion-of-config-values), so every value we
write goes through `convert()` first, and the checks sd-scripts makes only at run time (docs/sd-scripts.md#checks-made-only-at-run-time) are
made by `cross_checks()` before anything launches.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from kohya_wrap.codec import TomlScalar, TomlValue
from kohya_wrap.sdscripts.aliases import alias_hint
from kohya_wrap.sdscripts.ranges import range_of

# what code outside sdscripts/ may use: checking a preset's or a sweep's keys and values
__all__ = [
    "ArgumentError",
    "argument_table",
    "check_argument",
    "cross_checks",
    "did_you_mean",
    "package_problems",
    "sample_prompt_problem",
    "unknown_key_hint",
]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# The network modules shipped in v0.10.1 that train SD1.x: networks/lora_flux.py, lora_sd3.py and the
# other architecture-specific modules build networks for models train_network.py does not load.
NETWORK_MODULE_ALLOWLIST = ("networks.lora", "networks.dylora", "networks.lora_fa", "networks.oft")

# library/train_util.py: get_optimizer, compared lower-cased. Anything else without a dot is looked up in torch.optim.
KNOWN_OPTIMIZERS = (
    "AdamW",
    "AdamW8bit",
    "PagedAdamW",
    "PagedAdamW8bit",
    "PagedAdamW32bit",
    "Lion",
    "Lion8bit",
    "PagedLion8bit",
    "SGDNesterov",
    "SGDNesterov8bit",
    "DAdaptation",
    "DAdaptAdamPreprint",
    "DAdaptAdaGrad",
    "DAdaptAdam",
    "DAdaptAdan",
    "DAdaptAdanIP",
    "DAdaptLion",
    "DAdaptSGD",
    "Prodigy",
    "Adafactor",
    "RAdamScheduleFree",
    "AdamWScheduleFree",
    "SGDScheduleFree",
)
# TU:get_optimizer's fallback: a name without a dot is looked up case-sensitively in torch.optim. These are
# the torch.optim classes that train with (params, lr=...) alone (LBFGS needs a closure, SparseAdam sparse grads).
TORCH_OPTIMIZERS = ("Adadelta", "Adagrad", "Adam", "Adamax", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop", "SGD")
# TU:get_optimizer imports these modules for these optimizer names (lower-cased): (module, pip package).
_BNB = ("bitsandbytes", "bitsandbytes")
OPTIMIZER_PACKAGES: Mapping[str, tuple[str, str]] = {
    "lion": ("lion_pytorch", "lion-pytorch"),
    "adamw8bit": _BNB,
    "sgdnesterov8bit": _BNB,
    "lion8bit": _BNB,
    "pagedadamw8bit": _BNB,
    "pagedlion8bit": _BNB,
    "pagedadamw": _BNB,
    "pagedadamw32bit": _BNB,
    "prodigy": ("prodigyopt", "prodigyopt"),
    **{n.lower(): ("dadaptation", "dadaptation") for n in KNOWN_OPTIMIZERS if n.startswith("DAdapt")},
    **{n.lower(): ("schedulefree", "schedulefree") for n in KNOWN_OPTIMIZERS if n.endswith("ScheduleFree")},
}
# library/train_util.py: get_scheduler_fix: transformers' SchedulerType (4.54.1), diffusers' piecewise_constant, "adafactor:<lr>".
KNOWN_LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "piecewise_constant",
)
_SCHEDULERS_WITHOUT_WARMUP = ("constant",)
# The largest image side we let through: SD1.5 trains at 512-1024, and a 4096 px latent already needs
# tens of GB of VRAM; a larger one only fails late, in the trainer.
MAX_RESOLUTION = 4096
# The largest integer any argument without a range of its own may take (a C int): 2**63-1 would
# overflow numpy and torch, and no step count, batch or bucket size comes near it.
MAX_INT = 2**31 - 1

# Secrets never belong in a file we write (plan.json, config.toml) nor in a shared preset.
SECRET_KEYS = {
    "huggingface_token": "the Hugging Face libraries read HF_TOKEN from the environment",
    "wandb_api_key": "wandb reads WANDB_API_KEY from the environment",
}

# Set by `plan` from the dataset, the run directory and the trusted command line; nobody else sets them.
MANAGED_KEYS = {
    "pretrained_model_name_or_path": "the base model comes from --base-model",
    "tokenizer_cache_dir": "the tokenizer cache comes from --tokenizer-cache-dir",
    "output_dir": "the output goes to RUN_DIR/output (-o RUN_DIR)",
    "dataset_config": "plan writes RUN_DIR/dataset.toml from the dataset folder",
    "config_file": "plan writes RUN_DIR/config.toml",
    "output_config": "it makes sd-scripts write a config and exit without training",
    "train_data_dir": "the dataset comes from DATASET_DIR (written to dataset.toml)",
    "reg_data_dir": "regularization images come from DATASET_DIR/reg (written to dataset.toml)",
    "in_json": "fine-tuning metadata datasets are not used for LoRA likeness training",
    "dataset_repeats": "repeats are chosen by plan and written per subset to dataset.toml",
    "caption_extension": "the prepared captions are .txt files (written to dataset.toml)",
    "caption_extention": "a misspelt alias of caption_extension; captions are .txt (dataset.toml)",
    "sample_prompts": "plan writes RUN_DIR/sample_prompts.txt from the [kohya_wrap] prompts",
    "debug_dataset": "it shows the dataset in a window and never ends on Linux",
}
# Values sd-scripts puts into a file name inside the run directory (train_network.py: `output_name` +
# the step suffix under output_dir; library/train_util.py: `log_prefix` + the time stamp under logging_dir).
# A path there would write outside the run directory, so each must be a plain name, whoever gives it.
FILE_NAME_KEYS = ("output_name", "log_prefix")
_PLAIN_NAME_MAX = 128  # with sd-scripts' suffixes ("-step00001000.safetensors") well under a 255-byte file name


def plain_name_problem(value: str) -> str | None:
    """Why `value` is not a plain file name (no folder, no hidden or relative name), or None."""
    if not value:
        return "is empty"
    if "/" in value or "\\" in value:
        return "holds a path separator"
    if value.startswith("."):
        return "starts with '.'"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "holds a control character"
    if len(value.encode("utf-8")) > _PLAIN_NAME_MAX:
        return f"is longer than {_PLAIN_NAME_MAX} bytes"
    return None


# Steps are planned from the dataset ([kohya_wrap] target_steps); the user's command line may pin them.
STEP_KEYS = ("max_train_steps", "max_train_epochs")

# Allowed from the user's own command line (--set), refused in a preset file: each reads or writes a
# path, imports code, or sends data somewhere (docs/sd-scripts.md#trust-rules).
PRESET_FORBIDDEN = {
    "vae": "it names a file to load (a non-.safetensors VAE is unpickled)",
    "network_weights": "it names a file to load (a non-.safetensors file is unpickled)",
    "base_weights": "it names files to load (non-.safetensors files are unpickled)",
    "resume": "it names a state folder to load",
    "dataset_class": "it imports and runs a Python class",
    "metadata_thumbnail": "it reads any file and embeds it into every saved LoRA",
    "console_log_file": "it truncates and writes any file",
    "logging_dir": "it writes to a folder outside the run directory",
    "log_with": "wandb uploads metrics, config and samples",
    "log_tracker_config": "it reads a file",
    "log_tracker_name": "it names a tracker run (wandb uploads)",
    "wandb_run_name": "it configures a wandb upload",
    "log_config": "it sends the whole config to the tracker",
    "conditioning_data_dir": "it reads a folder",
    "offload_optimizer_nvme_path": "it writes to a folder",
    "offload_param_nvme_path": "it writes to a folder",
    "huggingface_repo_id": "it uploads every checkpoint to the Hugging Face Hub",
    "huggingface_repo_type": "it configures a Hugging Face upload",
    "huggingface_path_in_repo": "it configures a Hugging Face upload",
    "huggingface_repo_visibility": "it configures a Hugging Face upload",
    "save_state_to_huggingface": "it uploads training states to the Hugging Face Hub",
    "resume_from_huggingface": "it downloads a state from the Hugging Face Hub",
    "async_upload": "it configures a Hugging Face upload",
}


@dataclass(frozen=True)
class Argument:
    name: str  # the dest: the key in config.toml, the option is --name
    kind: str  # "str", "int", "float", "bool", "int_or_float", "path"
    is_list: bool  # nargs="*": a TOML array
    default: TomlValue | None
    choices: tuple[TomlScalar | None, ...] | None
    help: str
    category: str
    dataset_key: str | None  # the dataset.toml key this argument is the fallback for
    security: tuple[str, ...]


class ArgumentError(ValueError):
    """A key or value sd-scripts would not accept (or we do not let through). `key` names it."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Problem:
    """A cross-argument check that failed: `keys` are the arguments involved, the first is the one to change."""

    keys: tuple[str, ...]
    message: str
    hint: str | None = None
    severity: str = "error"  # "error" stops the plan, "warning" is reported


_KIND = {"str": "str", "bool": "bool", "int": "int", "float": "float", "pathlib.Path": "path"}


@lru_cache(maxsize=1)
def table() -> Mapping[str, Argument]:
    raw = json.loads(
        resources.files("kohya_wrap.sdscripts").joinpath("data/train_network_args.json").read_text("utf-8")
    )
    out: dict[str, Argument] = {}
    for a in raw["arguments"]:
        kind = "int_or_float" if a["type"].startswith("int_or_float") else _KIND[a["type"]]
        out[a["dest"]] = Argument(
            name=a["dest"],
            kind=kind,
            is_list=a["nargs"] == "*",
            default=a["default"],
            choices=tuple(a["choices"]) if a["choices"] is not None else None,
            help=a["help"] or "",
            category=a["category"],
            dataset_key=a["dataset_config_fallback_for"],
            security=tuple(a["security"]),
        )
    return out


def lookup(key: str) -> Argument:
    """The argument named `key`, or an ArgumentError with a "did you mean"."""
    args = table()
    if key in args:
        return args[key]
    raise ArgumentError(key, f"unknown sd-scripts argument {key!r}", unknown_key_hint(key, args))


def unknown_key_hint(key: str, names: Iterable[str]) -> str | None:
    """For a key that is not an argument: the real name of a Kohya GUI alias, else a "did you mean"."""
    return alias_hint(key) or did_you_mean(key, names)


def did_you_mean(key: str, names: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(key.replace("-", "_").lower(), list(names), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


def _type_name(kind: str) -> str:
    return {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "int_or_float": "an integer step count or a fraction below 1",
        "path": "a path",
    }[kind]


def _convert_scalar(arg: Argument, value: object, from_text: bool) -> TomlScalar:
    if from_text:
        return _convert_text(arg, value)
    kind = arg.kind
    if isinstance(value, bool):
        # a TOML boolean is a bool only; for int arguments, Python's bool is an int but never one of theirs
        if kind == "bool":
            return value
    elif isinstance(value, str):
        if kind in ("str", "path"):
            return value
        if kind == "int_or_float":
            return int_or_float(arg.name, value)
    elif isinstance(value, int):
        if kind in ("int", "float") or (kind == "int_or_float" and value >= 0):
            return float(value) if kind == "float" else value
    elif isinstance(value, float) and (kind == "float" or (kind == "int_or_float" and 0 <= value < 1)):
        return value
    raise _bad(arg, value, _unquote_hint(arg, value))


def _unquote_hint(arg: Argument, value: object) -> str | None:
    """For a TOML string that reads as the argument's type ("2000", "true"): write it without the quotes."""
    if not isinstance(value, str):
        return None
    try:
        typed = _convert_text(arg, value)
    except ArgumentError:
        return None
    text = str(typed).lower() if isinstance(typed, bool) else value.strip()
    return f"write it without quotes: {arg.name} = {text}"


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _bad(arg: Argument, value: object, hint: str | None = None) -> ArgumentError:
    return ArgumentError(arg.name, f"{arg.name} must be {_type_name(arg.kind)}, got {value!r}", hint)


def _convert_text(arg: Argument, value: object) -> str | bool | int | float:
    """The argparse conversion, as if the value were given on sd-scripts' own command line."""
    kind, text = arg.kind, str(value).strip()
    if kind in ("str", "path"):
        return str(value)
    if kind == "bool" and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    if kind == "int_or_float":
        return int_or_float(arg.name, text)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        pass
    raise _bad(arg, value)


def int_or_float(name: str, text: str) -> int | float:
    """library/train_util.py: add_optimizer_arguments (its int_or_float): "N%" -> N/100, >= 1 -> an int step count, < 1 -> a ratio."""
    bad = ArgumentError(name, f"{name} must be {_type_name('int_or_float')} (or 'N%'), got {text!r}")
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        f = float(text)
        if f >= 1:
            return int(text)
        return f
    except ValueError:
        raise bad from None


def convert(key: str, value: object, *, from_text: bool = False) -> TomlValue:
    """`value` as the exact Python type sd-scripts' argparse would have produced for `key`.

    from_text: the value is a command-line string (--set), converted the way argparse converts it;
    otherwise it is a TOML value, which must already have the right type (ints widen to floats).
    """
    arg = lookup(key)
    if value is None:
        raise ArgumentError(key, f"{key} cannot be empty")
    if arg.is_list:
        if from_text:
            text = str(value).strip()
            if text.startswith("["):
                try:
                    items: list[object] = tomllib.loads(f"v = {text}")["v"]  # an array: the text starts with "["
                except (tomllib.TOMLDecodeError, RecursionError):
                    raise ArgumentError(key, f"{key}: {text!r} is not a TOML array") from None
                out_list = [_convert_scalar(arg, v, from_text=isinstance(v, str)) for v in items]
            else:
                out_list = [_convert_scalar(arg, text, from_text=True)]
            _check_value(key, out_list)
            return out_list
        if not isinstance(value, list):
            value = [value]
        out_list = [_convert_scalar(arg, v, from_text=False) for v in value]
        _check_value(key, out_list)
        return out_list
    if isinstance(value, list):
        raise ArgumentError(key, f"{key} takes one value, got a list {value!r}")
    if key == "resolution" and not from_text and isinstance(value, int) and not isinstance(value, bool):
        value = str(
            value
        )  # sd-scripts splits the string ("512" or "512,768"); an int crashes it (library/train_util.py: prepare_dataset_args)
    out = _convert_scalar(arg, value, from_text)
    if arg.choices is not None and out not in arg.choices:
        allowed = ", ".join(repr(c) for c in arg.choices if c is not None)
        raise ArgumentError(
            key,
            f"{key} = {out!r} is not one of {allowed}",
            did_you_mean(str(out), [str(c) for c in arg.choices if c is not None]) or f"use one of {allowed}",
        )
    _check_value(key, out)
    return out


def _check_range(key: str, value: TomlValue) -> None:
    """ranges.RANGES: a numeric value sd-scripts would divide by, count with or feed to a library, in range."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ArgumentError(key, f"{key} = {item!r}: must be a finite number")
        allowed = range_of(key)
        if isinstance(item, int) and abs(item) > MAX_INT and (allowed is None or allowed.hi is None):
            raise ArgumentError(
                key,
                f"{key} = {item!r} is out of range: it must be at most {MAX_INT}",
                "no count or size of sd-scripts needs more; numpy and torch overflow beyond it",
            )
        if allowed is not None and not allowed.allows(item):
            raise ArgumentError(
                key,
                f"{key} = {item!r} is out of range: it must be {allowed.describe()}",
                # "key: why", which reads for a noun ("the LoRA rank") and a sentence ("sd-scripts divides by it")
                f"{key}: {allowed.why}; give a value {allowed.describe()}",
            )


def optimizer_names() -> tuple[str, ...]:
    return KNOWN_OPTIMIZERS + TORCH_OPTIMIZERS


def _check_optimizer(value: str) -> None:
    """TU:get_optimizer: its own names compared lower-cased, else torch.optim by exact name, else a dotted import."""
    if value == "" or "." in value or value in TORCH_OPTIMIZERS:
        return
    if value.lower() in (n.lower() for n in KNOWN_OPTIMIZERS):
        return
    names = optimizer_names()
    close = difflib.get_close_matches(value.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    by_lower = {n.lower(): n for n in names}
    hint = (
        ("did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "? " if close else "")
        + "optimizer_type is one of: "
        + ", ".join(names)
        + " (or a dotted module.Class)"
    )
    raise ArgumentError("optimizer_type", f"optimizer_type {value!r} is not an optimizer sd-scripts knows", hint)


def _check_value(key: str, value: TomlValue) -> None:
    """Per-value rules sd-scripts checks late (docs/sd-scripts.md#checks-made-only-at-run-time, #no-type-conversion-of-config-values)."""
    _check_range(key, value)
    if key in FILE_NAME_KEYS and isinstance(value, str):
        problem = plain_name_problem(value)
        if problem:
            raise ArgumentError(
                key,
                f"{key} = {value!r} must be a plain name (it becomes a file name in the run directory): it {problem}",
                "use letters, digits, '-', '_' and '.', without a folder",
            )
    if key in ("optimizer_args", "lr_scheduler_args", "network_args") and isinstance(value, list):
        for item in value:
            if "=" not in str(item):
                raise ArgumentError(key, f"{key} items are 'name=value', got {item!r}")
    check = _VALUE_CHECKS.get(key)
    if check is not None and isinstance(value, str):
        check(value)


def _check_resolution(value: str) -> None:
    parts = value.split(",")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ArgumentError("resolution", f"resolution must be 'N' or 'W,H' with positive integers, got {value!r}")
    if any(int(p) > MAX_RESOLUTION for p in parts):
        raise ArgumentError(
            "resolution",
            f"resolution {value!r} is out of range: each side must be from 1 to {MAX_RESOLUTION} pixels",
            "SD1.5 trains at 512 to 1024 pixels; give a value such as '512' or '768'",
        )


def _check_face_crop(value: str) -> None:
    key = "face_crop_aug_range"
    try:
        lo, hi = (float(p) for p in value.split(","))
    except ValueError:
        raise ArgumentError(key, f"face_crop_aug_range must be 'lo,hi' (two numbers), got {value!r}") from None
    if lo > hi:
        raise ArgumentError(key, f"face_crop_aug_range {value!r}: lo must not exceed hi")


def _check_lr_scheduler(value: str) -> None:
    key = "lr_scheduler"
    if value.startswith("adafactor"):
        _, _, initial = value.partition(":")
        try:
            ok = float(initial) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ArgumentError(
                key,
                f"lr_scheduler {value!r}: the adafactor scheduler is 'adafactor:<initial lr>'",
                "for example lr_scheduler = 'adafactor:1e-4'",
            )
    elif value not in KNOWN_LR_SCHEDULERS:
        # SchedulerType(name) is case-sensitive: "Cosine" is refused by sd-scripts too
        close = did_you_mean(value, KNOWN_LR_SCHEDULERS)
        raise ArgumentError(
            key,
            f"lr_scheduler {value!r} is not a scheduler sd-scripts knows",
            (close + " " if close else "")
            + "lr_scheduler is one of: "
            + ", ".join(KNOWN_LR_SCHEDULERS)
            + " or 'adafactor:<initial lr>'",
        )


def check_argument(key: str, value: object, *, trusted: bool, from_text: bool = False) -> TomlValue:
    """`value` converted as sd-scripts' argparse would (convert) and let through only where a preset or
    --set may carry it (check_trust); ArgumentError naming the key otherwise."""
    converted = convert(key, value, from_text=from_text)
    check_trust(key, converted, trusted=trusted)
    return converted


def argument_table() -> Mapping[str, Argument]:
    """Every train_network.py argument of the pinned version, by name (its type, default and category)."""
    return table()


def sample_prompt_problem(text: str, *, negative: bool = False) -> str | None:
    """Why sd-scripts would misread `text` as a line of sample_prompts.txt, or None (docs/sd-scripts.md#sample-prompt-syntax)."""
    if " --" in f" {text}" or "\n" in text or "\r" in text:
        return f"a sample prompt cannot contain ' --' or a line break: {text!r}"
    if not negative and (text.startswith("#") or not text.strip()):
        return f"a sample prompt cannot be empty or start with '#': {text!r}"
    return None


def check_trust(key: str, value: TomlValue, *, trusted: bool) -> None:
    """Refuse what a preset file may not carry (trusted=False), and what nobody may set.

    trusted: the value comes from the user's own command line (--set), which may carry paths.
    """
    if key in SECRET_KEYS:
        raise ArgumentError(
            key,
            f"{key} is a secret and is never written to a preset or a run directory",
            f"leave it out: {SECRET_KEYS[key]}",
        )
    if key in MANAGED_KEYS:
        raise ArgumentError(key, f"{key} is set by kohya-wrap: {MANAGED_KEYS[key]}")
    if key in STEP_KEYS and not trusted:
        raise ArgumentError(
            key,
            f"{key} is planned from the dataset, so a preset cannot fix it",
            "set target_steps, min_steps and max_steps in the [kohya_wrap] table, "
            f"or pin it for one run with --set {key}=N",
        )
    if trusted:
        return
    if key in PRESET_FORBIDDEN:
        raise ArgumentError(
            key,
            f"{key} is not allowed in a preset: {PRESET_FORBIDDEN[key]}",
            f"pass it on your own command line with --set {key}=... if you trust it",
        )
    if key == "network_module" and value not in NETWORK_MODULE_ALLOWLIST:
        raise ArgumentError(
            key,
            f"network_module {value!r} is not allowed in a preset: sd-scripts imports and runs it",
            "use one of " + ", ".join(NETWORK_MODULE_ALLOWLIST),
        )
    if key in ("optimizer_type", "lr_scheduler_type") and isinstance(value, str) and "." in value:
        raise ArgumentError(
            key,
            f"{key} {value!r} is not allowed in a preset: a dotted name makes sd-scripts import and run a module",
            f"use a built-in name, or pass it on your own command line with --set {key}=...",
        )


def needed_packages(values: Mapping[str, TomlValue | None]) -> list[tuple[str, str, str]]:
    """(module, pip package, the argument that needs it) for the optimizer the values choose (TU:get_optimizer)."""
    out: list[tuple[str, str, str]] = []
    optimizer = str(values.get("optimizer_type") or "")
    if values.get("use_8bit_adam"):
        out.append((*_BNB, "use_8bit_adam"))
    if values.get("use_lion_optimizer"):
        out.append(("lion_pytorch", "lion-pytorch", "use_lion_optimizer"))
    if optimizer.lower() in OPTIMIZER_PACKAGES:
        out.append((*OPTIMIZER_PACKAGES[optimizer.lower()], f"optimizer_type {optimizer!r}"))
    elif "." in optimizer:
        top = optimizer.split(".")[0]
        out.append((top, top, f"optimizer_type {optimizer!r}"))
    if values.get("optimizer_schedulefree_wrapper"):
        out.append(("schedulefree", "schedulefree", "optimizer_schedulefree_wrapper"))
    return out


def package_problems(values: Mapping[str, TomlValue | None]) -> list[Problem]:
    """The optimizer packages the values need that this Python cannot import (found without importing them)."""
    import importlib.util
    import sys

    out = []
    for module, package, why in needed_packages(values):
        if importlib.util.find_spec(module) is None:
            key = why.split(" ")[0]
            out.append(
                Problem(
                    (key,),
                    f"{why} needs the Python package {package!r} (module {module}), which is not "
                    f"installed in {sys.executable}",
                    f"pip install {package} into the Python that trains (kohya-wrap plans and trains "
                    "with the same one), or choose another optimizer_type, e.g. AdamW",
                )
            )
    return out


def cross_checks(values: Mapping[str, TomlValue | None], *, packages: bool = True) -> list[Problem]:
    """The conflicts sd-scripts finds only at run time (docs/sd-scripts.md#checks-made-only-at-run-time), found now. `values` holds what is set.

    packages: also refuse an optimizer whose package this Python lacks (plan); a preset is checked without it.
    """
    found = _Found(values, package_problems(values) if packages else [])
    for rules in (_noise_rules, _latent_rules, _bucket_rules, _precision_rules, _step_rules, _optimizer_rules):
        rules(found)
    for rules in (_scheduler_rules, _runtime_rules, _value_rules):
        rules(found)
    return found.problems


class _Found:
    """The values under check (sd-scripts' defaults for what is not set) and the problems found, in order."""

    def __init__(self, values: Mapping[str, TomlValue | None], problems: list[Problem]) -> None:
        self.values = values
        self.problems = problems

    def v(self, key: str) -> TomlValue | None:
        return self.values[key] if key in self.values else table()[key].default

    def number(self, key: str, *, set_only: bool = False) -> float | None:
        """A numeric argument's value (an int stays an int); None where it is unset or not a number.
        set_only: sd-scripts' default does not count."""
        value = self.values.get(key) if set_only else self.v(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def err(self, keys: tuple[str, ...], message: str, hint: str | None = None, severity: str = "error") -> None:
        self.problems.append(Problem(keys, message, hint, severity))


def _noise_rules(f: _Found) -> None:
    v, err = f.v, f.err
    if v("adaptive_noise_scale") is not None and v("noise_offset") is None:
        err(("adaptive_noise_scale", "noise_offset"), "adaptive_noise_scale needs noise_offset", "set noise_offset too")
    if v("scale_v_pred_loss_like_noise_pred") and not v("v_parameterization"):
        err(
            ("scale_v_pred_loss_like_noise_pred",),
            "scale_v_pred_loss_like_noise_pred needs v_parameterization (SD 2.x v-models)",
        )
    if v("v_pred_like_loss") is not None and v("v_parameterization"):
        err(("v_pred_like_loss", "v_parameterization"), "v_pred_like_loss cannot be combined with v_parameterization")


def _latent_rules(f: _Found) -> None:
    if f.v("cache_latents") or f.v("cache_latents_to_disk"):
        for aug in ("color_aug", "random_crop"):
            if f.v(aug):
                f.err(
                    (aug, "cache_latents"),
                    f"{aug} cannot be used when latents are cached (cache_latents / cache_latents_to_disk)",
                    f"turn {aug} off, or turn latent caching off",
                )


def _bucket_rules(f: _Found) -> None:
    v, err = f.v, f.err
    if not v("enable_bucket"):
        return
    lo, hi = f.number("min_bucket_reso"), f.number("max_bucket_reso")
    if lo is not None and hi is not None and lo > hi:
        err(
            ("min_bucket_reso", "max_bucket_reso"),
            f"min_bucket_reso {v('min_bucket_reso')} is above max_bucket_reso {v('max_bucket_reso')}",
        )
    steps = f.number("bucket_reso_steps")
    if steps is not None and steps % 64 != 0:
        err(("bucket_reso_steps",), f"bucket_reso_steps is {steps}; train_network.py needs a multiple of 64")
    res = v("resolution")
    if res is None or v("bucket_no_upscale"):
        return
    sides = [int(p) for p in str(res).split(",")]
    if lo is not None and min(sides) < lo:
        err(("min_bucket_reso", "resolution"), f"min_bucket_reso {v('min_bucket_reso')} is above the resolution {res}")
    if hi is not None and max(sides) > hi:
        err(("max_bucket_reso", "resolution"), f"max_bucket_reso {v('max_bucket_reso')} is below the resolution {res}")


def _precision_rules(f: _Found) -> None:
    v, err = f.v, f.err
    mp = v("mixed_precision")
    if v("full_fp16") and mp != "fp16":
        err(("full_fp16", "mixed_precision"), "full_fp16 needs mixed_precision = 'fp16'")
    if v("full_bf16") and mp != "bf16":
        err(("full_bf16", "mixed_precision"), "full_bf16 needs mixed_precision = 'bf16'")
    for fp8 in ("fp8_base", "fp8_base_unet"):
        if v(fp8) and mp == "no":
            err((fp8, "mixed_precision"), f"{fp8} needs mixed precision (fp16 or bf16)")


def _step_rules(f: _Found) -> None:
    err = f.err
    lo_t, hi_t = f.number("min_timestep"), f.number("max_timestep")
    if lo_t is not None and hi_t is not None and lo_t >= hi_t:
        err(("min_timestep", "max_timestep"), f"min_timestep {lo_t} must be below max_timestep {hi_t}")
    initial, steps = f.number("initial_step"), f.number("max_train_steps", set_only=True)
    if initial is not None and steps is not None and steps <= initial:
        err(("max_train_steps", "initial_step"), f"max_train_steps {steps} must exceed initial_step {initial}")


def _optimizer_rules(f: _Found) -> None:
    v, err = f.v, f.err
    legacy = [k for k in ("use_8bit_adam", "use_lion_optimizer") if v(k)]
    if len(legacy) > 1 or (legacy and v("optimizer_type")):
        err(
            (*legacy, "optimizer_type"),
            "use_8bit_adam, use_lion_optimizer and optimizer_type are mutually exclusive",
            "set only optimizer_type",
        )
    if v("fused_backward_pass"):
        if _optimizer(f) != "adafactor":
            err(
                ("fused_backward_pass", "optimizer_type"),
                "fused_backward_pass works only with optimizer_type Adafactor",
            )
        if v("gradient_accumulation_steps") != 1:
            err(
                ("fused_backward_pass", "gradient_accumulation_steps"),
                "fused_backward_pass needs gradient_accumulation_steps = 1",
            )


def _optimizer(f: _Found) -> str:
    return str(f.v("optimizer_type") or "AdamW").lower()


def _scheduler_rules(f: _Found) -> None:
    v, err = f.v, f.err
    scheduler = v("lr_scheduler")
    warmup = v("lr_warmup_steps")
    no_warmup = scheduler in _SCHEDULERS_WITHOUT_WARMUP or str(scheduler).startswith("adafactor")
    if (no_warmup or v("lr_scheduler_type")) and warmup not in (0, None):
        err(
            ("lr_warmup_steps", "lr_scheduler"),
            f"lr_scheduler {scheduler!r} takes no warmup, but lr_warmup_steps is {warmup!r}",
            "use lr_scheduler = 'constant_with_warmup', or set lr_warmup_steps = 0",
        )
    if str(scheduler).startswith("adafactor") and _optimizer(f) != "adafactor":
        err(("lr_scheduler", "optimizer_type"), "the adafactor lr_scheduler needs optimizer_type Adafactor")


def _runtime_rules(f: _Found) -> None:
    v, err = f.v, f.err
    if v("log_with") in ("tensorboard", "all") and not v("logging_dir"):
        err(("log_with", "logging_dir"), f"log_with {v('log_with')!r} needs logging_dir")
    if v("persistent_data_loader_workers") and v("max_data_loader_n_workers") == 0:
        err(
            ("persistent_data_loader_workers", "max_data_loader_n_workers"),
            "persistent_data_loader_workers needs max_data_loader_n_workers > 0",
        )
    if v("cpu_offload_checkpointing") and v("gradient_checkpointing"):
        err(
            ("cpu_offload_checkpointing",),
            "cpu_offload_checkpointing crashes SD 1.5 training with gradient_checkpointing",
        )


def _value_rules(f: _Found) -> None:
    v, err = f.v, f.err
    attention = [k for k in ("mem_eff_attn", "xformers", "sdpa") if v(k)]
    if len(attention) > 1:
        err(
            tuple(attention),
            f"{' and '.join(attention)} are all set; sd-scripts uses only {attention[0]}",
            "set just one attention implementation",
            severity="warning",
        )
    if v("network_dim") is None and "network_module" in f.values:
        err(
            ("network_dim",),
            "network_dim is not set; networks.lora silently uses 4",
            "set network_dim",
            severity="warning",
        )
    for key in ("sample_every_n_steps", "sample_every_n_epochs", "save_every_n_steps", "save_every_n_epochs"):
        n = f.number(key)
        if n is not None and n <= 0:
            err((key,), f"{key} is {n}; sd-scripts treats values <= 0 as unset", f"remove {key}", severity="warning")
    lr = v("learning_rate")
    if isinstance(lr, float) and (math.isnan(lr) or lr <= 0):
        err(("learning_rate",), f"learning_rate must be positive, got {lr}")


def argparse_default(key: str) -> TomlValue | None:
    return lookup(key).default


# the arguments whose values have rules of their own, beyond their type and range
_VALUE_CHECKS: dict[str, Callable[[str], None]] = {
    "optimizer_type": _check_optimizer,
    "resolution": _check_resolution,
    "face_crop_aug_range": _check_face_crop,
    "lr_scheduler": _check_lr_scheduler,
}
