"""Finding the photos under a source folder, recursively, in a stable order.

Extensions are matched case-insensitively. Hidden files and folders (a leading dot: .DS_Store,
AppleDouble `._x.jpg`) are system files and are passed over silently. A symlink is followed only
when its target lies inside the source folder (a link out of it, or a broken one, is reported);
folder cycles through links are visited once. Everything else that is not a photo is reported.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kohya_wrap.prepare.records import Finding

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".avif"})
# Files cameras and other tools leave beside photos: noted, never a warning.
SIDECAR_EXTENSIONS = frozenset({".txt", ".caption", ".json", ".xmp", ".aae", ".ini", ".thm"})
HEIF_HINT = "pip install 'kohya-wrap[heic]'"


# What file managers and phones append to a copy's name: "IMG_1 (1)", "IMG_1 copy", "IMG_1 copy 2",
# "IMG_1 - Copy", "IMG_1 - Copy (2)", "Copy of IMG_1". "IMG_1-1" is left out: bursts are named that way too.
_COPY_SUFFIX = re.compile(r"^(?:copy of .+|.+?(?: \(\d+\)| copy(?: \d+)?| - copy(?: \(\d+\))?))$", re.IGNORECASE)


def has_copy_suffix(rel: str) -> bool:
    """Whether a file's name (without its extension) ends the way a copy's does."""
    return bool(_COPY_SUFFIX.match(PurePosixPath(rel).stem))


@dataclass(frozen=True)
class SourceFile:
    path: Path  # the path to read (inside the source folder, links not resolved)
    rel: str  # relative to the source folder, "/"-separated


@dataclass(frozen=True)
class Discovery:
    files: tuple[SourceFile, ...]
    findings: tuple[Finding, ...]


def heif_support() -> frozenset[str]:
    """The HEIF-family extensions this installation can decode."""
    if importlib.util.find_spec("pillow_heif") is not None:
        return HEIF_EXTENSIONS
    from PIL import features

    return frozenset({".avif"}) if features.check("avif") else frozenset()


def register_heif_opener() -> None:
    if importlib.util.find_spec("pillow_heif") is not None:
        import pillow_heif

        pillow_heif.register_heif_opener()


def _label(name: str) -> str:
    """A file name as text: a name that is not valid UTF-8 (decoded with surrogates) shows its bytes as \\xNN.

    The file is still read by its real path; the label is what prepare.json, the findings and the
    terminal show, and they must be valid UTF-8.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def discover(root: Path, exclude: Path | None = None) -> Discovery:
    """Every photo under `root`, sorted by relative path; `exclude` (a folder) is not entered."""
    root_real = Path(os.path.realpath(root))
    exclude_real = Path(os.path.realpath(exclude)) if exclude is not None else None
    readable = PHOTO_EXTENSIONS | heif_support()
    files: list[SourceFile] = []
    findings: list[Finding] = []
    visited: set[str] = set()

    def skip(rel: str, code: str, level: str, message: str, action: str) -> None:
        findings.append(Finding(code=code, level=level, file=rel, message=message, action=action))  # type: ignore[arg-type]

    def walk(folder: Path, rel_folder: str) -> None:
        real = os.path.realpath(folder)
        if real in visited or (exclude_real is not None and Path(real) == exclude_real):
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skip(
                rel_folder or ".",
                "skipped_unreadable",
                "warning",
                f"folder cannot be listed ({e.strerror})",
                "fix its permissions",
            )
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = _label(entry.name)
            rel = f"{rel_folder}/{name}" if rel_folder else name
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    target = Path(os.path.realpath(path))
                    if not target.exists():
                        skip(rel, "skipped_broken_link", "warning", "broken symbolic link", "remove the link")
                        continue
                    if target != root_real and root_real not in target.parents:
                        skip(
                            rel,
                            "skipped_link_outside",
                            "warning",
                            f"symbolic link to {target}, outside the source folder; not followed",
                            "copy the photo into the source folder",
                        )
                        continue
                if entry.is_dir(follow_symlinks=True):
                    walk(path, rel)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    skip(rel, "skipped_not_file", "warning", "not a regular file", "remove it from the folder")
                    continue
            except OSError as e:
                skip(rel, "skipped_unreadable", "warning", f"cannot be examined ({e.strerror})", "fix its permissions")
                continue
            ext = os.path.splitext(entry.name)[1].lower()
            if ext in readable:
                files.append(SourceFile(path=path, rel=rel))
            elif ext in HEIF_EXTENSIONS:
                skip(
                    rel,
                    "skipped_unsupported",
                    "warning",
                    f"{ext} photos need pillow-heif, which is not installed",
                    f"{HEIF_HINT}, or convert it to JPEG",
                )
            elif ext in SIDECAR_EXTENSIONS:
                skip(rel, "ignored_sidecar", "info", "not a photo; ignored", "nothing to do")
            else:
                skip(
                    rel,
                    "skipped_unsupported",
                    "warning",
                    f"unsupported file type {ext or '(no extension)'}",
                    "convert it to JPEG or PNG, or remove it",
                )

    walk(root, "")
    files.sort(key=lambda f: f.rel)
    findings.sort(key=lambda f: f.file)
    return Discovery(files=tuple(files), findings=tuple(findings))
