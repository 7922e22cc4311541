"""Finding the sd-scripts checkout: --sd-scripts PATH, then $KOHYA_WRAP_SD_SCRIPTS, then the submodule."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.errors import TrainerNotFound
from kohya_wrap.sdscripts import ENV_VAR, PINNED_COMMIT, PINNED_TAG, SUBMODULE_PATH, TRAIN_SCRIPT
from kohya_wrap.sdscripts.requirements import TRAINER_NEEDS

__all__ = [
    "Checkout",
    "TRAINER_NEEDS",
    "locate",
]

GET_IT_HINT = (
    "Get it with `git submodule update --init` in your kohya-wrap clone "
    "(or clone with `git clone --recursive`), or point at an existing checkout of "
    f"sd-scripts {PINNED_TAG} with `--sd-scripts PATH` or `{ENV_VAR}=PATH`."
)


@dataclass(frozen=True)
class Checkout:
    path: Path
    source: str  # "--sd-scripts", "$KOHYA_WRAP_SD_SCRIPTS" or "submodule"
    commit: str | None  # None when it is not a git work tree

    @property
    def train_script(self) -> Path:
        return self.path / TRAIN_SCRIPT

    @property
    def matches_pin(self) -> bool:
        return self.commit == PINNED_COMMIT


def source_root() -> Path:
    """The kohya-wrap source tree this package was imported from (a clone or an editable install)."""
    return Path(__file__).resolve().parents[2]


def candidate(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The path that will be used and where the choice came from, without checking it."""
    if explicit:
        return Path(explicit).expanduser(), "--sd-scripts"
    if env := os.environ.get(ENV_VAR):
        return Path(env).expanduser(), f"${ENV_VAR}"
    for root in (source_root(), Path.cwd()):
        if (root / SUBMODULE_PATH / TRAIN_SCRIPT).is_file():
            return root / SUBMODULE_PATH, "submodule"
    return source_root() / SUBMODULE_PATH, "submodule"


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    # A folder inside another git tree (an unpopulated submodule) answers with the outer HEAD.
    top = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    if out.returncode != 0 or not sha or Path(top).resolve() != path.resolve():
        return None
    return sha


def fix_hint(source: str) -> str:
    """What to do about a bad checkout, by where its path came from: a bad variable is fixed, not the submodule."""
    if source == f"${ENV_VAR}":
        return (
            f"fix the variable: point {ENV_VAR} at a checkout of sd-scripts {PINNED_TAG} (the folder holding "
            f"{TRAIN_SCRIPT}), or unset it to use the submodule"
        )
    return GET_IT_HINT


def locate(explicit: str | os.PathLike[str] | None = None) -> Checkout:
    """The checkout to run, or TrainerNotFound saying how to get one."""
    path, source = candidate(explicit)
    if not path.is_dir():
        raise TrainerNotFound(f"sd-scripts not found: {path} (from {source}) does not exist.", fix_hint(source))
    if not (path / TRAIN_SCRIPT).is_file():
        state = "is empty" if not any(path.iterdir()) else f"has no {TRAIN_SCRIPT}"
        raise TrainerNotFound(f"sd-scripts not found: {path} (from {source}) {state}.", fix_hint(source))
    return Checkout(path=path.resolve(), source=source, commit=git_commit(path))
