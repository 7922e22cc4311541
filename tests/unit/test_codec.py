"""kohya_wrap.codec: the one reader and writer of record files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytest

from kohya_wrap import codec


class Point(codec.Record, frozen=True):
    step: int
    loss: float
    where: Path | None = None
    outcome: Literal["ok", "failed"] = "ok"


class OldPoint(codec.Record, frozen=True):
    schema: int
    n: int


def test_non_finite_floats_round_trip_as_strings() -> None:
    for value in (math.nan, math.inf, -math.inf):
        text = codec.encode(Point(step=1, loss=value), indent=None)
        assert '"loss": "' in text  # strict JSON: no NaN token
        back = codec.decode(text, Point, source="x")
        assert (math.isnan(back.loss) and math.isnan(value)) or back.loss == value


def test_paths_and_literals_round_trip() -> None:
    record = Point(step=3, loss=0.0, where=Path("/runs/a"), outcome="failed")
    assert codec.decode(codec.encode(record), Point, source="x") == record
    assert codec.to_builtins(record) == {"step": 3, "loss": 0.0, "where": "/runs/a", "outcome": "failed"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"step": "x", "loss": 1}', "f.json: step: Expected int, got str"),
        ('{"step": 1, "loss": 1, "outcome": "maybe"}', "f.json: outcome: Invalid enum value 'maybe'"),
        ('{"loss": 1}', "f.json: Object missing required field step"),
        ('{"step": 1', "f.json: not valid JSON"),
        ("[" * 100_000, "f.json:"),
        (b"\xff\xfe", "f.json: not valid JSON"),
    ],
)
def test_bad_records_name_the_file_and_field(text: str | bytes, says: str) -> None:
    with pytest.raises(codec.RecordError) as caught:
        codec.decode(text, Point, source="f.json", hint="run it again")
    assert caught.value.message.startswith(says)
    assert caught.value.hint == "run it again"


def test_read_upgrades_older_schemas_and_names_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    with pytest.raises(codec.RecordError, match="p.json: missing: the point"):
        codec.read(path, Point, what="the point")
    path.write_text('{"schema": 1, "n": 7}')
    upgraded = codec.read(
        path, Point, what="the point", schemas={1: (OldPoint, lambda old: Point(step=old.n, loss=0.0))}
    )
    assert upgraded == Point(step=7, loss=0.0)
    codec.write(path, Point(step=2, loss=1.5))
    assert codec.read(path, Point, what="the point", schemas={1: (OldPoint, lambda old: None)}) == Point(
        step=2, loss=1.5
    )


def test_times_are_utc_to_the_second() -> None:
    text = codec.utc_now_text()
    assert text.endswith("Z") and len(text) == 20
    assert codec.parse_time(text).utcoffset() is not None
