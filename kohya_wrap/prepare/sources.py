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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kohya_wrap.prepare.records import Finding, Level

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
    walker = _Walker(
        root_real=Path(os.path.realpath(root)),
        exclude_real=Path(os.path.realpath(exclude)) if exclude is not None else None,
        readable=PHOTO_EXTENSIONS | heif_support(),
    )
    walker.walk(root, "")
    files = sorted(walker.files, key=lambda f: f.rel)
    findings = sorted(walker.findings, key=lambda f: f.file)
    return Discovery(files=tuple(files), findings=tuple(findings))


@dataclass
class _Walker:
    """One discovery's walk: the photos and findings so far, and the folders already visited."""

    root_real: Path
    exclude_real: Path | None
    readable: frozenset[str]
    files: list[SourceFile] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)

    def skip(self, rel: str, code: str, message: str, action: str, level: Level = "warning") -> None:
        self.findings.append(Finding(code=code, level=level, file=rel, message=message, action=action))

    def walk(self, folder: Path, rel_folder: str) -> None:
        real = os.path.realpath(folder)
        if real in self.visited or (self.exclude_real is not None and Path(real) == self.exclude_real):
            return
        self.visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            self.skip(
                rel_folder or ".",
                "skipped_unreadable",
                f"folder cannot be listed ({e.strerror})",
                "fix its permissions",
            )
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = _label(entry.name)
            rel = f"{rel_folder}/{name}" if rel_folder else name
            try:
                is_file = self._follow(entry, rel)
            except OSError as e:
                self.skip(rel, "skipped_unreadable", f"cannot be examined ({e.strerror})", "fix its permissions")
                continue
            if is_file:
                self._file(Path(entry.path), rel, os.path.splitext(entry.name)[1].lower())

    def _follow(self, entry: os.DirEntry[str], rel: str) -> bool:
        """Whether the entry is a file to look at; a folder (or a link to one inside the source) is walked."""
        path = Path(entry.path)
        if entry.is_symlink():
            target = Path(os.path.realpath(path))
            if not target.exists():
                self.skip(rel, "skipped_broken_link", "broken symbolic link", "remove the link")
                return False
            if target != self.root_real and self.root_real not in target.parents:
                self.skip(
                    rel,
                    "skipped_link_outside",
                    f"symbolic link to {target}, outside the source folder; not followed",
                    "copy the photo into the source folder",
                )
                return False
        if entry.is_dir(follow_symlinks=True):
            self.walk(path, rel)
            return False
        if not entry.is_file(follow_symlinks=True):
            self.skip(rel, "skipped_not_file", "not a regular file", "remove it from the folder")
            return False
        return True

    def _file(self, path: Path, rel: str, ext: str) -> None:
        if ext in self.readable:
            self.files.append(SourceFile(path=path, rel=rel))
        elif ext in HEIF_EXTENSIONS:
            self.skip(
                rel,
                "skipped_unsupported",
                f"{ext} photos need pillow-heif, which is not installed",
                f"{HEIF_HINT}, or convert it to JPEG",
            )
        elif ext in SIDECAR_EXTENSIONS:
            self.skip(rel, "ignored_sidecar", "not a photo; ignored", "nothing to do", level="info")
        else:
            self.skip(
                rel,
                "skipped_unsupported",
                f"unsupported file type {ext or '(no extension)'}",
                "convert it to JPEG or PNG, or remove it",
            )
