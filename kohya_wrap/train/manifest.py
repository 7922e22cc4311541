"""What run.json records of the machine and the base model, gathered on threads while training runs.

Versions are read from package metadata of the Python that runs the trainer (a short subprocess),
never by importing torch. The CUDA version comes from torch's version.py. The record itself is
kohya_wrap.rundir.RunManifest.
"""

from __future__ import annotations

import threading
from pathlib import Path

from kohya_wrap.codec import RecordError, decode, write
from kohya_wrap.fsutil import sha256_file, user_cache_dir
from kohya_wrap.process import capture
from kohya_wrap.rundir import Environment, MachineEntry, MemoryChange, MemoryFit
from kohya_wrap.sdscripts.checkout import TRAINER_NEEDS
from kohya_wrap.train.machine import Machine, visible_gpus
from kohya_wrap.train.memory import Fit

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


def environment(python: str) -> Environment:
    info: Environment = {"python": None, "cuda": None, **{p: None for p in PACKAGES}}
    probe = capture([python, "-c", _PROBE], timeout_s=60)
    lines = probe.stdout.strip().splitlines() if probe is not None and probe.returncode == 0 else []
    if lines:
        try:
            info.update(decode(lines[-1], dict[str, str | None], source="the package probe"))
        except RecordError:
            pass
    info["gpu"] = [g.name for g in visible_gpus()]
    return info


def machine_entry(machine: Machine) -> MachineEntry:
    """What run.json records of the machine an attempt ran on (and `train --dry-run --json` prints)."""
    return MachineEntry(
        python=machine.python,
        sd_scripts=str(machine.checkout.path),
        sd_scripts_commit=machine.checkout.commit,
        device=machine.device,
        gpus=tuple(machine.gpus.names),
        num_processes=machine.launch.num_processes,
        num_machines=machine.launch.num_machines,
        machine_rank=machine.launch.machine_rank,
        mixed_precision=machine.launch.mixed_precision,
        mixed_precision_source=machine.precision_source,
        cpu_threads=machine.launch.cpu_threads,
        gpu_memory_mib=machine.gpus.memory_mib,
        memory_fit=None if machine.fit is None else memory_fit(machine.fit),
    )


def memory_fit(fit: Fit) -> MemoryFit:
    """What run.json records of the GPU memory train found and what it changed to fit it."""
    return MemoryFit(
        gpu_memory_mib=fit.gpu_mib,
        need_mib=fit.need_mib,
        need_from=fit.how,
        changes=tuple(MemoryChange(key=c.key, old=c.old, new=c.new) for c in fit.changes),
        note=fit.note,
    )


class EnvironmentProbe:
    """environment() on a thread, started with the run so that it costs no time at the end."""

    def __init__(self, python: str) -> None:
        self.result: Environment | None = None
        self._thread = threading.Thread(target=self._run, args=(python,), daemon=True)
        self._thread.start()

    def _run(self, python: str) -> None:
        self.result = environment(python)

    def wait(self) -> Environment:
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
                cache = decode(cache_file.read_bytes(), dict[str, str], source=str(cache_file))
            except (OSError, RecordError):
                cache = {}
            if key in cache:
                self.result = cache[key]
                return
            self.result = sha256_file(self.path)
            cache[key] = self.result
            try:
                write(cache_file, cache)
            except OSError:
                pass
        except OSError:
            self.result = None

    def wait(self) -> str | None:
        if self._thread is not None:
            self._thread.join()
        return self.result
