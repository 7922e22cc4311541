"""prepare_dataset end to end on generated photos (and a real one with a face, from scikit-image)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kohya_wrap.codec import to_builtins
from kohya_wrap.errors import DatasetError
from kohya_wrap.prepare import PrepareOptions, PrepareResult, prepare_dataset
from kohya_wrap.prepare import pipeline as pipeline_module
from kohya_wrap.prepare import worker as worker_module
from kohya_wrap.sdscripts import layout

SUBSET = f"{layout.TRAIN_DIR}/{layout.subset_dir_name(layout.DEFAULT_REPEATS, 'ohwx man')}"


def photo(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A sharp, structured, non-face test image; different seeds give clearly different images."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (12, 16, 3), np.uint8)
    base = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8))


def save(path: Path, im: Image.Image, fmt: str = "JPEG", **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kwargs)
    return path


def make_src(folder: Path, count: int = 3, size: tuple[int, int] = (800, 600)) -> Path:
    for n in range(count):
        save(folder / f"IMG_{n:03d}.jpg", photo(n, size), quality=92)
    return folder


def prepare(src: Path, out: Path, **kwargs) -> PrepareResult:
    options = {"token": "ohwx", "class_word": "man", "crop": "center", "jobs": 1, **kwargs}
    return prepare_dataset(PrepareOptions(src_dir=src, dataset_dir=out, **options))


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> sha256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def codes(result: PrepareResult) -> dict[str, str]:
    """file -> its first finding's code."""
    found: dict[str, str] = {}
    for f in result.findings:
        if f.file:
            found.setdefault(f.file, f.code)
    return found


def all_codes(result: PrepareResult, file: str) -> set[str]:
    return {f.code for f in result.findings if f.file == file}


def test_layout_captions_and_manifest(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src")
    out = tmp_path / "dataset"
    result = prepare(src, out)
    assert sorted(tree(out)) == [f"{SUBSET}/{n:04d}{ext}" for n in (1, 2, 3) for ext in (".png", ".txt")] + [
        "prepare.json"
    ]
    for n in (1, 2, 3):
        assert (out / SUBSET / f"{n:04d}.txt").read_bytes() == b"photo of ohwx man\n"
        with Image.open(out / SUBSET / f"{n:04d}.png") as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (512, 512))
            assert not im.info  # no timestamps, text, ICC or EXIF chunks
    parsed = layout.parse_subset_dir_name(SUBSET.split("/")[1])
    assert parsed is not None and (parsed.repeats, parsed.class_tokens) == (layout.DEFAULT_REPEATS, "ohwx man")
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["parameters"] == {
        "token": "ohwx",
        "class": "man",
        "size": 512,
        "crop": "center",
        "repeats": 1,
        "repeats_explicit": False,
        "caption": "photo of {token} {class}",
        "allow_upscale": False,
        "skip_multiple_faces": False,
        "skip": [],
        "reg": False,
    }
    assert manifest["kohya_wrap_version"]
    first = manifest["images"][0]
    assert first["source"] == "IMG_000.jpg" and first["output"] == f"{SUBSET}/0001.png"
    assert first["source_sha256"] == hashlib.sha256((src / "IMG_000.jpg").read_bytes()).hexdigest()
    assert first["output_sha256"] == hashlib.sha256((out / SUBSET / "0001.png").read_bytes()).hexdigest()
    assert first["source_size"] == [800, 600] and first["crop_box"] == [100, 0, 700, 600]
    assert first["face_box"] is None and first["faces"] is None
    assert result.processed == 3 and result.reused == 0 and result.skipped == 0
    assert [to_builtins(s) for s in result.subsets] == [
        {"dir": SUBSET, "is_reg": False, "repeats": 1, "class_tokens": "ohwx man", "images": 3}
    ]


def test_repeats_template_size_and_regularization(tmp_path: Path) -> None:
    src, reg = make_src(tmp_path / "src", 2, (1000, 800)), tmp_path / "reg"
    save(reg / "r1.png", photo(50, (900, 900)), "PNG")
    out = tmp_path / "dataset"
    result = prepare(src, out, repeats=10, caption="{token}, a {class}", reg_dir=reg, size=768)
    train = f"{layout.TRAIN_DIR}/{layout.subset_dir_name(10, 'ohwx man')}"
    regdir = f"{layout.REG_DIR}/{layout.subset_dir_name(1, 'man')}"
    assert sorted(tree(out)) == sorted(
        [
            f"{train}/0001.png",
            f"{train}/0001.txt",
            f"{train}/0002.png",
            f"{train}/0002.txt",
            f"{regdir}/0001.png",
            f"{regdir}/0001.txt",
            "prepare.json",
        ]
    )
    assert (out / train / "0001.txt").read_text() == "ohwx, a man\n"
    assert (out / regdir / "0001.txt").read_text() == "a man\n"  # the token and the separator it leaves go
    with Image.open(out / regdir / "0001.png") as im:
        assert im.size == (768, 768)
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["parameters"]["repeats"] == 10 and manifest["parameters"]["repeats_explicit"] is True
    assert [s.is_reg for s in result.subsets] == [False, True]


def test_reg_caption_drops_the_token(tmp_path: Path) -> None:
    src, reg = make_src(tmp_path / "src", 1), tmp_path / "reg"
    save(reg / "r1.jpg", photo(60))
    out = tmp_path / "dataset"
    prepare(src, out, reg_dir=reg)
    regdir = f"{layout.REG_DIR}/{layout.subset_dir_name(1, 'man')}"
    assert (out / regdir / "0001.txt").read_text() == "photo of man\n"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("photo of {tokn} {class}", "unknown placeholder {tokn}"),
        ("{token!r}", "unknown placeholder {token!r}"),
        ("{token:>9}", "unknown placeholder {token:>9}"),
        ("photo {}", "unknown placeholder {}"),
        ("photo of {token", "malformed"),
        ("   ", "empty caption"),
    ],
)
def test_caption_template_errors(tmp_path: Path, template: str, fragment: str) -> None:
    src = make_src(tmp_path / "src", 1)
    with pytest.raises(DatasetError) as e:
        prepare(src, tmp_path / "out", caption=template)
    assert fragment in e.value.message and e.value.hint
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"token": "oh wx"}, "contains a space"),
        ({"token": ""}, "--token is empty"),
        ({"class_word": "a/b"}, "cannot be part of a folder name"),
        ({"repeats": 0}, "--repeats 0"),
        ({"size": 100}, "--size 100"),
        ({"size": 56}, "--size 56"),
    ],
)
def test_bad_words_and_numbers(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    src = make_src(tmp_path / "src", 1)
    with pytest.raises(DatasetError) as e:
        prepare(src, tmp_path / "out", **kwargs)
    assert fragment in e.value.message


def test_missing_source_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out")


def bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def test_every_bad_input_is_skipped_with_a_reason_and_the_batch_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(src / "good.jpg", photo(1))
    good_bytes = (src / "good.jpg").read_bytes()
    (src / "zero.jpg").write_bytes(b"")
    (src / "notes-renamed.jpg").write_bytes(b"not an image at all\n" * 10)
    (src / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 3])
    corrupt = bytearray(good_bytes)
    corrupt[20:400] = bytes(380)  # the header's tables gone
    (src / "corrupt.jpg").write_bytes(bytes(corrupt))
    (src / "bomb.png").write_bytes(bomb_png())
    save(src / "small.png", photo(2, (300, 200)), "PNG")
    (src / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (src / "good_copy.jpg").write_bytes(good_bytes)
    frames = [photo(3), photo(4)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    result = prepare(src, tmp_path / "out")
    found = codes(result)
    assert found["zero.jpg"] == "skipped_empty"
    assert found["notes-renamed.jpg"] == "skipped_not_image"
    assert found["truncated.jpg"] == "skipped_truncated"
    assert found["corrupt.jpg"] == "skipped_corrupt"
    assert found["bomb.png"] == "skipped_too_large"
    assert found["small.png"] == "skipped_too_small"
    assert found["movie.mp4"] == "skipped_unsupported"
    assert found["good_copy.jpg"] == "skipped_duplicate"
    assert found["anim.gif"] == "animated"
    assert [i.source for i in result.images] == ["anim.gif", "good.jpg"]
    assert result.skipped == 8
    messages = {f.file: f for f in result.findings}
    assert "300x200" in messages["small.png"].message and "--allow-upscale" in messages["small.png"].action
    assert "exact duplicate of good.jpg" in messages["good_copy.jpg"].message
    manifest = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert {s["file"]: s["code"] for s in manifest["skipped"]} == {
        f: c for f, c in found.items() if c.startswith("skipped_")
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 2)
    locked = src / "IMG_001.jpg"
    locked.chmod(0)
    try:
        result = prepare(src, tmp_path / "out")
    finally:
        locked.chmod(0o644)
    assert codes(result)["IMG_001.jpg"] == "skipped_unreadable"
    assert [i.source for i in result.images] == ["IMG_000.jpg"]


def test_unreadable_file_is_skipped_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_src(tmp_path / "src", 2)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "IMG_001.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = prepare(src, tmp_path / "out")
    assert codes(result)["IMG_001.jpg"] == "skipped_unreadable"
    assert "Permission denied" in {f.file: f.message for f in result.findings}["IMG_001.jpg"]


def test_too_small_is_kept_with_allow_upscale(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(src / "small.jpg", photo(5, (400, 300)))
    result = prepare(src, tmp_path / "out", allow_upscale=True)
    assert [i.source for i in result.images] == ["small.jpg"]
    with Image.open(tmp_path / "out" / SUBSET / "0001.png") as im:
        assert im.size == (512, 512)


def test_sources_are_never_modified(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 3)
    exif = Image.Exif()
    exif[0x0112] = 6
    save(src / "rotated.jpg", photo(9), exif=exif.tobytes())
    save(src / "alpha.png", photo(10).convert("RGBA"), "PNG")
    before = tree(src)
    stats = {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in src.rglob("*")}
    prepare(src, tmp_path / "out")
    prepare(src, tmp_path / "out")
    prepare(src, tmp_path / "out", size=768)
    assert tree(src) == before
    assert {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in src.rglob("*")} == stats


def test_orientation_is_applied_before_cropping(tmp_path: Path) -> None:
    src = tmp_path / "src"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 800x600, shown 600x800
    save(src / "portrait.jpg", photo(11), exif=exif.tobytes())
    result = prepare(src, tmp_path / "out")
    (image,) = result.images
    assert image.source_size == (600, 800) and image.crop_box == (0, 100, 600, 700)


def test_same_sources_and_parameters_give_identical_bytes(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 4)
    save(src / "sub/alpha.png", photo(12).convert("RGBA"), "PNG")
    a = prepare(src, tmp_path / "a", jobs=1)
    b = prepare(src, tmp_path / "b", jobs=2)
    tree_a, tree_b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert tree_a == tree_b  # every PNG, caption, and prepare.json itself
    assert [to_builtins(i) for i in a.images] == [to_builtins(i) for i in b.images]


def test_pool_without_fork_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    src = make_src(tmp_path / "src", 3)
    forked = prepare(src, tmp_path / "a", jobs=2)
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # as after a model build
    assert pipeline_module._pool_context().get_start_method() != "fork"
    fresh = prepare(src, tmp_path / "b", jobs=2)
    assert [to_builtins(i) for i in forked.images] == [to_builtins(i) for i in fresh.images]
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_second_run_reuses_and_follows_changes(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 4, (1000, 800))
    out = tmp_path / "out"
    first = prepare(src, out)
    first_tree = tree(out)
    again = prepare(src, out)
    assert (again.processed, again.reused, again.removed) == (0, 4, 0)
    assert tree(out) == first_tree

    save(src / "IMG_001.jpg", photo(101, (1000, 800)))  # changed content
    (src / "IMG_002.jpg").unlink()  # removed
    changed = prepare(src, out)
    assert (changed.processed, changed.reused, changed.removed) == (1, 2, 1)  # IMG_001 changed, IMG_002 gone
    assert [i.source for i in changed.images] == ["IMG_000.jpg", "IMG_001.jpg", "IMG_003.jpg"]
    assert sorted(p.name for p in (out / SUBSET).iterdir()) == [
        "0001.png",
        "0001.txt",
        "0002.png",
        "0002.txt",
        "0003.png",
        "0003.txt",
    ]
    entries = {e["source"]: e for e in json.loads((out / "prepare.json").read_text())["images"]}
    assert set(entries) == {"IMG_000.jpg", "IMG_001.jpg", "IMG_003.jpg"}
    assert entries["IMG_003.jpg"]["output_sha256"] == first.images[3].output_sha256
    for entry in entries.values():
        assert hashlib.sha256((out / entry["output"]).read_bytes()).hexdigest() == entry["output_sha256"]

    renamed = prepare(src, out, token="sks", repeats=5)  # captions and folders change, pixels do not
    assert (renamed.processed, renamed.reused) == (0, 3)
    assert not (out / SUBSET).exists()
    new_subset = out / layout.TRAIN_DIR / layout.subset_dir_name(5, "sks man")
    assert (new_subset / "0001.txt").read_text() == "photo of sks man\n"

    (src / "IMG_003.jpg").unlink()
    bigger = prepare(src, out, size=768)
    assert (bigger.processed, bigger.reused, bigger.removed) == (2, 0, 1)


def test_damaged_earlier_output_is_made_again(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 2)
    out = tmp_path / "out"
    first = prepare(src, out)
    (out / SUBSET / "0001.png").write_bytes(b"garbage")
    second = prepare(src, out)
    assert (second.processed, second.reused) == (1, 1)
    assert (out / SUBSET / "0001.png").read_bytes() != b"garbage"
    assert second.images[0].output_sha256 == first.images[0].output_sha256


def test_interrupted_run_leaves_the_previous_dataset_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_src(tmp_path / "src", 3)
    out = tmp_path / "out"
    prepare(src, out)
    before = tree(out)
    save(src / "IMG_001.jpg", photo(77))
    real_process = worker_module.process
    calls = []

    def interrupted(task):
        calls.append(task.rel)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_process(task)

    monkeypatch.setattr(worker_module, "process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out)
    after = {k: v for k, v in tree(out).items() if not k.startswith(pipeline_module.STAGING_NAME)}
    assert after == before
    monkeypatch.setattr(worker_module, "process", real_process)
    resumed = prepare(src, out)
    assert not (out / pipeline_module.STAGING_NAME).exists()
    assert (resumed.processed, resumed.reused) == (1, 2)


def test_interrupted_first_run_leaves_no_image_under_a_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_src(tmp_path / "src", 3)
    out = tmp_path / "out"

    def fail_swap(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module, "_swap_in", fail_swap)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out)
    visible = [p for p in out.rglob("*") if not p.relative_to(out).as_posix().startswith(".")]
    assert visible == []  # only the hidden staging folder, which sd-scripts never scans
    monkeypatch.undo()
    assert prepare(src, out).processed == 3  # the leftover staging folder does not count as foreign content


def test_non_empty_folder_prepare_did_not_make_is_refused_then_moved_aside_with_force(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 1)
    out = tmp_path / "out"
    (out / "img" / "10_someone").mkdir(parents=True)
    (out / "img" / "10_someone" / "mine.png").write_bytes(b"precious")
    with pytest.raises(DatasetError) as e:
        prepare(src, out)
    assert "has no prepare.json" in e.value.message and "--force" in e.value.hint
    result = prepare(src, out, force=True)
    assert (out / "img.before-prepare" / "10_someone" / "mine.png").read_bytes() == b"precious"
    assert "moved_aside" in {f.code for f in result.findings}
    assert (out / SUBSET / "0001.png").is_file()


def test_source_inside_the_dataset_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = make_src(out / "img", 1)
    with pytest.raises(DatasetError, match="inside the dataset folder"):
        prepare(src, out, force=True)
    assert (src / "IMG_000.jpg").is_file()


def test_dataset_folder_inside_the_source_folder_is_refused(tmp_path: Path) -> None:
    # the next prepare of the photo folder (to another -o) would read the prepared PNGs as photos
    src = make_src(tmp_path / "src", 2)
    with pytest.raises(DatasetError, match="is inside SRC_DIR"):
        prepare(src, src / "dataset")
    assert not (src / "dataset").exists()


def test_non_ascii_names_and_spaces(tmp_path: Path) -> None:
    src = tmp_path / "фото с пробелами"
    save(src / "Ünïcödé 写真 1.jpg", photo(21))
    save(src / "sub folder" / "ça va.PNG", photo(22), "PNG")
    out = tmp_path / "набор данных" / "out dir"
    result = prepare(src, out, token="ohwx", class_word="young man")
    assert [i.source for i in result.images] == ["sub folder/ça va.PNG", "Ünïcödé 写真 1.jpg"]
    subset = out / layout.TRAIN_DIR / layout.subset_dir_name(1, "ohwx young man")
    assert sorted(p.name for p in subset.iterdir()) == ["0001.png", "0001.txt", "0002.png", "0002.txt"]
    manifest = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    assert manifest["images"][1]["source"] == "Ünïcödé 写真 1.jpg"


# --- faces: a real photo (scikit-image ships NASA's portrait of astronaut Eileen Collins) ---


def astronaut() -> Image.Image:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image (the [dev] extra) is not installed: no real face photo")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    return Image.open(path).convert("RGB")


needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="the [faces] extra is not installed")
# Where the face is in astronaut.png (512x512), from OpenCV's frontal cascade: x 177-272, y 66-161.
ASTRONAUT_FACE = (177, 66, 272, 161)


@needs_cv2
def test_face_off_centre_in_a_real_photo_is_cropped_around_the_face(tmp_path: Path) -> None:
    portrait = astronaut().resize((1024, 1024), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (3000, 2000), (70, 90, 110))
    offset = (1900, 300)  # right side: a centre crop (500-2500) would cut through the face
    canvas.paste(portrait, offset)
    src = tmp_path / "src"
    save(src / "astronaut on a wall.jpg", canvas, quality=92)
    result = prepare(src, tmp_path / "out", crop="face")
    (image,) = result.images
    expected = tuple(offset[i % 2] + 2 * v for i, v in enumerate(ASTRONAUT_FACE))
    face = image.face_box
    assert face is not None and image.faces == 1
    # The detected box is the astronaut's face (within a tenth of its size).
    assert max(abs(a - b) for a, b in zip(face, expected, strict=True)) < 0.1 * (expected[2] - expected[0])
    left, top, right, bottom = image.crop_box
    side = right - left
    assert left <= face[0] and top <= face[1] and face[2] <= right and face[3] <= bottom
    face_side = face[2] - face[0]
    assert face[1] - top >= 0.3 * face_side  # headroom for hair
    assert bottom - face[3] >= 0.6 * face_side  # chin, neck and some shoulders
    assert side >= 2 * face_side and right <= 3000 and bottom <= 2000
    assert not any(f.code in ("no_face", "several_faces") for f in result.findings)
    # The output shows the face region: compare with a direct crop of the canvas.
    expected_out = canvas.resize((512, 512), Image.Resampling.LANCZOS, box=image.crop_box)
    with Image.open(tmp_path / "out" / SUBSET / "0001.png") as out:
        error = np.abs(np.asarray(out, np.int16) - np.asarray(expected_out, np.int16)).mean()
    assert error < 4


@needs_cv2
def test_several_faces_use_the_largest_or_skip(tmp_path: Path) -> None:
    face = astronaut()
    canvas = Image.new("RGB", (1400, 800), (200, 200, 200))
    canvas.paste(face.resize((640, 640)), (700, 80))
    canvas.paste(face, (40, 150))
    src = tmp_path / "src"
    save(src / "two.jpg", canvas, quality=92)
    result = prepare(src, tmp_path / "out", crop="face")
    (image,) = result.images
    assert image.faces == 2
    assert image.face_box is not None and image.face_box[0] > 700  # the larger one
    assert "several_faces" in all_codes(result, "two.jpg")
    skipped = prepare(src, tmp_path / "out2", crop="face", skip_multiple_faces=True)
    assert skipped.images == () and codes(skipped)["two.jpg"] == "skipped_several_faces"


@needs_cv2
def test_no_face_is_centre_cropped_and_reported(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 1)
    result = prepare(src, tmp_path / "out", crop="face")
    (image,) = result.images
    assert image.faces == 0 and image.crop_box == (100, 0, 700, 600)
    assert codes(result)["IMG_000.jpg"] == "no_face"
    assert result.face_detection.startswith("opencv-haar")


def test_without_opencv_every_image_is_centre_cropped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real_find_spec(name, *a)
    )
    src = make_src(tmp_path / "src", 2)
    result = prepare(src, tmp_path / "out", crop="face")
    assert [i.crop_box for i in result.images] == [(100, 0, 700, 600)] * 2
    unavailable = [f for f in result.findings if f.code == "faces_unavailable"]
    assert [f.files for f in unavailable] == [("IMG_000.jpg", "IMG_001.jpg")]
    assert "pip install 'opencv-python-headless" in unavailable[0].message
    assert "face detection unavailable" in result.face_detection


def test_staging_folder_is_gone_after_a_run(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 1)
    out = tmp_path / "out"
    prepare(src, out)
    assert sorted(p.name for p in out.iterdir()) == [layout.TRAIN_DIR, "prepare.json"]
    shutil.rmtree(out)
