"""The body of tests/process/test_sweep_ray.py, run inside a network namespace of its own (loopback only).

    unshare -n sh -c 'ip link set lo up && exec python sweep_ray_body.py ROOT'

A real local Ray, started by the sweep itself, trains a 2-variant grid with the fake trainer; the same
command trains nothing the second time; SIGINT mid-run leaves no trainer, worker or Ray process behind;
the same command then finishes the sweep. Prints what it checked; exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from sweep_env import ROOT, kohya_wrap_argv, make_sweep_env, sweep_process_env  # noqa: E402


def check(condition: bool, what: str, detail: str = "") -> None:
    if not condition:
        print(f"FAILED: {what}\n{detail}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def leftovers(markers: list[str]) -> list[str]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(m in cmdline for m in markers):
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


def gone(markers: list[str], within_s: float = 30.0) -> list[str]:
    """What is still running after up to within_s seconds (processes exit asynchronously)."""
    deadline = time.monotonic() + within_s
    while (left := leftovers(markers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def main() -> int:
    root = Path(sys.argv[1])
    env = make_sweep_env(root)
    # Ray's sockets live under its temp dir, whose path must stay short; it also marks Ray's processes
    ray_tmp = tempfile.mkdtemp(prefix=f"kwray-{os.getpid()}-", dir="/tmp")
    markers = [str(root), ray_tmp]
    # Ray keeps an authentication token in ~/.ray: a home of the test's own
    os.environ["HOME"] = str(root / "home")
    os.environ["RAY_TMPDIR"] = ray_tmp

    def run(out: Path, *extra: str, rules: dict | None = None) -> subprocess.CompletedProcess[str]:
        e = sweep_process_env(rules)
        return subprocess.run(
            kohya_wrap_argv(
                "sweep", *env.args(), "--grid", "network_dim=4,8", *extra, "-o", str(out), "--backend", "ray"
            ),
            cwd=ROOT,
            env=e,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    out = root / "sweep"
    done = run(out)
    check(done.returncode == 0, "a 2-variant grid trains on a local Ray", done.stdout + done.stderr)
    doc = json.loads((out / "sweep.json").read_text())
    check(
        doc["backend"] == "ray" and [v["outcome"] for v in doc["variants"]] == ["finished", "finished"],
        "sweep.json holds both, finished",
        json.dumps(doc, indent=1),
    )
    for entry in doc["variants"]:
        manifest = json.loads((Path(entry["run_dir"]) / "run.json").read_text())
        check(
            manifest["verification"]["ok"] is True and Path(entry["lora_file"]).is_file(),
            f"{entry['name']}: a verified LoRA",
        )
        check(bool(entry["host"]), f"{entry['name']}: trained on {entry['host']}")
    check(not gone(markers), "no Ray process is left after the sweep", "\n".join(leftovers(markers)))
    stamps = sorted((p, p.stat().st_mtime_ns) for p in out.glob("runs/*/events.jsonl"))
    again = run(out)
    check(
        again.returncode == 0 and again.stdout.count(": finished before") == 2,
        "the same command again: both skipped",
        again.stdout + again.stderr,
    )
    check(sorted((p, p.stat().st_mtime_ns) for p in out.glob("runs/*/events.jsonl")) == stamps, "nothing trained again")

    stopped = root / "stopped"
    e = sweep_process_env({"*": ["--step-delay", "0.5"]})
    args = kohya_wrap_argv(
        "sweep",
        *env.args(),
        "--grid",
        "network_dim=4,8",
        "--set",
        "max_train_steps=12",
        "--set",
        "save_state=true",
        "-o",
        str(stopped),
        "--backend",
        "ray",
    )
    proc = subprocess.Popen(args, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = stopped / "runs" / "ohwx__network_dim-4" / "events.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (events.is_file() and '"step": 3,' in events.read_text()):
        time.sleep(0.1)
    check(events.is_file() and '"step": 3,' in events.read_text(), "the first variant reached step 3")
    trainers = [line for line in leftovers([str(stopped)]) if "fake_trainer.py" in line]
    check(bool(trainers), "its trainer runs", "\n".join(leftovers(markers)))
    check(
        any("raylet" in line or "gcs_server" in line for line in leftovers([ray_tmp])),
        "the sweep's own Ray runs (its processes are found by its temp dir)",
        "\n".join(leftovers(markers)),
    )
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    check(proc.returncode == 130, "Ctrl-C ends the sweep with exit code 130", stdout + stderr)
    check(not gone(markers), "no trainer, worker or Ray process is left", "\n".join(leftovers(markers)))
    entries = {v["name"]: v for v in json.loads((stopped / "sweep.json").read_text())["variants"]}
    check(
        entries["ohwx__network_dim-4"]["outcome"] == "interrupted",
        "the running variant was interrupted",
        json.dumps(entries, indent=1),
    )
    finish = subprocess.run(
        args,
        cwd=ROOT,
        env={**e, "KW_FAKE_TRAINER_RULES": "{}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(
        finish.returncode == 0 and "(resuming)" in finish.stdout,
        "the same command then finishes the sweep, resuming the stopped variant",
        finish.stdout + finish.stderr,
    )
    outcomes = [v["outcome"] for v in json.loads((stopped / "sweep.json").read_text())["variants"]]
    check(outcomes == ["finished", "finished"], "both finished", str(outcomes))
    check(not gone(markers), "nothing is left running at the end", "\n".join(leftovers(markers)))

    # SIGTERM and SIGHUP get what Ctrl-C gets: every task cancelled, sweep.json recorded, Ray stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        target = root / f"stopped-{sig.name}"
        sig_args = [a if a != str(stopped) else str(target) for a in args]
        proc = subprocess.Popen(sig_args, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events = target / "runs" / "ohwx__network_dim-4" / "events.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (events.is_file() and '"step": 2,' in events.read_text()):
            time.sleep(0.1)
        check(events.is_file(), f"{sig.name}: the first variant trains")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=180)
        check(proc.returncode == 130, f"{sig.name} ends the sweep with exit code 130", stdout + stderr)
        check(
            not gone(markers), f"{sig.name}: no trainer, worker or Ray process is left", "\n".join(leftovers(markers))
        )
        entries = {v["name"]: v for v in json.loads((target / "sweep.json").read_text())["variants"]}
        check(
            entries["ohwx__network_dim-4"]["outcome"] == "interrupted"
            and all(v["status"] != "running" for v in entries.values()),
            f"{sig.name}: sweep.json records the stop (nothing left at running)",
            json.dumps(entries, indent=1),
        )

    # an existing cluster (on loopback, as every Ray of these tests), brought up with Ray's own tools
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    started = subprocess.run(
        [
            *ray_cli,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            "6399",
            "--num-cpus",
            "2",
            "--num-gpus",
            "0",
            "--resources",
            '{"kohya_wrap_trainer": 1}',
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        env=sweep_process_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    check(started.returncode == 0, "`ray start --head` on 127.0.0.1", started.stdout + started.stderr)
    try:
        cluster = root / "cluster"
        joined = run(cluster, "--ray-address", "127.0.0.1:6399")
        check(
            joined.returncode == 0,
            "--ray-address: the sweep trains on the existing cluster",
            joined.stdout + joined.stderr,
        )
        outcomes = [v["outcome"] for v in json.loads((cluster / "sweep.json").read_text())["variants"]]
        check(outcomes == ["finished", "finished"], "both finished there", str(outcomes))
        check(any("raylet" in line for line in leftovers([ray_tmp])), "the cluster is left running (not ours)")
        check(not gone([str(cluster)]), "no trainer or worker is left")
    finally:
        subprocess.run([*ray_cli, "stop"], capture_output=True, timeout=120, check=False)
    check(not gone(markers), "`ray stop` stops the cluster", "\n".join(leftovers(markers)))
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for left in Path("/tmp").glob("kwray-*"):
            if left.name.startswith(f"kwray-{os.getpid()}-"):
                shutil.rmtree(left, ignore_errors=True)
