"""Test tiers.

- unit (tests/unit): pure Python, everywhere.
- process (tests/process): subprocesses of our fake trainer (tests/fakes), everywhere.
- real (tests/real): the real sd-scripts checkout and the [train] extra; skipped, with the
  reason printed, where either is absent (CI). `pytest --real-only` (or `-m real`) runs only them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
# torch and torchvision are the user's to install for their platform (README); the rest come with [train].
PLATFORM_MODULES = ("torch", "torchvision")
TRAIN_MODULES = ("accelerate", "diffusers", "transformers", "safetensors", "voluptuous", "toml")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--real-only", action="store_true", help="run only the real-trainer tier")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real_only = config.getoption("--real-only")
    selected, deselected = [], []
    skip_real: str | None = None
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("process", "real"):
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "real":
            # skipped here, at collection, so that no module-scoped fixture of the tier starts first
            skip_real = skip_real if skip_real is not None else (real_trainer_missing() or "")
            if skip_real:
                item.add_marker(pytest.mark.skip(reason=skip_real))
        if real_only and tier != "real":
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def real_trainer_missing() -> str | None:
    """Why the real tier cannot run here, or None."""
    from kohya_wrap.errors import TrainerNotFound
    from kohya_wrap.sdscripts.checkout import locate

    try:
        locate()
    except TrainerNotFound as e:
        return f"real tier skipped: {e.message}"
    missing = [m for m in PLATFORM_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"real tier skipped: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            "(install torch and torchvision for your platform, see README)"
        )
    missing = [m for m in TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"real tier skipped: the [train] extra is not installed (missing {', '.join(missing)})"
    return None


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """No test touches the user's caches or reaches a model hub."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if request.node.get_closest_marker("real") is None:
        monkeypatch.setenv("KOHYA_WRAP_HOME", str(tmp_path / "kw-home"))
        monkeypatch.delenv("KOHYA_WRAP_SD_SCRIPTS", raising=False)


@pytest.fixture(scope="session")
def real_cache_dir() -> Path:
    """Models the real tier builds (the 2 GB smoke base model) survive between test sessions."""
    path = Path(os.environ.get("KOHYA_WRAP_TEST_CACHE", Path.home() / ".cache" / "kohya-wrap-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path
