"""`kohya-wrap sweep --backend ray` on a real local Ray, started by the sweep inside a network namespace of
the test's own that holds loopback alone (`unshare -n`), so Ray's traffic can reach no other address."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BODY = Path(__file__).with_name("sweep_ray_body.py")


def namespace_problem() -> str | None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"Ray tests skipped: `{tool}` is not installed (util-linux / iproute2)"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        return f"Ray tests skipped: `unshare -n` is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_sweep_on_a_local_ray_in_a_loopback_namespace(tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray tests skipped: Ray is not installed (pip install 'kohya-wrap[ray]')")
    if importlib.util.find_spec("psutil") is None:
        pytest.skip("Ray tests skipped: psutil is not installed")
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(BODY), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-4000:]
    assert done.stdout.count("ok: ") >= 20
