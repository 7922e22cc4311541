"""Parser throughput on the recorded sd-scripts transcripts (target: >= 200,000 lines/s), and the
cost of following a real run through kohya-wrap (target: <= 1.05x the wall time, <= 100 MB extra).

    python bench/parse.py [--repeat N] [--parser-only]

1. Replays every transcript in tests/data/transcripts through OutputParser in 4 KiB reads (as a
   pipe delivers them) and prints lines per second (wall and CPU).
2. When the sd-scripts checkout, the [train] extra and the cached smoke base model are present
   ($KOHYA_WRAP_TEST_CACHE or ~/.cache/kohya-wrap-tests, as the real test tier builds it), plans a
   smoke run and trains it twice: the plan's exact command run directly (output to a file), and
   `kohya-wrap train RUN_DIR`. Prints both wall times, their ratio, the trainer's peak RSS and
   kohya-wrap's own peak RSS (its whole cost in memory: the trainer is the same process either way).
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
    cpu_start = time.process_time()
    events = 0
    for _ in range(repeat):
        for _, streams in runs:
            parser = OutputParser()
            for stream, data in streams:
                for i in range(0, len(data), READ_SIZE):
                    events += len(parser.feed(stream, data[i : i + READ_SIZE]))
            events += len(parser.close())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    rate = lines / elapsed
    # CPU time too: on a shared machine the wall clock also counts other processes' turns
    print(
        f"parser: {lines} lines ({len(runs)} transcripts x {repeat}) in {elapsed:.3f} s wall = {rate:,.0f} lines/s, "
        f"{cpu:.3f} s CPU = {lines / cpu:,.0f} lines/CPU-s (target >= 200,000); {events} events"
    )
    return rate


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _run_watched(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS of the process itself in kB, peak RSS of its largest descendant in kB)."""
    import subprocess

    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        own = child = 0
        while proc.poll() is None:
            own = max(own, _peak_rss_kb(proc.pid))
            for pid in _descendants(proc.pid):  # the trainer runs in its own session under kohya-wrap
                child = max(child, _peak_rss_kb(pid))
            time.sleep(0.2)
    return time.perf_counter() - start, own, child


def bench_smoke() -> None:
    import os
    import shutil
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import real_trainer_missing  # type: ignore[import-not-found]

    reason = real_trainer_missing()
    cache = Path(os.environ.get("KOHYA_WRAP_TEST_CACHE", Path.home() / ".cache" / "kohya-wrap-tests")) / "models"
    model = cache / "sd15-random-fp16.safetensors"
    if reason or not model.is_file():
        print(f"smoke overhead: skipped ({reason or f'no smoke base model at {model}; run the real test tier once'})")
        return
    from kohya_wrap.plan import PlanRequest, make_plan
    from kohya_wrap.process import child_env
    from kohya_wrap.rundir import write_plan
    from kohya_wrap.sdscripts.layout import TRAIN_DIR, subset_dir_name
    from kohya_wrap.smoke.images import write_face_images
    from kohya_wrap.smoke.tokenizer import write_tokenizer
    from kohya_wrap.train.runner import prepare_run

    work = Path(tempfile.mkdtemp(prefix="kw-bench-"))
    try:
        dataset = work / "dataset"
        for image in write_face_images(dataset / TRAIN_DIR / subset_dir_name(1, "ohwx man"), count=4):
            image.with_suffix(".txt").write_text("a photo of ohwx man\n")
        write_tokenizer(work / "tok")
        runs = []
        for name in ("direct", "wrapped"):
            plan = make_plan(
                PlanRequest(
                    dataset,
                    preset="smoke",
                    base_model=str(model),
                    run_dir=work / name,
                    tokenizer_cache_dir=work / "tok",
                )
            )
            write_plan(plan)
            runs.append(plan)
        direct, wrapped = runs
        # the command train would launch for the direct run, on this machine
        launch = prepare_run(direct.run_dir)
        launch.files.accelerate_config.write_text(launch.accelerate_config)
        wall_d, _, peak_d = _run_watched(list(launch.argv), child_env(launch.env), direct.run_dir, work / "direct.log")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        wall_w, own_w, peak_w = _run_watched(
            [sys.executable, "-m", "kohya_wrap", "train", str(wrapped.run_dir)], env, ROOT, work / "wrapped.log"
        )
        print(f"smoke run direct:     {wall_d:7.1f} s wall, trainer peak RSS {peak_d / 1024:7.0f} MB")
        print(
            f"smoke run kohya-wrap: {wall_w:7.1f} s wall, trainer peak RSS {peak_w / 1024:7.0f} MB, "
            f"kohya-wrap itself {own_w / 1024:5.0f} MB"
        )
        print(f"ratio {wall_w / wall_d:.3f}x (target <= 1.05x), extra memory {own_w / 1024:.0f} MB (target <= 100 MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--parser-only", action="store_true", help="skip the real smoke runs")
    args = ap.parse_args()
    bench_parser(args.repeat)
    if not args.parser_only:
        bench_smoke()
    return 0


if __name__ == "__main__":
    sys.exit(main())
