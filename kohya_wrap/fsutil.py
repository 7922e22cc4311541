"""File helpers shared by every stage: atomic writes and hashing.

Atomic means: written to a temporary name in the same folder, flushed, then renamed over the
target, so an interrupted write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kohya_wrap.errors import DiskError, disk_error


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask sets it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask (mkstemp's files are 0600 whatever the umask)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        # a folder that cannot hold files (/proc, a file's path, a missing mount): said once, exit 1, not a bug
        raise disk_error(e) or DiskError(
            f"cannot write {path}: {e.strerror or e} ({path.parent} cannot hold a new file)",
            "choose a folder you may write files in and run the command again",
        ) from None
    try:
        # mkstemp creates 0600; a file written in place would get 0666 less the umask, and so does this one
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def reserve_space(path: Path, nbytes: int) -> bool:
    """Write `nbytes` of real blocks (not a sparse file) to `path`: space set aside now, to be freed
    for a small file that must be written even when the disk fills up later. False when it cannot be."""
    try:
        with open(path, "wb") as f:
            chunk = b"\0" * min(nbytes, 1 << 16)
            left = nbytes
            while left > 0:
                left -= f.write(chunk[:left])
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return False


def load_json(text: str | bytes) -> Any:
    """json.loads for files anyone may have edited: a nesting bomb ([[[[...]]]] deeper than Python's
    recursion limit) is a ValueError like any other bad JSON, never a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its arrays or objects nest too deeply to read") from None


class TomlFileError(ValueError):
    """A TOML file that cannot be read as one: the message names the file and why; hint: what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def load_toml_file(path: Path, kind: str) -> dict[str, Any]:
    """A TOML file anyone may have written (a shared preset, a sweep file), read whole; TomlFileError
    for bad TOML, a nesting bomb, text that is not UTF-8, or a file that cannot be read. kind: "a preset"."""
    import stat

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        # a FIFO or a device would block the read or never end: only a regular file is a TOML file
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise TomlFileError(f"{path}: not a regular file: {kind} is a TOML file", f"give the path of {kind}")
        doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TomlFileError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise TomlFileError(f"{path}: not {kind}: its arrays or tables nest too deeply to read") from None
    except UnicodeDecodeError as e:
        raise TomlFileError(
            f"{path}: not UTF-8 text (byte {e.start}): TOML files are UTF-8", "save it as UTF-8 text"
        ) from None
    except OSError as e:
        raise TomlFileError(f"{path}: cannot be read: {e}") from None
    return doc


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def user_cache_dir() -> Path:
    """Where kohya-wrap keeps models it builds or downloads: $KOHYA_WRAP_HOME, else the XDG cache."""
    if home := os.environ.get("KOHYA_WRAP_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kohya-wrap"
