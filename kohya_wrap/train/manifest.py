"""What run.json records of the machine and the base model, gathered on threads while training runs.

Versions are read from package metadata of the Python that runs the trainer (a short subprocess),
never by importing torch. The CUDA version comes from torch's version.py. The record itself is
kohya_wrap.rundir.RunManifest.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kohya_wrap.fsutil import atomic_write_json, load_json, sha256_file, user_cache_dir
from kohya_wrap.process import capture
from kohya_wrap.sdscripts.checkout import TRAINER_NEEDS
from kohya_wrap.train.machine import visible_gpus

PACKAGES = (*TRAINER_NEEDS.modules, "numpy")

_PROBE = rf"""
import importlib.metadata as md, importlib.util, json, platform, re, sys
out = {{"python": platform.python_version(), "executable": sys.executable}}
for name in {PACKAGES!r}:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
cuda = None
spec = importlib.util.find_spec("torch")
if spec and spec.origin:
    import os
    try:
        text = open(os.path.join(os.path.dirname(spec.origin), "version.py")).read()
        m = re.search(r"^cuda\s*[:=].*?['\"]([^'\"]+)['\"]", text, re.M)
        cuda = m.group(1) if m else None
    except OSError:
        pass
out["cuda"] = cuda
print(json.dumps(out))
"""


def environment(python: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": None, "cuda": None, **{p: None for p in PACKAGES}}
    probe = capture([python, "-c", _PROBE], timeout_s=60)
    if probe is not None and probe.returncode == 0:
        try:
            info.update(load_json(probe.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            pass
    info["gpu"] = [g.name for g in visible_gpus()]
    return info


class EnvironmentProbe:
    """environment() on a thread, started with the run so that it costs no time at the end."""

    def __init__(self, python: str) -> None:
        self.result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, args=(python,), daemon=True)
        self._thread.start()

    def _run(self, python: str) -> None:
        self.result = environment(python)

    def wait(self) -> dict[str, Any]:
        self._thread.join()
        return self.result or {}


class FileHasher:
    """sha256 of a (large) file computed on a thread while training runs, cached by size and mtime."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.result: str | None = None
        self._thread: threading.Thread | None = None
        if path is not None and path.is_file():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _cache_file(self) -> Path:
        return user_cache_dir() / "hashes.json"

    def _run(self) -> None:
        assert self.path is not None
        try:
            stat = self.path.stat()
            key = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            cache_file = self._cache_file()
            try:
                cache = load_json(cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cache = {}
            if key in cache:
                self.result = cache[key]
                return
            self.result = sha256_file(self.path)
            cache[key] = self.result
            try:
                atomic_write_json(cache_file, cache)
            except OSError:
                pass
        except OSError:
            self.result = None

    def wait(self) -> str | None:
        if self._thread is not None:
            self._thread.join()
        return self.result
