"""One error family. Raised where the problem is; reported once, by the CLI (cli/__init__.py)."""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    """Exit codes of every command. Documented in README.md ("Exit codes")."""

    OK = 0
    ERROR = 1  # a KohyaWrapError: bad input, bad config, missing trainer
    USAGE = 2  # click's own code for bad command-line usage
    UNEXPECTED = 3  # a bug in kohya-wrap: details in the last-error log
    WARNINGS = 4  # --strict and there were warnings
    TRAIN_OOM = 10  # train: the GPU ran out of memory
    TRAIN_MODEL_MISSING = 11  # train, sample: the base model or the CLIP tokenizer is missing or unreadable
    TRAIN_NO_DATA = 12  # train: the trainer found no images ("No data found"; sd-scripts itself exits 0)
    TRAIN_CONFIG_REJECTED = 13  # train: the trainer rejected its configuration
    TRAIN_MISSING_PACKAGE = 14  # train: a Python package the trainer imports is missing
    TRAIN_NAN = 15  # train: the loss became NaN or infinite and the run was stopped
    TRAIN_CRASHED = 16  # train: the trainer failed some other way
    TRAIN_KILLED = 17  # train: the trainer was killed by a signal (e.g. the kernel's out-of-memory killer)
    TRAIN_VERIFY_FAILED = 18  # train: the trainer finished but its LoRA file failed verification
    SWEEP_FAILED = 19  # sweep: at least one variant did not finish (sweep.json says which, and how)
    INTERRUPTED = 130


class KohyaWrapError(Exception):
    """An error the user can act on: `message` says what is wrong and where, `hint` what to do."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class TrainerNotFound(KohyaWrapError):
    """The sd-scripts checkout (or a package it needs) is missing."""


class PresetError(KohyaWrapError):
    """A preset file, or a --set override, is invalid."""


class DatasetError(KohyaWrapError):
    """A source folder or a dataset folder cannot be used."""


class DatasetGone(DatasetError):
    """train: a dataset folder the plan names is no longer there; found before the trainer starts (which would
    find no images)."""

    exit_code = ExitCode.TRAIN_NO_DATA


class ModelError(KohyaWrapError):
    """A base model or tokenizer cannot be found, read or downloaded."""


class ModelGone(ModelError):
    """train: the model a plan named is no longer there; found before the trainer starts."""

    exit_code = ExitCode.TRAIN_MODEL_MISSING


class RunDirError(KohyaWrapError):
    """A run directory is missing, unfinished, or would be overwritten."""


class DiskError(KohyaWrapError):
    """A file could not be written: the disk is full, over quota, mounted read-only, or not yours (exit 1)."""


# OSError numbers that mean "this disk or folder cannot take the write", not a bug: a sentence, exit 1.
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}
# ... and the ones that mean "you may not open this file or folder" (a read as much as a write)
_ACCESS_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "the operation is not permitted"}


def disk_error(error: BaseException) -> DiskError | None:
    """The DiskError an OSError stands for (full disk, quota, read-only file system, no permission), else None."""
    if not isinstance(error, OSError):
        return None
    where = error.filename if error.filename is not None else "a file"
    if error.errno in _ACCESS_ERRNOS:
        return DiskError(
            f"cannot open {where}: {_ACCESS_ERRNOS[error.errno]}",
            "check that file's or folder's permissions, or choose a folder you may write to, and run the command again",
        )
    if error.errno not in _DISK_ERRNOS:
        return None
    return DiskError(
        f"cannot write {where}: {_DISK_ERRNOS[error.errno]}",
        "free some space (or choose a writable folder) and run the command again; "
        "finished files are written whole or not at all, so nothing written before was lost",
    )


def path_through_a_file(error: BaseException) -> DiskError | None:
    """A path given through a file (`-o notes.txt/out`): ENOTDIR, or mkdir's EEXIST where a folder was to be;
    else None (the CLI's last resort before calling an OSError a bug: fsutil's writes say it themselves)."""
    if not isinstance(error, OSError) or error.errno not in (errno.ENOTDIR, errno.EEXIST) or error.filename is None:
        return None
    from pathlib import Path

    path = Path(str(error.filename))
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is None or (error.errno == errno.EEXIST and blocking != path):
        return None
    where = f"{path}: it is" if blocking == path else f"{path}: {blocking} is"
    return DiskError(
        f"cannot write into {where} a file, not a folder",
        "give a path whose folders are folders (or move that file away), and run the command again",
    )
