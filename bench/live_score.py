"""What live scoring costs the trainer: the same run with and without scoring beside it, side by side.

    python bench/live_score.py [--pairs 3] [--steps 600] [--every 100] [--work 0.05] [--people DIR]

The trainer is the stand-in of tests/fakes in its CPU-bound form (`--step-work`: each step is
`--work` seconds of CPU on one core, so anything that takes its core makes it slower), drawing 3
samples every `--every` steps from real photos (../shared/photos: another person first, then other
photos of the person, then copies of the training photos), so the scoring worker does its real work
(dlib on every sample of the run at each checkpoint). Runs alternate off/on, `--pairs` times each,
through the same pipeline `kohya-wrap train` uses; stop-early is off, so both train every step.

Per run: the trainer's time (its progress bar's elapsed seconds: training only) and the attempt's wall
time (run.json), and for live runs the score events recorded. The cost is the median trainer time with
live scoring over the median without (target: at most 2%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
sys.path.insert(0, str(ROOT))
PEOPLE = ROOT.parent / "shared" / "photos" / "people"


def photo_sets(work: Path) -> tuple[Path, Path, Path]:
    """Copies, in the bench's temporary folder, of the training photos and the other photos of the person."""
    training, good = work / "training", work / "good"
    for folder, names in ((training, ("img13.jpg", "img14.jpg", "img15.jpg")), (good, ("img57.jpg", "img58.jpg"))):
        folder.mkdir(parents=True)
        for name in names:
            shutil.copyfile(PEOPLE / "zuckerberg" / name, folder / name)
    return training, good, PEOPLE / "clooney"


def one_run(work: Path, name: str, args: argparse.Namespace, live: bool) -> dict[str, float | int]:
    from run_dir import make_fake_checkout, make_run_dir  # type: ignore[import-not-found]

    from kohya_wrap.events import Progress, Score, read_events
    from kohya_wrap.pipeline import TrainRequest, train_run
    from kohya_wrap.train.runner import TrainOptions

    training, good, other = photo_sets(work / name / "photos")
    third = args.steps // 3
    schedule = [[0, str(other)], [third, str(good)], [2 * third, str(training)]]
    run_dir = make_run_dir(
        work / name,
        fake_args=("--step-work", str(args.work), "--samples-from", json.dumps(schedule), "--sample-count", "3"),
        max_train_steps=args.steps,
        save_every_n_steps=args.every,
        sample_every_n_steps=args.every,
        photos=training,
        repeats=args.steps,
        ours={"target_steps": args.steps, "min_steps": args.steps, "max_steps": args.steps},
    )
    os.environ["KOHYA_WRAP_SD_SCRIPTS"] = str(make_fake_checkout(work / "checkout"))
    request = TrainRequest(run_dir=run_dir, options=TrainOptions(), score=live, stop_early=False)
    started = time.perf_counter()
    result = train_run(request)
    wall = time.perf_counter() - started
    if result.outcome != "finished":
        tail = "\n".join(result.log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{name}: the run ended {result.outcome}; the end of {result.log_path}:\n{tail}")
    events = list(read_events(run_dir / "events.jsonl"))
    last = [e for e in events if isinstance(e, Progress)][-1]
    return {
        "trainer_s": last.elapsed_s,
        "attempt_s": json.loads((run_dir / "run.json").read_text())["attempts"][-1]["duration_s"],
        "wall_s": wall,
        "scores": sum(isinstance(e, Score) for e in events),
    }


def main() -> int:
    global PEOPLE
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--work", type=float, default=0.05, help="CPU seconds per step of the stand-in trainer")
    ap.add_argument("--people", type=Path, default=None, help=f"the photos' people folder (default {PEOPLE})")
    args = ap.parse_args()
    PEOPLE = (args.people or PEOPLE).resolve()
    from kohya_wrap.score import scorer_available

    if (missing := scorer_available()) is not None:
        print(f"cannot bench live scoring: {missing}")
        return 1
    if not (PEOPLE / "zuckerberg").is_dir():
        print(f"cannot bench live scoring: the photos of real people are absent ({PEOPLE})")
        return 1
    work = Path(tempfile.mkdtemp(prefix="kw-bench-live-"))
    os.environ.setdefault("KOHYA_WRAP_HOME", str(work / "home"))  # its own reference cache: scored cold once
    print(
        f"stand-in trainer: {args.steps} steps x {args.work:.3f} CPU s, 3 samples every {args.every} steps; "
        f"{os.cpu_count()} CPU cores; {args.pairs} pairs, off and on alternating"
    )
    print(f"{'run':8} {'live':>5} {'trainer s':>10} {'attempt s':>10} {'scores':>7}")
    rows: dict[bool, list[dict[str, float | int]]] = {False: [], True: []}
    try:
        for pair in range(args.pairs):
            for live in (False, True):
                name = f"{'on' if live else 'off'}-{pair}"
                row = one_run(work, name, args, live)
                rows[live].append(row)
                print(
                    f"{name:8} {'yes' if live else 'no':>5} {row['trainer_s']:10.2f} {row['attempt_s']:10.2f} "
                    f"{row['scores']:7d}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    costs = []
    for what, key in (
        ("trainer time (its bar's clock, whole seconds)", "trainer_s"),
        ("attempt wall time", "attempt_s"),
    ):
        off = statistics.median(float(r[key]) for r in rows[False])
        on = statistics.median(float(r[key]) for r in rows[True])
        costs.append(100.0 * (on - off) / off)
        print(f"median {what}: {off:.2f} s without live scoring, {on:.2f} s with it: cost {costs[-1]:+.1f}%")
    print(f"target at most 2%: {'meets' if max(costs) <= 2.0 else 'MISSES'} it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
