"""The sweep's variants: datasets x the grid's cartesian product, each an ordinary run directory under SWEEP_DIR.

A variant's folder is named from its dataset and its grid values (`ohwx__network_dim-8__learning_rate-0.0001`),
made filesystem-safe; names that would still collide (two datasets named alike, values that differ only in
characters replaced) get a short hash of what makes them differ, so every variant has its own folder and a
rerun finds the same folder for the same variant.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.codec import TomlValue
from kohya_wrap.sweep.spec import SweepSpec

RUNS_DIR = "runs"  # SWEEP_DIR/runs/<variant>: the run directories
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Variant:
    name: str
    dataset_dir: Path
    values: Mapping[str, TomlValue]  # grid key -> its value in this variant (typed as in the plan)
    overrides: tuple[str, ...]  # the spec's --set, then this variant's grid values as --set
    run_dir: Path


def safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "x"


def _short(value: TomlValue) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "+".join(_short(v) for v in value) or "none"
    return str(value)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:8]


def variant_name(dataset_dir: Path, values: Mapping[str, TomlValue]) -> str:
    parts = [safe(dataset_dir.name)] + [f"{safe(k)}-{safe(_short(v))}" for k, v in values.items()]
    name = "__".join(parts)
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9].rstrip("._-") + "-" + _digest(str(dataset_dir), dict(values))
    return name


def expand(spec: SweepSpec, sweep_dir: Path) -> list[Variant]:
    """Every variant, datasets outermost, then the grid in the order its keys were given."""
    combos = (
        list(itertools.product(*[list(zip(a.values, a.texts, strict=False)) for a in spec.grid])) if spec.grid else [()]
    )
    planned: list[tuple[Path, dict[str, TomlValue], tuple[str, ...]]] = []
    for dataset in spec.datasets:
        for combo in combos:
            values = {a.key: v for a, (v, _t) in zip(spec.grid, combo, strict=False)}
            sets = tuple(f"{a.key}={t}" for a, (_v, t) in zip(spec.grid, combo, strict=False))
            planned.append((dataset, values, spec.overrides + sets))
    names = [variant_name(d, v) for d, v, _ in planned]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    root = Path(sweep_dir).expanduser().resolve() / RUNS_DIR
    out = []
    for (dataset, values, sets), name in zip(planned, names, strict=False):
        if counts[name] > 1:
            name = name[: MAX_NAME - 9] + "-" + _digest(str(dataset), values)
        out.append(Variant(name=name, dataset_dir=dataset, values=values, overrides=sets, run_dir=root / name))
    return out
