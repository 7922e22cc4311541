"""The process tier trains with the fake trainer: train finds tests/fakes/sd-scripts as its checkout
(tests/fakes/run_dir.py explains the rest of the stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

FAKE_CHECKOUT = Path(__file__).resolve().parents[1] / "fakes" / "sd-scripts"


@pytest.fixture(autouse=True)
def _fake_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(FAKE_CHECKOUT))
