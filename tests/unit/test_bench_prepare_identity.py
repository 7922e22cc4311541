"""bench/prepare_identity.py says when its figures cannot match docs/prepare.md's (photos absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_prepare_identity", ROOT / "bench" / "prepare_identity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_prepare_identity"] = module
    spec.loader.exec_module(module)
    return module


def test_the_bench_says_when_face_recognitions_photos_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load_bench()
    monkeypatch.setattr(bench, "archive", lambda: None)
    note = bench.missing_photos_note()
    assert note is not None and "face_recognition-1.3.0.tar.gz" in note and "docs/prepare.md" in note
    assert "pip download" in note
    monkeypatch.setattr(bench, "archive", lambda: ROOT / "any.tar.gz")
    assert bench.missing_photos_note() is None
