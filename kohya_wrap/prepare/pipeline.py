"""prepare_dataset: sources -> staged outputs (in a process pool) -> Kohya's layout, swapped in whole.

Safety: sources are only read. Every output is first written under the hidden staging folder
DATASET_DIR/.kohya-wrap-prepare/ (which sd-scripts never scans), then the finished img/ and reg/
trees replace the old ones by directory renames, and prepare.json is written last, atomically.
An interrupted run leaves the previous dataset, or none, never a half-written image under a final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import re
import shutil
import string
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from kohya_wrap import __version__
from kohya_wrap.errors import DatasetError
from kohya_wrap.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from kohya_wrap.prepare import faces, identity, lint, manifest, sources, worker
from kohya_wrap.prepare.records import (
    SIZES,
    SKIP_KINDS,
    Finding,
    IdentityCheck,
    ImageIdentity,
    OutputImage,
    PrepareOptions,
    PrepareResult,
    Subset,
)
from kohya_wrap.sdscripts.layout import (
    CAPTION_EXTENSION,
    DEFAULT_REPEATS,
    REG_DIR,
    TRAIN_DIR,
    parse_subset_dir_name,
    subset_dir_name,
)

STAGING_NAME = ".kohya-wrap-prepare"
OUTPUT_EXTENSION = ".png"  # one of sd-scripts' IMAGE_EXTENSIONS, lower case
REG_REPEATS = 1
CAPTION_FIELDS = ("token", "class")
MIN_SIZE = 64
SIZE_STEP = 8
_BAD_NAME = re.compile(r"[/\\\x00\n\r\t]")


@dataclass(frozen=True)
class _Group:
    is_reg: bool
    src_dir: Path
    subset_dir: str  # relative to the dataset folder
    class_tokens: str
    repeats: int
    caption: str
    files: tuple[sources.SourceFile, ...]


def render_caption(template: str, token: str, class_word: str) -> str:
    """The caption for `template`, or DatasetError naming an unknown or malformed placeholder."""
    allowed = ", ".join("{" + f + "}" for f in CAPTION_FIELDS)
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise DatasetError(
            f"caption template {template!r} is malformed: {e}",
            f"Use the placeholders {allowed}; write {{{{ and }}}} for literal braces.",
        ) from None
    for name, spec, conv in fields:
        if name not in CAPTION_FIELDS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise DatasetError(
                f"caption template {template!r} has an unknown placeholder {shown}", f"The placeholders are {allowed}."
            )
    # Whitespace collapsed, and separators left at the ends by an empty token (reg captions) dropped.
    caption = " ".join(template.format(token=token, **{"class": class_word}).split()).strip(" ,;:")
    if not caption:
        raise DatasetError(
            f"caption template {template!r} gives an empty caption",
            "sd-scripts refuses empty caption files; put some words in the template.",
        )
    return caption


def prepare_dataset(options: PrepareOptions, on_progress: Callable[[int, int], None] | None = None) -> PrepareResult:
    """Build (or bring up to date) options.dataset_dir; on_progress(done, total) after each source photo.

    One prepare at a time writes a dataset folder: a second one is refused (the lock's holder named).
    """
    _, _, dataset_dir = _check_paths(options)
    _check_options(options)
    with dataset_lock(dataset_dir):
        return _prepare_locked(options, on_progress)


def _check_options(options: PrepareOptions) -> tuple[str, str]:
    """The checks of the options alone (before the dataset folder is made or locked); the two captions."""
    _check_words(options)
    caption = render_caption(options.caption, options.token, options.class_word)
    reg_caption = render_caption(options.caption, "", options.class_word)
    # The CLI offers SIZES; the stage takes any multiple of 8 (the VAE's factor) from 64 px, for `smoke`.
    if options.size < MIN_SIZE or options.size % SIZE_STEP:
        raise DatasetError(
            f"--size {options.size} is not supported: sizes are multiples of {SIZE_STEP} from {MIN_SIZE}",
            f"Use one of {', '.join(map(str, SIZES))}.",
        )
    unknown = sorted(options.skip - set(SKIP_KINDS))
    if unknown:
        raise DatasetError(
            f"--skip {','.join(unknown)}: unknown kind", f"--skip takes {', '.join(SKIP_KINDS)} (comma-separated)"
        )
    if options.repeats is not None and options.repeats < 1:
        raise DatasetError(f"--repeats {options.repeats} must be at least 1", "Leave it out to let `plan` choose.")
    return caption, reg_caption


@contextlib.contextmanager
def dataset_lock(dataset_dir: Path) -> Iterator[None]:
    """An OS lock (flock) on the dataset folder itself, held for the whole prepare: the kernel frees it
    when the process ends, kill -9 included, and it leaves no file in the dataset."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(dataset_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(
                f"dataset folder {dataset_dir} is being written by another `kohya-wrap prepare`; "
                "one prepare at a time writes a dataset folder",
                "wait for the other prepare to end (or stop it), then run this one again",
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Placing:
    """What placing the outputs of one prepare needs besides its groups and their workers' outcomes."""

    dataset_dir: Path
    staging: Path
    reuse_index: dict[tuple[bool, str], manifest.Reusable]
    skip_kinds: frozenset[str]
    detected: bool  # a face detector ran
    identity_model: str | None
    identity_note: str


@dataclass
class _Placed:
    """What the groups' placing gave: the outputs, the subsets, the photos left out, the identity check."""

    check: IdentityCheck
    images: list[OutputImage]
    subsets: list[Subset]
    skipped: list[Finding]
    reused: int = 0


def _prepare_locked(options: PrepareOptions, on_progress: Callable[[int, int], None] | None) -> PrepareResult:
    src_dir, reg_dir, dataset_dir = _check_paths(options)
    captions = _check_options(options)

    old = manifest.load(dataset_dir) if dataset_dir.is_dir() else None
    # a staging folder without a manifest: a prepare of ours stopped after its swap; its img/ is ours to replace
    interrupted = old is None and (dataset_dir / STAGING_NAME).is_dir()
    _check_dataset_dir(dataset_dir, old, src_dir, options.force or interrupted)
    parameters = _parameters(options, reg_dir)
    detector = faces.detector_name() if options.crop == "face" else None
    identity_model, identity_note = _identity_model(options)
    key = manifest.image_key(parameters, detector, identity_model)
    groups, discovered = _groups(options, (src_dir, reg_dir, dataset_dir), captions)
    # Every file left out, with its reason, is "skipped"; the rest of discovery's findings are notes.
    skipped = [f for f in discovered if f.code.startswith("skipped_")]
    findings = [f for f in discovered if not f.code.startswith("skipped_")]

    staging = _staging(dataset_dir)
    placing = _Placing(
        dataset_dir=dataset_dir,
        staging=staging,
        reuse_index=manifest.reusable(old, dataset_dir, key),
        skip_kinds=_skip_kinds(options),
        detected=detector is not None,
        identity_model=identity_model,
        identity_note=identity_note,
    )
    tasks = _tasks(groups, options, placing, detector)
    outcomes = _run_staged(tasks, options.jobs, on_progress, staging)
    placed = _place_groups(groups, tasks, outcomes, placing)
    skipped += placed.skipped
    findings += skipped + lint.lint(placed.images, detector, options.crop, placed.check)
    findings += _swap_in(dataset_dir, staging, old is not None or interrupted)
    document = manifest.PrepareManifest(
        schema=manifest.SCHEMA,
        kohya_wrap_version=__version__,
        parameters=parameters,
        image_key=key,
        face_detection=_detection(detector, options),
        identity=placed.check.summary(),
        source_dir=str(src_dir),
        reg_source_dir=str(reg_dir) if reg_dir is not None else None,
        subsets=tuple(placed.subsets),
        images=tuple(placed.images),
        skipped=tuple(skipped),
        findings=tuple(findings),
    )
    manifest_path = manifest.write(dataset_dir, document)
    shutil.rmtree(staging, ignore_errors=True)
    return _result(document, manifest_path, placed, _removed(old, placed.images))


def _result(document: manifest.PrepareManifest, path: Path, placed: _Placed, removed: int) -> PrepareResult:
    return PrepareResult(
        dataset_dir=path.parent,
        manifest_path=path,
        subsets=document.subsets,
        images=document.images,
        findings=document.findings,
        processed=len(placed.images) - placed.reused,
        reused=placed.reused,
        skipped=len(document.skipped),
        removed=removed,
        face_detection=document.face_detection,
        identity=placed.check,
    )


def _run_staged(
    tasks: list[worker.Task], jobs: int | None, on_progress: Callable[[int, int], None] | None, staging: Path
) -> list[worker.Outcome]:
    try:
        return _run(tasks, jobs, on_progress)
    except OSError:
        # a full disk: give back the space of the half-built images; the staging folder itself stays,
        # so plan knows this folder is unfinished until a prepare completes
        shutil.rmtree(staging / "work", ignore_errors=True)
        raise


def _detection(detector: str | None, options: PrepareOptions) -> str:
    """The face detector used, or why none was (prepare.json `face_detection`)."""
    if detector is not None:
        return detector
    return "not asked (--crop center)" if options.crop == "center" else faces.FACES_UNAVAILABLE


def _staging(dataset_dir: Path) -> Path:
    """A fresh staging folder, with its work/ folder for the workers' outputs."""
    staging = dataset_dir / STAGING_NAME
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run; ours, hidden, never a final output
    (staging / "work").mkdir(parents=True)
    return staging


def _parameters(options: PrepareOptions, reg_dir: Path | None) -> manifest.PrepareParameters:
    return manifest.PrepareParameters(
        token=options.token,
        class_word=options.class_word,
        size=options.size,
        crop=options.crop,
        repeats=options.repeats if options.repeats is not None else DEFAULT_REPEATS,
        repeats_explicit=options.repeats is not None,
        caption=options.caption,
        allow_upscale=options.allow_upscale,
        skip_multiple_faces=options.skip_multiple_faces,
        skip=tuple(sorted(_skip_kinds(options))),
        reg=reg_dir is not None,
    )


def _removed(old: manifest.PrepareManifest | None, images: list[OutputImage]) -> int:
    """Earlier outputs not in the dataset any more: their source is gone, or left out now (--skip, unreadable)."""
    current = {(i.is_reg, i.source) for i in images}
    return sum(1 for e in (old.images if old is not None else ()) if (e.is_reg, e.source) not in current)


def _groups(
    options: PrepareOptions, folders: tuple[Path, Path | None, Path], captions: tuple[str, str]
) -> tuple[list[_Group], list[Finding]]:
    """The training photos' group (and the regularization images', with --reg), and what discovery found."""
    src_dir, reg_dir, dataset_dir = folders
    caption, reg_caption = captions
    repeats = options.repeats if options.repeats is not None else DEFAULT_REPEATS
    train_found = sources.discover(src_dir, exclude=dataset_dir)
    if not train_found.files:
        left_out = [f for f in train_found.findings if f.code.startswith("skipped_")]
        why = (
            f" ({len(left_out)} other file(s) left out, e.g. {left_out[0].file}: {left_out[0].message})"
            if left_out
            else ""
        )
        raise DatasetError(
            f"no photos found in {src_dir}{why}",
            f"Give the folder that holds the photos (searched with its subfolders; "
            f"{', '.join(sorted(sources.PHOTO_EXTENSIONS))} files).",
        )
    class_tokens = f"{options.token} {options.class_word}"
    subset_dir = f"{TRAIN_DIR}/{subset_dir_name(repeats, class_tokens)}"
    groups = [_Group(False, src_dir, subset_dir, class_tokens, repeats, caption, train_found.files)]
    discovered: list[Finding] = list(train_found.findings)
    if reg_dir is not None:
        reg_found = sources.discover(reg_dir, exclude=dataset_dir)
        reg_subset = f"{REG_DIR}/{subset_dir_name(REG_REPEATS, options.class_word)}"
        groups.append(_Group(True, reg_dir, reg_subset, options.class_word, REG_REPEATS, reg_caption, reg_found.files))
        discovered += [_as_reg(f) for f in reg_found.findings]
    discovered += _kohya_folder_name(src_dir, options.repeats, groups[0].subset_dir)
    return groups, discovered


def _tasks(groups: list[_Group], options: PrepareOptions, placing: _Placing, detector: str | None) -> list[worker.Task]:
    tasks: list[worker.Task] = []
    for group in groups:
        reusable = frozenset(sha for (is_reg, sha) in placing.reuse_index if is_reg == group.is_reg)
        for source in group.files:
            tasks.append(
                worker.Task(
                    index=len(tasks),
                    path=str(source.path),
                    rel=source.rel,
                    is_reg=group.is_reg,
                    size=options.size,
                    crop=options.crop,
                    detector=detector,
                    allow_upscale=options.allow_upscale,
                    staged=str(placing.staging / "work" / f"{len(tasks):06d}{OUTPUT_EXTENSION}"),
                    reusable=reusable,
                    identity=placing.identity_model is not None and not group.is_reg,
                )
            )
    return tasks


def _place_groups(
    groups: list[_Group], tasks: list[worker.Task], outcomes: list[worker.Outcome], placing: _Placing
) -> _Placed:
    placed = _Placed(IdentityCheck(model=None, note=placing.identity_note), [], [], [])
    for group in groups:
        images, group_skipped, group_check, reused = _place(
            group, [t for t in tasks if t.is_reg == group.is_reg], outcomes, placing
        )
        if group_check is not None:
            placed.check = group_check
        placed.images += images
        placed.skipped += group_skipped
        placed.reused += reused
        placed.subsets.append(
            Subset(
                dir=group.subset_dir,
                is_reg=group.is_reg,
                repeats=group.repeats,
                class_tokens=group.class_tokens,
                images=len(images),
            )
        )
    return placed


def _kohya_folder_name(src_dir: Path, repeats: int | None, subset_dir: str) -> list[Finding]:
    """A photo folder named like a Kohya GUI folder (10_ohwx woman): its number is not taken as the repeats."""
    parsed = parse_subset_dir_name(src_dir.name)
    if parsed is None or repeats is not None or parsed.repeats == DEFAULT_REPEATS:
        return []
    return [
        Finding(
            "kohya_folder_name",
            "warning",
            "",
            f"the photo folder {src_dir.name!r} is named like a Kohya folder of {parsed.repeats} repeats; prepare "
            f"does not take repeats from a name: it writes {subset_dir} and `plan` chooses the repeats",
            f"add --repeats {parsed.repeats} to keep {parsed.repeats} (plan then chooses only the epochs)",
        )
    ]


def _identity_model(options: PrepareOptions) -> tuple[str | None, str]:
    """The identity model that checks the training photos, or None and why it does not."""
    if not options.identity:
        return None, "identity check not asked"
    problem = identity.unavailable_reason()
    if problem is not None:
        return None, f"photos of somebody else and the pose coverage were not checked: {problem}"
    return identity.model_name(), ""


def _skip_kinds(options: PrepareOptions) -> frozenset[str]:
    return options.skip | ({"multi-face"} if options.skip_multiple_faces else set())


def _keepers(tasks: list[worker.Task], outcomes: list[worker.Outcome]) -> dict[str, str]:
    """Of byte-identical sources, the one kept: one without a copy suffix ("IMG_1.jpg" over "IMG_1 (1).jpg"),
    then the shortest name ("IMG_1.jpg" over "IMG_1-1.jpg", which could be a burst's name), then the first."""
    by_sha: dict[str, list[worker.Task]] = {}
    for task in tasks:
        outcome = outcomes[task.index]
        if outcome.skip is None and outcome.sha256:
            by_sha.setdefault(outcome.sha256, []).append(task)

    def preference(t: worker.Task) -> tuple[bool, int, int]:
        return sources.has_copy_suffix(t.rel), len(Path(t.rel).stem), t.index

    return {sha: min(same, key=preference).rel for sha, same in by_sha.items()}


def _skip_by_option(outcome: worker.Outcome, rel: str, skip: frozenset[str], detected: bool) -> Finding | None:
    """--skip: a photo with no face, several faces, or blurred, left out of the training set."""
    if "multi-face" in skip and (outcome.faces or 0) > 1:
        return Finding(
            "skipped_several_faces",
            "warning",
            rel,
            f"{outcome.faces} faces found; skipped (--skip multi-face)",
            "crop the photo to one person, or leave multi-face out of --skip",
        )
    if "no-face" in skip and detected and outcome.faces == 0:
        return Finding(
            "skipped_no_face",
            "warning",
            rel,
            "no face found; skipped (--skip no-face)",
            "use a photo where the face is visible, or leave no-face out of --skip",
        )
    if "blurred" in skip and outcome.sharpness < lint.BLUR_THRESHOLD:
        return Finding(
            "skipped_blurred",
            "warning",
            rel,
            f"looks blurred (sharpness {outcome.sharpness:g} < {lint.BLUR_THRESHOLD:g}); skipped (--skip blurred)",
            "use a sharper photo, or leave blurred out of --skip",
        )
    return None


def _place(
    group: _Group, tasks: list[worker.Task], outcomes: list[worker.Outcome], placing: _Placing
) -> tuple[list[OutputImage], list[Finding], IdentityCheck | None, int]:
    """One subset's outputs, numbered in source order, with captions, under `staging`; what was left out; for
    the training photos, the identity check (made before numbering, so --skip other-person leaves no gap); and
    how many outputs were reused."""
    skip_kinds = frozenset() if group.is_reg else placing.skip_kinds
    kept, skipped = _kept(group, tasks, outcomes, placing, skip_kinds)
    check = None
    if not group.is_reg:
        check = identity.judge([(t.rel, o.identity) for t, o in kept], placing.identity_model, placing.identity_note)
        if "other-person" in skip_kinds and check.other_person:
            kept, check = _skip_other_person(kept, check, skipped)
    distances = dict(check.distances) if check is not None else {}
    images: list[OutputImage] = []
    width = max(4, len(str(len(kept))))
    for number, (task, outcome) in enumerate(kept, 1):
        stem = f"{group.subset_dir}/{number:0{width}d}"
        output, caption_file = stem + OUTPUT_EXTENSION, stem + CAPTION_EXTENSION
        (placing.staging / output).parent.mkdir(parents=True, exist_ok=True)
        if outcome.status == "reuse":
            atomic_write_bytes(placing.staging / output, (placing.dataset_dir / outcome.reuse_from).read_bytes())
        else:
            os.replace(task.staged, placing.staging / output)
        atomic_write_text(placing.staging / caption_file, group.caption + "\n")
        seen = outcome.identity
        images.append(
            OutputImage(
                output=output,
                caption_file=caption_file,
                caption=group.caption,
                is_reg=group.is_reg,
                source=task.rel,
                source_sha256=outcome.sha256 or "",
                source_bytes=outcome.nbytes,
                source_size=outcome.source_size,
                crop_box=outcome.crop_box,
                face_box=outcome.face_box,
                faces=outcome.faces,
                output_sha256=outcome.output_sha256,
                phash=outcome.phash,
                sharpness=outcome.sharpness,
                frames=outcome.frames,
                identity=ImageIdentity.of(seen, distances.get(task.rel)) if seen is not None else None,
            )
        )
    return images, skipped, check, sum(1 for _, o in kept if o.status == "reuse")


def _kept(
    group: _Group,
    tasks: list[worker.Task],
    outcomes: list[worker.Outcome],
    placing: _Placing,
    skip_kinds: frozenset[str],
) -> tuple[list[tuple[worker.Task, worker.Outcome]], list[Finding]]:
    """The group's photos that go in (earlier outputs reused where intact), and those left out, with why."""
    kept: list[tuple[worker.Task, worker.Outcome]] = []
    skipped: list[Finding] = []
    keeper = _keepers(tasks, outcomes)
    for task in tasks:
        outcome = outcomes[task.index]
        if outcome.status == "reuse":
            outcome = _reuse_or_redo(task, outcome, placing.reuse_index[(group.is_reg, outcome.sha256 or "")])
        skip = outcome.skip
        if skip is None and outcome.sha256 and keeper.get(outcome.sha256, task.rel) != task.rel:
            skip = Finding(
                "skipped_duplicate",
                "warning",
                task.rel,
                f"exact duplicate of {keeper[outcome.sha256]}",
                "nothing to do; remove one copy",
            )
        if skip is None:
            skip = _skip_by_option(outcome, task.rel, skip_kinds, placing.detected)
        if skip is not None:
            skipped.append(_as_reg(skip) if group.is_reg else skip)
            continue
        kept.append((task, outcome))
    return kept, skipped


def _skip_other_person(
    kept: list[tuple[worker.Task, worker.Outcome]], check: IdentityCheck, skipped: list[Finding]
) -> tuple[list[tuple[worker.Task, worker.Outcome]], IdentityCheck]:
    """--skip other-person: the photos the check named left out (added to skipped), the poses counted again."""
    named, distance = set(check.other_person), dict(check.distances)
    for task, outcome in kept:
        if task.rel in named:
            words = lint.other_person_words(distance[task.rel], check, outcome.faces)
            skipped.append(
                Finding(
                    "skipped_other_person",
                    "warning",
                    task.rel,
                    f"{words}; skipped (--skip other-person)",
                    "check who it shows; leave other-person out of --skip to keep it",
                )
            )
    kept = [(t, o) for t, o in kept if t.rel not in named]
    return kept, replace(check, poses=identity.pose_counts([o.identity for _, o in kept]))


def _run(
    tasks: list[worker.Task], jobs: int | None, on_progress: Callable[[int, int], None] | None
) -> list[worker.Outcome]:
    workers = min(jobs or _cpu_count(), len(tasks))
    outcomes: list[worker.Outcome] = []

    def collect(results: Iterable[worker.Outcome]) -> list[worker.Outcome]:
        for outcome in results:
            outcomes.append(outcome)
            if on_progress is not None:
                on_progress(len(outcomes), len(tasks))
        return outcomes

    if workers <= 1:
        worker.init_worker()
        return collect(worker.process(t) for t in tasks)
    from concurrent.futures import ProcessPoolExecutor

    # Each worker holds one image at a time, so memory does not grow with the number of images.
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=worker.init_worker) as pool:
        return collect(pool.map(worker.process, tasks))


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (workers start at once, modules already imported), else forkserver/spawn.

    fork copies a process whose other threads vanish mid-whatever; once torch is loaded (its thread
    pools) or any thread runs, a fresh interpreter is the safe start.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _reuse_or_redo(task: worker.Task, outcome: worker.Outcome, earlier: manifest.Reusable) -> worker.Outcome:
    """The earlier output's record, if its file is intact; else the image made again."""
    entry = earlier.entry
    try:
        intact = earlier.output.is_file() and sha256_file(earlier.output) == entry.output_sha256
        if intact and (entry.identity is not None or not task.identity):
            return worker.Outcome(
                index=task.index,
                status="reuse",
                sha256=outcome.sha256,
                nbytes=outcome.nbytes,
                source_size=entry.source_size,
                crop_box=entry.crop_box,
                face_box=entry.face_box,
                faces=entry.faces,
                output_sha256=entry.output_sha256,
                phash=entry.phash,
                sharpness=entry.sharpness,
                frames=entry.frames,
                reuse_from=entry.output,
                identity=entry.identity.face() if task.identity and entry.identity is not None else None,
            )
    except (ValueError, OSError):
        pass
    return worker.process(worker.Task(**{**task.__dict__, "reusable": frozenset()}))


def _swap_in(dataset_dir: Path, staging: Path, ours: bool) -> list[Finding]:
    """Replace img/ and reg/ with the staged trees. A folder prepare did not make is moved aside, not deleted."""
    notes: list[Finding] = []
    for top in (TRAIN_DIR, REG_DIR):
        final, new = dataset_dir / top, staging / top
        if final.exists() or final.is_symlink():
            if ours:
                os.replace(final, staging / f"old-{top}")
            else:
                aside = _free_name(dataset_dir / f"{top}.before-prepare")
                os.replace(final, aside)
                notes.append(
                    Finding(
                        "moved_aside",
                        "info",
                        "",
                        f"the existing {final} was moved to {aside}",
                        "delete it when you no longer need it",
                    )
                )
        if new.exists():
            os.replace(new, final)
    return notes


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _as_reg(finding: Finding) -> Finding:
    return Finding(finding.code, finding.level, lint.reg_label(finding.file), finding.message, finding.action)


def _check_paths(options: PrepareOptions) -> tuple[Path, Path | None, Path]:
    src_dir = _existing_dir(options.src_dir, "SRC_DIR")
    reg_dir = _existing_dir(options.reg_dir, "--reg") if options.reg_dir is not None else None
    dataset_dir = Path(os.path.abspath(options.dataset_dir))
    if dataset_dir.exists() and not dataset_dir.is_dir():
        raise DatasetError(
            f"dataset folder {dataset_dir} exists and is not a folder", "Choose another -o/--output path."
        )
    real_dataset = Path(os.path.realpath(dataset_dir))
    for name, folder in (("SRC_DIR", src_dir), ("--reg", reg_dir)):
        if folder is not None and (
            Path(os.path.realpath(folder)) == real_dataset or real_dataset in Path(os.path.realpath(folder)).parents
        ):
            raise DatasetError(
                f"{name} {folder} is inside the dataset folder {dataset_dir}",
                "prepare replaces the dataset folder's contents; choose an -o/--output outside your photos.",
            )
        # the reverse: prepared PNGs inside the photo folder would be read as photos by the next prepare
        if folder is not None and Path(os.path.realpath(folder)) in real_dataset.parents:
            raise DatasetError(
                f"the dataset folder {dataset_dir} is inside {name} {folder}",
                "the next prepare of that folder would take the prepared images for photos; "
                "choose an -o/--output outside your photos.",
            )
    return src_dir, reg_dir, dataset_dir


def _existing_dir(path: Path, what: str) -> Path:
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        state = "does not exist" if not path.exists() else "is not a folder"
        raise DatasetError(f"{what} {path} {state}", "Give the folder that holds the photos.")
    return path


def _check_words(options: PrepareOptions) -> None:
    for flag, value in (("--token", options.token), ("--class", options.class_word)):
        if not value.strip():
            raise DatasetError(f"{flag} is empty", f"Give {flag} a word, e.g. --token ohwx --class man.")
        if _BAD_NAME.search(value) or value != value.strip():
            raise DatasetError(
                f"{flag} {value!r} cannot be part of a folder name (slash, tab, newline, or leading/trailing space)",
                f"Give {flag} plain words.",
            )
    if any(ch.isspace() for ch in options.token):
        raise DatasetError(
            f"--token {options.token!r} contains a space",
            "The token is one rare word (e.g. ohwx); put the rest in --class.",
        )


def _check_same_source(dataset_dir: Path, old: manifest.PrepareManifest, src_dir: Path, force: bool) -> None:
    """A dataset prepared from other photos is not replaced unasked: a run planned on it would train on
    photos its plan never saw, and the other photos' crops would be gone."""
    if force or os.path.realpath(old.source_dir) == os.path.realpath(src_dir):
        return
    raise DatasetError(
        f"dataset folder {dataset_dir} was prepared from {old.source_dir}, not {src_dir}: "
        "preparing it from other photos would replace its images",
        "Choose a new -o/--output folder for these photos, or add --force to replace its img/ and reg/ "
        "(they are moved aside, not deleted).",
    )


def _check_dataset_dir(dataset_dir: Path, old: manifest.PrepareManifest | None, src_dir: Path, force: bool) -> None:
    if old is not None:
        _check_same_source(dataset_dir, old, src_dir, force)
        return
    if force or not dataset_dir.is_dir():
        return
    contents = [p.name for p in dataset_dir.iterdir() if p.name != STAGING_NAME]
    if contents:
        shown = ", ".join(sorted(contents)[:5]) + (", ..." if len(contents) > 5 else "")
        raise DatasetError(
            f"dataset folder {dataset_dir} is not empty ({shown}) and has no {manifest.MANIFEST_NAME}: "
            "prepare did not make it",
            "Choose a new or empty -o/--output folder, or add --force to replace its img/ and reg/ "
            "(they are moved aside, not deleted).",
        )
