"""prepare's identity check on real faces: photos of somebody else named (and left out with --skip other-person),
a person's own photos left alone, pose coverage, and the note where dlib is absent.

Faces: ../shared/photos/people (8 people; only in this workplace) and face_recognition's sdist
(tests/score_photos.py); each test skips with the reason where its photos or dlib are absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps
from score_photos import ROOT, archive, photo_bytes, skimage_photo

from kohya_wrap.cli import cli
from kohya_wrap.errors import ExitCode
from kohya_wrap.prepare import PrepareOptions, PrepareResult, prepare_dataset
from kohya_wrap.prepare import identity as ident

PEOPLE = ROOT.parent / "shared" / "photos" / "people"


def _no_dlib() -> str | None:
    problem = ident.unavailable_reason()
    return f"prepare's identity check is not installed here ({problem})" if problem else None


def _people_reason() -> str | None:
    if (problem := _no_dlib()) is not None:
        return problem
    if not PEOPLE.is_dir():
        return f"{PEOPLE} is absent (photos of 8 people, only in this workplace; see its README)"
    return None


def _sdist_reason() -> str | None:
    if (problem := _no_dlib()) is not None:
        return problem
    if archive() is None:
        return "face_recognition's sdist is not in .cache/test-photos (see tests/score_photos.py)"
    return None


needs_people = pytest.mark.skipif(_people_reason() is not None, reason=_people_reason() or "")
needs_sdist = pytest.mark.skipif(_sdist_reason() is not None, reason=_sdist_reason() or "")


def person(name: str, target: Path) -> list[str]:
    """Copy one person's photos from ../shared/photos into target; their names."""
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for photo in sorted((PEOPLE / name).glob("*.jpg")):
        (target / photo.name).write_bytes(photo.read_bytes())
        names.append(photo.name)
    return names


def prepare(src: Path, out: Path, **kwargs: object) -> PrepareResult:
    # One process: the identity model, loaded once, serves every test of this module.
    options = {"token": "ohwx", "class_word": "person", "allow_upscale": True, "jobs": 1, **kwargs}
    return prepare_dataset(PrepareOptions(src_dir=src, dataset_dir=out, **options))  # type: ignore[arg-type]


def named(result: PrepareResult, code: str = "other_person") -> list[str]:
    return [f.file for f in result.findings if f.code == code]


@needs_people
def test_a_look_alike_slipped_in_is_named_with_its_distance_and_skip_leaves_it_out(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    own = person("jolie", src)
    (src / "zz_friend.jpg").write_bytes((PEOPLE / "perry" / "img42.jpg").read_bytes())  # this set's hardest pair
    before = {p.name: p.read_bytes() for p in src.iterdir()}

    result = prepare(src, tmp_path / "dataset")
    assert named(result) == ["zz_friend.jpg"]
    finding = next(f for f in result.findings if f.code == "other_person")
    check = result.identity
    assert check.judged == len(own) + 1 and check.other_person == ("zz_friend.jpg",)
    assert check.threshold is not None and check.median_distance is not None
    distance = dict(check.distances)["zz_friend.jpg"]
    assert distance > check.threshold > max(d for f, d in check.distances if f != "zz_friend.jpg")
    assert f"{distance:.2f} from the set's centre" in finding.message and "somebody other" in finding.message
    assert f"limit {check.threshold:.2f}" in finding.message and "--skip other-person" in finding.action
    manifest = json.loads((tmp_path / "dataset" / "prepare.json").read_text())
    assert manifest["identity"]["other_person"] == ["zz_friend.jpg"]
    assert manifest["identity"]["model"].startswith("dlib-")
    entries = {e["source"]: e["identity"] for e in manifest["images"]}
    assert entries["zz_friend.jpg"]["distance"] == distance and entries["zz_friend.jpg"]["pose"] == "frontal"
    assert len(result.images) == len(own) + 1

    # --skip other-person, through the CLI's --json: the photo is left out, the others are reused as they were.
    runner = CliRunner()
    args = ["prepare", str(src), "-o", str(tmp_path / "dataset"), "--token", "ohwx", "--class", "woman"]
    out = runner.invoke(cli, [*args, "--allow-upscale", "--skip", "other-person", "--json"], catch_exceptions=False)
    assert out.exit_code == ExitCode.OK, out.output
    data = json.loads(out.stdout)
    skipped = [f for f in data["findings"] if f["code"] == "skipped_other_person"]
    assert [f["file"] for f in skipped] == ["zz_friend.jpg"] and "skipped (--skip other-person)" in skipped[0][
        "message"
    ]
    assert not [f for f in data["findings"] if f["code"] == "other_person"]
    assert data["counts"]["images"] == len(own) and data["counts"]["reused"] == len(own)
    assert data["identity"]["other_person"] == ["zz_friend.jpg"] and data["identity"]["poses"]["frontal"] == len(own)
    assert sorted(i["source"] for i in data["images"]) == sorted(own)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # photos untouched


@needs_people
@pytest.mark.parametrize("name", ["aniston", "clooney", "jolie", "perry", "zuckerberg"])
def test_a_persons_own_photos_are_not_flagged(tmp_path: Path, name: str) -> None:
    own = person(name, tmp_path / "photos")
    result = prepare(tmp_path / "photos", tmp_path / "dataset")
    assert result.identity.judged == len(own) >= ident.MIN_FACES
    assert named(result) == [] and result.identity.other_person == ()
    assert result.identity.threshold is not None
    assert max(d for _, d in result.identity.distances) < result.identity.threshold


@needs_people
def test_in_a_group_photo_the_face_prepare_crops_on_is_the_one_judged(tmp_path: Path) -> None:
    """Two people side by side: prepare crops on the larger face, and that is the face the check compares."""
    src = tmp_path / "photos"
    person("perry", src)
    with Image.open(PEOPLE / "perry" / "img26.jpg") as a, Image.open(PEOPLE / "jolie" / "img2.jpg") as b:
        own, friend = a.convert("RGB"), b.convert("RGB")

    def side_by_side(big: Image.Image, small: Image.Image) -> Image.Image:
        big = big.resize((round(big.width * 900 / big.height), 900))
        small = small.resize((round(small.width * 500 / small.height), 500))
        canvas = Image.new("RGB", (big.width + small.width, 900), (120, 120, 120))
        canvas.paste(big, (0, 0))
        canvas.paste(small, (big.width, 200))
        return canvas

    side_by_side(friend, own).save(src / "group_friend_larger.jpg", quality=92)
    side_by_side(own, friend).save(src / "group_person_larger.jpg", quality=92)
    result = prepare(src, tmp_path / "dataset")
    assert named(result) == ["group_friend_larger.jpg"]
    finding = next(f for f in result.findings if f.code == "other_person")
    faces = {i.source: i.faces for i in result.images}
    if (faces["group_friend_larger.jpg"] or 0) > 1:
        assert "prepare cropped on the largest" in finding.message


@needs_sdist
def test_biden_among_photos_of_obama_is_named(tmp_path: Path) -> None:
    """Where ../shared/photos is absent (CI): face_recognition's sdist, with mirror images for a larger set."""
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        (src / name).write_bytes(photo_bytes(name))
    for name in ("obama2.jpg", "obama3.jpg"):
        with Image.open(src / name) as im:
            ImageOps.mirror(im.convert("RGB")).save(src / f"mirrored_{name}", quality=92)
    result = prepare(src, tmp_path / "dataset")
    assert result.identity.judged == 6
    assert named(result) == ["biden.jpg"]
    poses = dict(result.identity.poses)
    assert sum(poses.values()) == 6 and poses["frontal"] >= 4
    # The same prepare.json from two worker processes as from one: the observations are deterministic.
    prepare(src, tmp_path / "two-workers", jobs=2)
    assert (tmp_path / "two-workers" / "prepare.json").read_bytes() == (
        tmp_path / "dataset" / "prepare.json"
    ).read_bytes()


@needs_sdist
def test_pose_coverage_counts_profiles_and_warns_when_the_set_is_all_one_angle(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("obama.jpg", "obama3.jpg"):
        (src / name).write_bytes(photo_bytes(name))
        with Image.open(src / name) as im:
            ImageOps.mirror(im.convert("RGB")).save(src / f"mirrored_{name}", quality=92)
    result = prepare(src, tmp_path / "frontal")
    assert dict(result.identity.poses)["frontal"] == 4
    warning = next(f for f in result.findings if f.code == "one_angle")
    assert "all 4 photos with a known pose are frontal" in warning.message and "three-quarter" in warning.action

    # obama2.jpg turns about 28 degrees (68-landmark head pose); scikit-image's cameraman is in profile,
    # which dlib's frontal detector misses and OpenCV's profile cascade finds.
    (src / "obama2.jpg").write_bytes(photo_bytes("obama2.jpg"))
    (src / "cameraman.png").write_bytes(skimage_photo("camera.png").read_bytes())
    result = prepare(src, tmp_path / "varied")
    seen = {i.source: i.identity for i in result.images}
    assert seen["cameraman.png"] is not None and seen["cameraman.png"].pose == "profile"
    assert seen["obama2.jpg"] is not None and seen["obama2.jpg"].pose == "three-quarter"
    assert dict(result.identity.poses) == {"frontal": 4, "three-quarter": 1, "profile": 1, "unknown": 0}
    assert not [f for f in result.findings if f.code == "one_angle"]
    assert named(result) == []


def test_yaw_from_the_five_landmarks() -> None:
    eyes = [(100.0, 100.0), (130.0, 100.0), (170.0, 100.0), (200.0, 100.0)]
    assert ident.yaw_degrees([*eyes, (150.0, 140.0)]) == pytest.approx(0.0)
    # the nose base moved by NOSE_DEPTH half-distances between the eyes: atan(1), 45 degrees
    half = 35.0  # the eyes' centres are 115 and 185
    turned = ident.yaw_degrees([*eyes, (150.0 + ident.NOSE_DEPTH * half, 140.0)])
    assert abs(turned) == pytest.approx(45.0)
    assert ident.yaw_degrees([*eyes, (150.0 - ident.NOSE_DEPTH * half, 140.0)]) == pytest.approx(-turned)
    assert [ident.pose_of(y) for y in (0, -24.9, 25, 59.9, 60, -80)] == [
        "frontal",
        "frontal",
        "three-quarter",
        "three-quarter",
        "profile",
        "profile",
    ]


def test_the_threshold_follows_the_set_within_its_bounds() -> None:
    assert ident.threshold([0.2, 0.2, 0.2]) == ident.FLOOR  # a tight set: never below dlib's own same-person line
    assert ident.threshold([0.28, 0.3, 0.32]) == pytest.approx(ident.RELATIVE * 0.3)
    assert ident.threshold([0.5, 0.5, 0.5]) == ident.CEILING  # a loose set: never above the ceiling


@needs_sdist
def test_without_dlib_prepare_says_so_in_a_note_and_runs(tmp_path: Path) -> None:
    """dlib made unimportable in a subprocess: prepare still prepares, and its report and JSON carry a note."""
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        (src / name).write_bytes(photo_bytes(name))
    body = (
        "import sys; sys.modules['dlib'] = None\n"  # find_spec and import both fail, as where it is not installed
        "from kohya_wrap.cli import cli\n"
        "cli(sys.argv[1:])\n"
    )
    base = [sys.executable, "-c", body, "prepare", str(src), "--token", "ohwx", "--class", "man", "--allow-upscale"]
    env = {**os.environ, "COLUMNS": "200"}
    shown = subprocess.run([*base, "-o", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == ExitCode.OK, shown.stderr
    assert "Identity and poses: photos of somebody else and the pose coverage were not checked" in shown.stdout
    assert "pip install 'kohya-wrap[score]'" in shown.stdout
    done = subprocess.run(
        [*base, "-o", str(tmp_path / "b"), "--json", "--skip", "other-person"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    data = json.loads(done.stdout)
    assert data["identity"]["model"] is None and "dlib" in data["identity"]["note"]
    assert data["counts"]["images"] == 2 and all(i["identity"] is None for i in data["images"])
    notes = [f for f in data["findings"] if f["code"] == "identity_unchecked"]
    assert len(notes) == 1 and notes[0]["level"] == "info"


def test_the_availability_check_decides_whether_the_check_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same note through the availability check, on generated photos (no faces needed)."""
    from PIL import ImageDraw

    src = tmp_path / "photos"
    src.mkdir()
    for n in range(2):
        im = Image.new("RGB", (600, 600), (40 * n, 90, 160))
        ImageDraw.Draw(im).ellipse((150, 150, 450, 450), fill=(200, 170, 150))
        im.save(src / f"{n}.jpg", quality=92)
    monkeypatch.setattr(ident, "unavailable_reason", lambda: "the face identity model needs dlib: pip install it")
    result = prepare(src, tmp_path / "dataset", jobs=1)
    assert result.identity.model is None and "needs dlib" in result.identity.note
    assert [f.code for f in result.findings if f.code == "identity_unchecked"] == ["identity_unchecked"]
    assert all(i.identity is None for i in result.images)
