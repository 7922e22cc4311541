"""The likeness loop end to end, with a stand-in trainer whose samples are real photos: live scores while
it trains, `--stop-early` once the samples copy the training photos, and `--extend` of a finished run.

The stand-in (tests/fakes/fake_trainer.py --samples-from) draws each checkpoint's samples from photos of
../shared/photos on a schedule: under-trained = another person (clooney), good = other photos of the
person (zuckerberg img57, img58), over-trained = copies of the training photos (zuckerberg img13-15).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

ROOT = Path(__file__).parents[2]
PEOPLE = ROOT.parent / "shared" / "photos" / "people"
TRAINING, GOOD, OTHER = ("img13.jpg", "img14.jpg", "img15.jpg"), ("img57.jpg", "img58.jpg"), "clooney"
RANGE = {"target_steps": 3000, "min_steps": 2000, "max_steps": 5000}


def _skip_reason() -> str | None:
    from kohya_wrap.score import scorer_available

    if (missing := scorer_available()) is not None:
        return f"score's identity model is not installed here ({missing})"
    if not (PEOPLE / "zuckerberg").is_dir() or not (PEOPLE / OTHER).is_dir():
        return f"the photos of real people are absent: {PEOPLE} (see /work/shared/photos/README.md)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def photo_sets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(training photos, other photos of the person, photos of somebody else), in folders of their own."""
    training, good = tmp_path / "training", tmp_path / "good"
    for folder, names in ((training, TRAINING), (good, GOOD)):
        folder.mkdir()
        for name in names:
            shutil.copyfile(PEOPLE / "zuckerberg" / name, folder / name)
    return training, good, PEOPLE / OTHER


def kohya_wrap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        cwd=ROOT,
    )


def _live_processes(run_dir: Path) -> list[str]:
    """Processes still running whose command line names this run (trainer, launcher, scoring worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(run_dir) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_stop_early_stops_a_3000_step_run_once_its_samples_copy(tmp_path):
    training, good, other = photo_sets(tmp_path)
    schedule = [[0, str(other)], [750, str(good)], [1250, str(training)]]
    pids = tmp_path / "pids.txt"
    run_dir = make_run_dir(
        tmp_path,
        fake_args=(
            "--step-delay",
            "0.02",
            "--samples-from",
            json.dumps(schedule),
            "--sample-count",
            "3",
            "--pid-file",
            str(pids),
        ),
        max_train_steps=3000,
        save_every_n_steps=250,
        sample_every_n_steps=250,
        photos=training,
        repeats=1000,
        ours=RANGE,
    )
    train = subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "train", str(run_dir), "--stop-early"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    # another shell follows the same run while it trains
    follow = kohya_wrap("status", str(run_dir), "--follow", "--interval", "0.2", timeout=400)
    out, err = train.communicate(timeout=400)
    text = " ".join((out + err).split())
    assert train.returncode == 0, text[-3000:]

    # the live view showed each checkpoint's likeness as it came
    assert "score step 250: likeness" in text and "score step 750: likeness" in text
    assert "stopping early after step" in text and "copies persist" in text
    assert "stopped early at step" in text and "saved" in text
    followed = " ".join(follow.stdout.split())
    assert follow.returncode == 0, follow.stderr
    assert "score step 750: likeness" in followed and "stopping early" in followed

    run = json.loads((run_dir / "run.json").read_text())
    assert run["outcome"] == "stopped_early" and run["exit_code"] == 0
    stopped = run["stopped_early"]
    assert stopped["step"] >= 1500 and "copies persist" in stopped["reason"]
    assert stopped["stopped_at"] <= 2500, stopped  # well before step 3000
    assert stopped["steps_saved"] == 3000 - stopped["stopped_at"] and stopped["planned"] == 3000
    assert run["verification"]["ok"], run["verification"]
    assert run["score"]["recommended"]["step"] == 750
    assert run["score"]["advice"]["kind"] == "copies" and run["score"]["advice"]["step"] == 750
    assert "copies from step 1250: export step 750" in text

    status = json.loads(kohya_wrap("status", str(run_dir), "--json").stdout)
    assert status["state"] == "finished" and status["outcome"] == "stopped_early"
    by_step = {c["step"]: c for c in status["scores"]}
    assert by_step[250]["matches"] == 0 and by_step[750]["matches"] == 3 and by_step[750]["copies"] == 0
    assert by_step[1250]["copies"] == 3
    assert status["advice"]["text"].startswith("copies from step 1250: export step 750")
    report = (run_dir / "report.html").read_text()
    assert "GPU time saved" in report and 'id="advice"' in report

    # nothing is left running: the launcher, the trainer, the scoring worker
    assert _live_processes(run_dir) == []
    for line in pids.read_text().split("\n"):
        if line.strip():
            assert (
                not Path(f"/proc/{line.split()[0]}").exists()
                or "Z" in Path(f"/proc/{line.split()[0]}/stat").read_text().rsplit(")", 1)[1].split()[0]
            )


def test_extend_numbers_a_finished_run_on_from_its_last_step(tmp_path):
    training, good, other = photo_sets(tmp_path)
    schedule = [[0, str(other)], [600, str(good)]]
    run_dir = make_run_dir(
        tmp_path,
        fake_args=("--samples-from", json.dumps(schedule), "--sample-count", "2"),
        max_train_steps=400,
        save_every_n_steps=200,
        sample_every_n_steps=200,
        photos=training,
        repeats=100,  # 300 steps an epoch: the finished run's last state lies past it
        ours={"target_steps": 400, "min_steps": 300, "max_steps": 500},
    )
    first = kohya_wrap("train", str(run_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    advice = json.loads((run_dir / "run.json").read_text())["score"]["advice"]
    assert advice["kind"] == "not_learnt" and advice["command"] == f"kohya-wrap train --extend 1000 {run_dir}"

    refused = kohya_wrap("train", str(run_dir))
    assert refused.returncode == 1 and "finished run" in refused.stderr

    extended = kohya_wrap("train", "--extend", "400", str(run_dir), "--json")
    assert extended.returncode == 0, extended.stderr[-3000:]
    *lines, last = extended.stdout.splitlines()
    result = json.loads(last)
    assert result["outcome"] == "finished" and result["last_step"] == 800
    warnings = [json.loads(line)["message"] for line in lines if json.loads(line)["type"] == "warning"]
    assert any("from step 400 to step 800" in w and "LoRA weights" in w for w in warnings), warnings
    assert any("past the preset's range" in w for w in warnings), warnings

    output = run_dir / "output"
    steps = sorted(p.name for p in output.glob("face-step*.safetensors"))
    assert steps == [f"face-step{s:08d}.safetensors" for s in (200, 400, 600, 800)]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["outcome"] == "finished" and run["steps"]["extended_to"] == 800
    assert sorted(c["step"] for c in run["checkpoints"] if c["step"] is not None) == [200, 400, 600, 800]
    assert run["lora"]["step"] == 800 and run["attempts"][-1]["extend_steps"] == 400
    assert run["attempts"][-1]["resumed_at_step"] == 400
    score = json.loads((run_dir / "score.json").read_text())
    assert [c["step"] for c in score["checkpoints"]] == [200, 400, 600, 800]
    assert score["recommended"]["step"] == 600 and run["score"]["advice"]["kind"] == "recommended"

    exported = kohya_wrap("export", str(run_dir), "--step", "800", "-o", str(tmp_path / "out.safetensors"), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["step"] == 800
    shown = json.loads(kohya_wrap("status", str(run_dir), "--json").stdout)
    assert shown["state"] == "finished" and shown["advice"]["step"] == 600


def test_extend_continues_an_early_stopped_run_from_its_state(tmp_path):
    training, good, other = photo_sets(tmp_path)
    schedule = [[0, str(other)], [200, str(training)]]
    run_dir = make_run_dir(
        tmp_path,
        # slow enough that the live scorer decides before the trainer reaches its last step on a loaded machine
        fake_args=("--step-delay", "0.03", "--samples-from", json.dumps(schedule), "--sample-count", "2"),
        max_train_steps=2000,
        save_every_n_steps=100,
        sample_every_n_steps=100,
        photos=training,
        repeats=1000,
        ours={"target_steps": 2000, "min_steps": 1500, "max_steps": 3000, "stop_early": True},
    )
    first = kohya_wrap("train", str(run_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["outcome"] == "stopped_early"
    resumed = kohya_wrap("train", "--resume", str(run_dir))
    assert resumed.returncode == 1 and "--extend" in resumed.stderr
    last = max(c["step"] for c in run["checkpoints"])

    extended = kohya_wrap("train", "--extend", "200", "--no-stop-early", str(run_dir))
    assert extended.returncode == 0, extended.stderr[-3000:]
    text = " ".join((extended.stdout + extended.stderr).split())
    assert f"from its saved state face-step{last:08d}-state" in text
    run = json.loads((run_dir / "run.json").read_text())
    assert run["outcome"] == "finished" and run["lora"]["step"] == last + 200
    assert run["attempts"][-1]["resumed_from"].endswith(f"face-step{last:08d}-state")
    assert (run_dir / "output" / f"face-step{last + 200:08d}.safetensors").is_file()
