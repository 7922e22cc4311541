"""`kohya-wrap score` on a run the real sd-scripts trained: the smoke preset (a random-weight model,
4 steps at 64 px, samples at steps 2 and 4) draws no face, and score says so plainly, exit 0.

The base model is built once into real_cache_dir (about 45 s, 4 GB peak) and reused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None,
    reason="score's identity model is not installed: pip install 'kohya-wrap[score]'",
)


def test_the_smoke_run_is_scored_and_nothing_is_recommended_because_it_draws_no_face(
    real_cache_dir: Path, tmp_path: Path
) -> None:
    from kohya_wrap.smoke.basemodel import ensure_base_model

    ensure_base_model(real_cache_dir / "models")
    keep = tmp_path / "keep"
    env = {**os.environ, "KOHYA_WRAP_HOME": str(real_cache_dir), "HF_HUB_OFFLINE": "1"}
    smoke = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "smoke", "--json", "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    run_dir = Path(json.loads(smoke.stdout)["run_dir"])
    result = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "score", "--json", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    doc = json.loads(result.stdout)
    assert [c["step"] for c in doc["checkpoints"]] == [2, 4]
    assert all(c["samples"] >= 1 and c["faces"] == 0 and c["likeness"] is None for c in doc["checkpoints"])
    assert [c["checkpoint"] is not None for c in doc["checkpoints"]] == [True, True]
    assert doc["recommended"] is None
    assert doc["reason"].startswith("no face in any of the")
    assert "a random-weight smoke model draws none" in doc["reason"]
    # score --json is score.json plus the advice drawn from it (docs/score.md#the-advice)
    advice = doc.pop("advice")
    assert advice["kind"] == "not_learnt" and advice["command"].startswith("kohya-wrap train --extend 1000 ")
    assert json.loads((run_dir / "score.json").read_text(encoding="utf-8")) == doc
