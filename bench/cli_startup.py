"""Wall time of `kohya-wrap --help` (target: under 150 ms), next to a bare `python -c pass`.

python bench/cli_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall_times(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    exe = shutil.which("kohya-wrap") or f"{sys.prefix}/bin/kohya-wrap"
    rows = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "kohya-wrap --help": [exe, "--help"],
        "kohya-wrap --version": [exe, "--version"],
    }
    print(f"{'command':24} {'min ms':>8} {'median ms':>10} {'max ms':>8}   ({args.runs} runs each)")
    medians = {}
    for name, argv in rows.items():
        t = wall_times(argv, args.runs)
        medians[name] = statistics.median(t)
        print(f"{name:24} {min(t):8.1f} {medians[name]:10.1f} {max(t):8.1f}")
    verdict = "meets" if medians["kohya-wrap --help"] < 150 else "MISSES"
    print(f"kohya-wrap --help median {medians['kohya-wrap --help']:.1f} ms: {verdict} the 150 ms target")


if __name__ == "__main__":
    main()
