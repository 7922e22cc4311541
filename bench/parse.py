"""Parser throughput on the recorded sd-scripts transcripts (target: >= 200,000 lines/s).

    python bench/parse.py [--repeat N]

Replays every transcript in tests/data/transcripts through OutputParser in 4 KiB reads (as a pipe
delivers them) and prints lines per second. With --smoke, also times a smoke run through kohya-wrap
against the same sd-scripts command run directly (see bench_smoke below).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kohya_wrap.sdscripts.output import OutputParser  # noqa: E402

TRANSCRIPTS = ROOT / "tests" / "data" / "transcripts"
READ_SIZE = 4096


def load_streams() -> list[tuple[str, list[tuple[str, bytes]]]]:
    runs = []
    for stderr in sorted(TRANSCRIPTS.glob("*.pipe.stderr.txt")):
        name = stderr.name.removesuffix(".stderr.txt")
        stdout = stderr.with_name(f"{name}.stdout.txt")
        runs.append((name, [("stderr", stderr.read_bytes()), ("stdout", stdout.read_bytes())]))
    for tty in sorted(TRANSCRIPTS.glob("*.tty.typescript")):
        runs.append((tty.name, [("stderr", tty.read_bytes())]))
    return runs


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def bench_parser(repeat: int) -> float:
    runs = load_streams()
    lines = sum(count_lines(data) for _, streams in runs for _, data in streams) * repeat
    start = time.perf_counter()
    events = 0
    for _ in range(repeat):
        for _, streams in runs:
            parser = OutputParser()
            for stream, data in streams:
                for i in range(0, len(data), READ_SIZE):
                    events += len(parser.feed(stream, data[i:i + READ_SIZE]))
            events += len(parser.close())
    elapsed = time.perf_counter() - start
    rate = lines / elapsed
    print(f"parser: {lines} lines ({len(runs)} transcripts x {repeat}) in {elapsed:.3f} s = {rate:,.0f} lines/s "
          f"(target >= 200,000); {events} events")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="also time a real smoke run (needs sd-scripts and a smoke model)")
    args = ap.parse_args()
    bench_parser(args.repeat)
    if args.smoke:
        from bench_smoke import bench_smoke  # type: ignore[import-not-found]

        bench_smoke()
    return 0


if __name__ == "__main__":
    sys.exit(main())
