"""The lock that gives a run directory one writer.

An OS file lock (flock) on RUN_DIR/.lock, held for a trainer's whole life: the kernel frees it when
the process ends, a crash and `kill -9` included, so it is never stale. The file also says who holds
it (pid, since when, what) for the refusal message and for `status`.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from kohya_wrap.codec import Record, RecordError, decode, encode, utc_now_text
from kohya_wrap.errors import RunDirError
from kohya_wrap.rundir.layout import paths


class LockHolder(Record, frozen=True, kw_only=True):
    """What RUN_DIR/.lock says of its holder (the file is a one-line JSON record)."""

    pid: int | None = None
    since: str | None = None
    what: str | None = None
    host: str | None = None

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "another process"
        if self.host and self.host != socket.gethostname():
            who += f" on {self.host}"
        if self.what:
            who += f" ({self.what})"
        return who + (f", since {self.since}" if self.since else "")


class RunBusy(RunDirError):
    """Another process holds the run directory's lock."""


def _read_holder(path: Path) -> LockHolder:
    try:
        return decode(path.read_bytes() or b"{}", LockHolder, source=str(path))
    except (OSError, RecordError):
        return LockHolder()  # written this moment, or damaged: the lock still holds


class RunLock:
    """An exclusive lock on one run directory, held from acquire() to release() (or the process's end)."""

    def __init__(self, run_dir: str | os.PathLike[str], what: str) -> None:
        self.run_dir = Path(run_dir)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        path = paths(self.run_dir).lock
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path)
            raise RunBusy(
                f"{self.run_dir} is in use by {holder.describe()}; one run directory has one writer at a time",
                "wait for it to end (`kohya-wrap status RUN_DIR` shows it), or stop it first",
            ) from None
        holder = LockHolder(pid=os.getpid(), since=utc_now_text(), what=self.what, host=socket.gethostname())
        record = encode(holder, indent=None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def fileno(self) -> int:
        """The locked descriptor: a trainer that inherits it keeps the run locked until it ends too,
        so a trainer orphaned by a killed kohya-wrap still counts as running."""
        if self._fd is None:
            raise ValueError("the lock is not held")
        return self._fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_holder(run_dir: str | os.PathLike[str]) -> LockHolder | None:
    """Who holds the run directory's lock now, or None when nobody does (a dead holder holds nothing)."""
    path = paths(run_dir).lock
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
