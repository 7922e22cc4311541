"""`kohya-wrap sweep` on the local backend, each variant planned for real and trained by the fake trainer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from sweep_env import ROOT, kohya_wrap_argv, make_sweep_env, sweep_process_env  # noqa: E402

from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.events import Finished, Progress, read_events  # noqa: E402


def sweep(env, out: Path, *extra: str, rules=None, datasets=()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kohya_wrap_argv("sweep", *env.args(*datasets), *extra, "-o", str(out)),
        cwd=ROOT,
        env=sweep_process_env(rules),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def sweep_json(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def test_two_variants_train_and_a_rerun_trains_nothing(tmp_path):
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    done = sweep(env, out, "--grid", "network_dim=4,8", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["trained"], result["skipped"], result["failed"], result["exit_code"]) == (2, 0, 0, 0)
    doc = sweep_json(out)
    assert doc["spec"]["grid"] == {"network_dim": [4, 8]} and doc["backend"] == "local"
    names = [v["name"] for v in doc["variants"]]
    assert names == ["ohwx__network_dim-4", "ohwx__network_dim-8"]
    for entry, dim in zip(doc["variants"], (4, 8), strict=False):
        run_dir = Path(entry["run_dir"])
        assert run_dir == out / "runs" / entry["name"]
        assert entry["values"] == {"network_dim": dim}
        assert (entry["status"], entry["outcome"], entry["exit_code"]) == ("done", "finished", 0)
        assert entry["recommended_step"] is None and isinstance(entry["final_loss"], float)
        assert (entry["last_step"], entry["total_steps"]) == (4, 4)
        manifest = json.loads((run_dir / "run.json").read_text())
        assert manifest["verification"]["ok"] is True and Path(entry["lora_file"]).is_file()
        assert json.loads((run_dir / "plan.json").read_text())["values"]["network_dim"]["value"] == dim
        assert (run_dir / "report.html").is_file()  # as `train` writes it
        assert "finished" in Path(entry["log"]).read_text()
    stamps = {n: (out / "runs" / n / "events.jsonl").stat().st_mtime_ns for n in names}

    again = sweep(env, out, "--grid", "network_dim=4,8")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": finished before") == 2
    assert "0 trained, 2 finished before" in " ".join(again.stdout.split())
    assert {n: (out / "runs" / n / "events.jsonl").stat().st_mtime_ns for n in names} == stamps
    assert [v["status"] for v in sweep_json(out)["variants"]] == ["skipped", "skipped"]

    other = sweep(env, out, "--grid", "network_dim=4,16")
    assert other.returncode == ExitCode.ERROR and "holds another sweep" in other.stderr

    status = subprocess.run(
        kohya_wrap_argv("status", str(out), "--json"),
        cwd=ROOT,
        env=sweep_process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    table = json.loads(status.stdout)
    assert table["counts"] == {"finished": 2} and [v["step"] for v in table["variants"]] == [4, 4]
    report = subprocess.run(
        kohya_wrap_argv("report", str(out)),
        cwd=ROOT,
        env=sweep_process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    page = (out / "report.html").read_text()
    assert 'id="loss-ohwx__network_dim-4"' in page and 'id="loss-ohwx__network_dim-8"' in page
    assert 'id="best" data-variant="ohwx__network_dim-' in page and "lowest final loss" in page


def test_a_failing_variant_leaves_the_others_finished(tmp_path):
    env = make_sweep_env(tmp_path, ("ohwx", "sks"))
    out = tmp_path / "sweep"
    done = sweep(env, out, "--grid", "network_dim=4,8", rules={"network_dim=8": ["--crash-at", "3"]})
    assert done.returncode == ExitCode.SWEEP_FAILED, done.stderr
    outcomes = {v["name"]: (v["outcome"], v["exit_code"]) for v in sweep_json(out)["variants"]}
    assert outcomes == {
        "ohwx__network_dim-4": ("finished", 0),
        "ohwx__network_dim-8": ("crashed", 16),
        "sks__network_dim-4": ("finished", 0),
        "sks__network_dim-8": ("crashed", 16),
    }
    assert "2 did not finish" in " ".join(done.stdout.split())
    # the crashed ones saved no state (smoke saves none): a rerun sets their attempt aside and starts them again
    again = sweep(env, out, "--grid", "network_dim=4,8")
    assert again.returncode == 0, again.stderr
    assert {v["outcome"] for v in sweep_json(out)["variants"]} == {"finished"}
    aside = sorted(p.name.rsplit("-", 2)[0] for p in (out / "attempts").iterdir())
    assert aside == ["ohwx__network_dim-8", "sks__network_dim-8"]
    assert all(json.loads((p / "run.json").read_text())["outcome"] == "crashed" for p in (out / "attempts").iterdir())


def test_a_bad_variant_stops_the_sweep_before_any_trains(tmp_path):
    env = make_sweep_env(tmp_path)
    empty = tmp_path / "data" / "empty"
    (empty / "img").mkdir(parents=True)
    out = tmp_path / "sweep"
    done = sweep(env, out, "--grid", "network_dim=4,8", datasets=(env.datasets[0], empty))
    assert done.returncode == ExitCode.ERROR
    message = " ".join(done.stderr.split())
    assert "variant empty__network_dim-4 (dataset empty, network_dim=4) cannot be planned" in message
    assert "empty__network_dim-8" in message and "nothing was trained" in message and "Traceback" not in message
    assert not (out / "runs").exists() and not (out / "sweep.json").exists()


def test_a_bad_variant_puts_back_the_attempts_set_aside_for_planning(tmp_path):
    # a variant to restart is planned once, in its own run directory: its attempt is set aside first,
    # and put back when another variant cannot be planned (nothing is written then)
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    crashed = sweep(env, out, "--grid", "network_dim=4", rules={"network_dim=4": ["--crash-at", "2"]})
    assert crashed.returncode == ExitCode.SWEEP_FAILED, crashed.stderr
    run_dir = out / "runs" / "ohwx__network_dim-4"
    before = sorted(p.name for p in run_dir.iterdir())
    empty = tmp_path / "data" / "empty"
    (empty / "img").mkdir(parents=True)
    bad = sweep(env, out, "--grid", "network_dim=4", datasets=(env.datasets[0], empty))
    assert bad.returncode == ExitCode.ERROR and "empty__network_dim-4" in bad.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (out / "attempts").exists()
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "crashed"


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path):
    env = make_sweep_env(tmp_path)
    blocker = tmp_path / "no-ray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    process_env = sweep_process_env()
    process_env["PYTHONPATH"] = f"{blocker}:{process_env['PYTHONPATH']}"
    done = subprocess.run(
        kohya_wrap_argv("sweep", *env.args(), "-o", str(tmp_path / "s"), "--backend", "ray"),
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitCode.ERROR and "pip install 'kohya-wrap[ray]'" in done.stderr
    assert not (tmp_path / "s" / "runs").exists()


def wait_for_step(events: Path, step: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if events.is_file() and any(isinstance(e, Progress) and e.step >= step for e in read_events(events)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} in {events}")


def test_ctrl_c_stops_the_sweep_and_the_same_command_finishes_it(tmp_path):
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
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
        str(out),
    )
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=sweep_process_env({"*": ["--step-delay", "0.3"]}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = out / "runs" / "ohwx__network_dim-4"
    wait_for_step(first / "events.jsonl", 3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "run kohya-wrap sweep" in " ".join(stderr.split()) and "again" in stderr
    entries = {v["name"]: v for v in sweep_json(out)["variants"]}
    assert entries["ohwx__network_dim-4"]["outcome"] == "interrupted"
    assert entries["ohwx__network_dim-8"]["status"] == "pending"  # never started
    assert not (out / "runs" / "ohwx__network_dim-8" / "events.jsonl").exists()
    assert not [p for p in _processes_mentioning(tmp_path)]  # no worker, no trainer left

    done = subprocess.run(
        args, cwd=ROOT, env=sweep_process_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "(resuming)" in done.stdout
    assert {v["outcome"] for v in sweep_json(out)["variants"]} == {"finished"}
    finished = [e for e in read_events(first / "events.jsonl") if isinstance(e, Finished)]
    assert [f.outcome for f in finished] == ["interrupted", "finished"]
    manifest = json.loads((first / "run.json").read_text())
    assert manifest["attempts"][-1]["resumed_from"] and manifest["steps"]["reached"] == 12


def _processes_mentioning(marker: Path) -> list[str]:
    psutil = pytest.importorskip("psutil")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(marker) in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


def test_recommended_step_comes_from_score_json(tmp_path):
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    assert sweep(env, out, "--grid", "network_dim=4,8").returncode == 0
    run_dir = out / "runs" / "ohwx__network_dim-8"
    checkpoints = [{"step": 2, "likeness": 0.4}, {"step": 4, "likeness": 0.7}]
    (run_dir / "score.json").write_text(
        json.dumps({"checkpoints": checkpoints, "recommended": {"step": 4}, "reason": "most alike"})
    )
    assert sweep(env, out, "--grid", "network_dim=4,8").returncode == 0
    steps = {v["name"]: v["recommended_step"] for v in sweep_json(out)["variants"]}
    assert steps == {"ohwx__network_dim-4": None, "ohwx__network_dim-8": 4}
    from kohya_wrap.sweep import write_sweep_report

    page = write_sweep_report(out).read_text()
    assert 'id="likeness-ohwx__network_dim-8"' in page
    assert 'data-variant="ohwx__network_dim-8"' in page and "highest likeness (0.700) at its recommended step 4" in page


def test_a_sweep_file_from_the_command_line(tmp_path):
    env = make_sweep_env(tmp_path)
    sweep_file = tmp_path / "dims.toml"
    sweep_file.write_text("""schema = 1
datasets = ["data/ohwx"]
preset = "smoke"
base_model = "model.safetensors"
[set]
network_alpha = 2.0
[grid]
network_dim = [4, 8]
""")
    out = tmp_path / "sweep"
    done = subprocess.run(
        kohya_wrap_argv(
            "sweep",
            str(sweep_file),
            "--tokenizer-cache-dir",
            str(env.tokenizer),
            "--sd-scripts",
            str(env.checkout),
            "-o",
            str(out),
        ),
        cwd=tmp_path,
        env=sweep_process_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entries = sweep_json(out)["variants"]
    assert [(e["name"], e["outcome"]) for e in entries] == [
        ("ohwx__network_dim-4", "finished"),
        ("ohwx__network_dim-8", "finished"),
    ]
    plan = json.loads((Path(entries[1]["run_dir"]) / "plan.json").read_text())
    assert plan["values"]["network_alpha"]["value"] == 2.0 and plan["values"]["network_dim"]["value"] == 8
    sweep_file.write_text(sweep_file.read_text().replace("network_dim = [4, 8]", 'network_module = ["evil.mod"]'))
    bad = subprocess.run(
        kohya_wrap_argv("sweep", str(sweep_file), "-o", str(tmp_path / "bad")),
        cwd=tmp_path,
        env=sweep_process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == ExitCode.ERROR and "[grid] network_module value 1" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_one_variant_per_gpu_each_seeing_its_own(tmp_path):
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    process_env = sweep_process_env({"*": ["--step-delay", "0.3"]})
    process_env["CUDA_VISIBLE_DEVICES"] = "0,1"  # two GPU slots; the fake trainer needs no GPU
    done = subprocess.run(
        kohya_wrap_argv("sweep", *env.args(), "--grid", "network_dim=4,8,16", "-o", str(out)),
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entries = sweep_json(out)["variants"]
    assert [e["device"] for e in entries[:2]] == ["0", "1"] and entries[2]["device"] in ("0", "1")
    assert {e["outcome"] for e in entries} == {"finished"}
    assert "on GPU 0" in done.stdout and "on GPU 1" in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_sweep_as_ctrl_c_does(tmp_path, sig):
    env = make_sweep_env(tmp_path)
    out = tmp_path / "sweep"
    args = kohya_wrap_argv(
        "sweep", *env.args(), "--grid", "network_dim=4,8", "--set", "max_train_steps=12", "-o", str(out)
    )
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=sweep_process_env({"*": ["--step-delay", "0.3"]}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(out / "runs" / "ohwx__network_dim-4" / "events.jsonl", 2)
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    entries = {v["name"]: v for v in sweep_json(out)["variants"]}
    assert entries["ohwx__network_dim-4"]["status"] != "running"
    assert entries["ohwx__network_dim-4"]["outcome"] == "interrupted"
    assert not [p for p in _processes_mentioning(tmp_path)]
