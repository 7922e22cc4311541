"""`kohya-wrap smoke` from a clean cache, then with the cache warm: wall time, each stage's time and
peak memory, against the budget (1.2x the 75 s a 4-step CPU run of sd-scripts takes directly, the
base model build excluded).

    python bench/smoke.py [--home DIR]    # DIR: an empty folder for KOHYA_WRAP_HOME (default: a temp dir)

Needs the sd-scripts checkout and the [train] extra; about 8 GB of memory and 4 minutes on a 2-core CPU.
Peak memory is the largest single process (the trainer), as GNU time reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIRECT_RUN_S = 75.0
BUDGET_FACTOR = 1.2


def run_once(home: Path) -> tuple[dict, float, float]:
    env = {**os.environ, "KOHYA_WRAP_HOME": str(home)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "smoke", "--json"], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"smoke exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux
    return json.loads(done.stdout), wall, peak_gib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="kohya-wrap-bench-home-"))
    if home.exists() and any(home.iterdir()):
        sys.exit(f"{home} is not empty: the first run must start from a clean cache")
    budget = DIRECT_RUN_S * BUDGET_FACTOR
    try:
        for label in ("clean cache", "warm cache"):
            doc, wall, peak = run_once(home)
            model = doc["base_model"]
            stages = " | ".join(f"{name} {seconds:.1f}" for name, seconds in doc["stages"].items())
            within = doc["seconds_without_model_build"] <= budget
            print(
                f"{label}: {wall:.1f} s wall, {doc['seconds_without_model_build']:.1f} s without the model build "
                f"({'within' if within else 'OVER'} the {budget:.0f} s budget); base model "
                f"{'built' if model['built'] else 'reused'}; peak {peak:.2f} GiB (largest process so far)"
            )
            print(f"  stages (s): {stages}")
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
