"""The same 2-variant smoke grid through the local and the Ray backend, side by side; Ray's overhead per variant.

    python bench/sweep.py [--fake | --real] [--steps-delay S]

--real: the real sd-scripts trainer (needs the checkout, the [train] extra and the smoke base model the
real test tier caches in $KOHYA_WRAP_TEST_CACHE or ~/.cache/kohya-wrap-tests); --fake: the fake trainer
of tests/fakes (replayed sd-scripts output, a fixed delay per step). Default: real when it can run, else
fake, and it says which. Ray runs in a network namespace of its own holding loopback alone (the script
re-executes itself under `unshare -n` where that is permitted), so its traffic cannot leave the machine.

Per backend: the sweep's wall time, the trainers' own time (run.json attempts), and the rest (planning,
worker processes, and for Ray starting and stopping its local instance and scheduling the tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def real_model() -> tuple[Path | None, str]:
    from conftest import real_trainer_missing  # type: ignore[import-not-found]

    reason = real_trainer_missing()
    cache = Path(os.environ.get("KOHYA_WRAP_TEST_CACHE", Path.home() / ".cache" / "kohya-wrap-tests")) / "models"
    model = cache / "sd15-random-fp16.safetensors"
    if reason:
        return None, reason
    if not model.is_file():
        return None, f"no smoke base model at {model}; run the real test tier once"
    return model, ""


def trainer_seconds(sweep_dir: Path) -> float:
    total = 0.0
    for run_json in sweep_dir.glob("runs/*/run.json"):
        total += sum(a.get("duration_s") or 0.0 for a in json.loads(run_json.read_text()).get("attempts") or [])
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--fake", action="store_true")
    mode.add_argument("--real", action="store_true")
    ap.add_argument("--step-delay", type=float, default=0.5, help="fake trainer: seconds per step")
    args = ap.parse_args()
    if not os.environ.get("KW_BENCH_NETNS") and shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            env = {**os.environ, "KW_BENCH_NETNS": "1"}
            return subprocess.run(
                ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, *sys.argv],
                env=env,
                check=False,
            ).returncode
    if not os.environ.get("KW_BENCH_NETNS"):
        print("note: `unshare -n` is not available: Ray runs in this machine's network namespace (bound to 127.0.0.1)")
    from sweep_env import make_sweep_env, sweep_process_env

    model, why_not = real_model()
    use_real = args.real or (not args.fake and model is not None)
    if args.real and model is None:
        print(f"--real: {why_not}")
        return 1
    work = Path(tempfile.mkdtemp(prefix="kw-bench-sweep-"))
    ray_tmp = tempfile.mkdtemp(prefix="kwray-", dir="/tmp")
    try:
        env = make_sweep_env(work)
        if use_real:
            print(f"trainer: the real sd-scripts (smoke preset, 4 steps at 64 px, base model {model})")
            process_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
            base = [
                str(env.datasets[0]),
                "--preset",
                "smoke",
                "--base-model",
                str(model),
                "--tokenizer-cache-dir",
                str(env.tokenizer),
            ]
        else:
            print(
                f"trainer: the fake trainer (tests/fakes/fake_trainer.py, {args.step_delay} s per step x 4 steps)"
                + (f"; the real one cannot run here: {why_not}" if not args.fake else "")
            )
            process_env = sweep_process_env({"*": ["--step-delay", str(args.step_delay)]})
            base = env.args()
        process_env["RAY_TMPDIR"] = ray_tmp
        rows = []
        for backend in ("local", "ray"):
            out = work / f"sweep-{backend}"
            argv = [
                sys.executable,
                "-m",
                "kohya_wrap",
                "sweep",
                *base,
                "--grid",
                "network_dim=4,8",
                "-o",
                str(out),
                "--backend",
                backend,
            ]
            start = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, env=process_env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                print(f"{backend}: the sweep failed (exit code {done.returncode})")
                print(done.stdout[-3000:] + done.stderr[-3000:])
                return 1
            trainers = trainer_seconds(out)
            rows.append((backend, wall, trainers))
        print(f"{'backend':8} {'variants':>8} {'wall s':>8} {'trainers s':>11} {'rest s':>8} {'rest/variant s':>15}")
        for backend, wall, trainers in rows:
            rest = wall - trainers
            print(f"{backend:8} {2:>8} {wall:>8.2f} {trainers:>11.2f} {rest:>8.2f} {rest / 2:>15.2f}")
        (_, local_wall, local_tr), (_, ray_wall, ray_tr) = rows
        overhead = ((ray_wall - ray_tr) - (local_wall - local_tr)) / 2
        print(
            f"Ray's overhead per variant: {overhead:.2f} s (the Ray sweep's wall time less its trainers' time, "
            f"less the same for the local sweep, over 2 variants; it includes starting and stopping the local "
            f"Ray instance once, {ray_wall - local_wall:+.2f} s wall in all)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
