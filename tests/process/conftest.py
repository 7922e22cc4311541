"""The process tier trains with the fake trainer: train finds a stand-in sd-scripts checkout
(tests/fakes/run_dir.py explains the rest of the stand-in)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_fake_checkout  # noqa: E402


@pytest.fixture(scope="session")
def fake_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_checkout(tmp_path_factory.mktemp("fake-sd-scripts"))


@pytest.fixture(autouse=True)
def _fake_checkout(monkeypatch: pytest.MonkeyPatch, fake_checkout: Path) -> None:
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(fake_checkout))
