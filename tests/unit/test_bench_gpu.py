"""bench/gpu.py before a GPU is at hand: its dry run (CI runs it), its figures and the Kohya GUI preset it maps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.py"


def _load_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


gpu = _load_bench()


def test_dry_run_without_the_carry_folder_passes_and_says_it_is_absent(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--carry", str(tmp_path / "no-carry")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "absent" in done.stdout
    # the plan: every training phase's command, the GUI preset's source and the time arithmetic
    for phase in ("a$", "b$", "c$", "d$"):
        assert phase in done.stdout
    assert "sd15 - EDG_LoraOptiSettings.json" in done.stdout
    assert "deadline 420 s" in done.stdout
    assert "PROBLEM" not in done.stdout


def test_dry_run_names_each_missing_wheel_of_an_incomplete_carry_folder(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "toml-0.10.2-py2.py3-none-any.whl").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--carry", str(carry)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "PROBLEM: no wheel of transformers==4.54.1" in done.stdout
    assert "no wheel of toml==" not in done.stdout
    assert "sd-scripts-v0.10.1.tar.gz is missing" in done.stdout


def test_dry_run_refuses_a_deadline_the_device_call_cannot_hold() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--carry", "/nonexistent", "--deadline-s", "470"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "leaves under 30 s" in done.stdout


def test_the_gui_preset_loads_as_a_kohya_wrap_preset_with_the_gui_values() -> None:

    assert gpu.check_gui_preset(60) == []  # type: ignore[attr-defined]
    text = gpu.gui_preset_toml(60)  # type: ignore[attr-defined]
    assert "network_dim = 64" in text and "train_batch_size = 3" in text and 'mixed_precision = "bf16"' in text
    assert "mem_eff_attn = true" in text and "xformers" not in text.split("[values]")[1]


def test_gui_preset_file_loads(tmp_path: Path) -> None:
    from kohya_wrap.preset import load_preset

    path = tmp_path / "gui.toml"
    path.write_text(gpu.gui_preset_toml(60))  # type: ignore[attr-defined]
    preset = load_preset(str(path))
    assert preset.ours["auto_mixed_precision"].value is False
    assert preset.ours["target_steps"].value == 60


def test_steady_rate_leaves_out_the_first_sixth_and_the_last_step() -> None:
    # 60 steps: 1 s per step, but step 1-9 took 10 s each (start-up) and the last waited for samples
    points = [(10.0 * s, s) for s in range(1, 10)] + [(90.0 + (s - 9), s) for s in range(10, 60)] + [(200.0, 60)]
    assert gpu.steady_rate(points, 60) == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert gpu.steady_rate([(1.0, 1)], 60) is None  # type: ignore[attr-defined]


def test_torch_peak_is_read_where_a_log_prints_one(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("steps: 100%\nmax memory allocated: 7.5 GiB\n")
    assert gpu.torch_peak_from_log(log) == pytest.approx(7680.0)  # type: ignore[attr-defined]
    log.write_text("steps: 100%\n")
    assert gpu.torch_peak_from_log(log) is None  # type: ignore[attr-defined]


def test_every_carried_wheel_has_a_version_the_device_accepts() -> None:
    from packaging.specifiers import SpecifierSet

    carry = gpu.gpu_carry  # type: ignore[attr-defined]
    for package in carry.CARRIED:
        if package.accepts:
            assert package.version in SpecifierSet(package.accepts), package


def test_steady_rate_of_a_two_step_run_reaches_to_the_last_step() -> None:
    assert gpu.steady_rate([(10.0, 1), (14.0, 2), (30.0, 2)], 2) == pytest.approx(1 / 20)  # type: ignore[attr-defined]


def test_the_memory_runs_become_rows_for_the_measured_table(tmp_path: Path) -> None:
    results = gpu.Results(tmp_path, gpu.GPU_PROFILE, 420)  # type: ignore[attr-defined]
    results.machine["gpu_name"] = "NVIDIA H200"
    for pid, peak in (("e", 9000), ("f", 21000), ("g", 8000)):
        run = results.phases[pid]
        run.status, run.resolution, run.mixed_precision, run.peak_gpu_used_mib = "ok", 512, "bf16", peak
    text = results.markdown()
    assert "MemoryFigure(512, 1, False, 'bf16', 9000, 'bench/gpu.py on NVIDIA H200, " in text
    assert "MemoryFigure(512, 4, True, 'bf16', 8000," in text
    # and they read back as figures kohya-wrap estimates from
    from kohya_wrap.train.memory import MemoryFigure, estimate

    rows = tuple(
        MemoryFigure(
            r["resolution"], r["batch_size"], r["gradient_checkpointing"], r["mixed_precision"], r["peak_mib"], "t"
        )
        for r in results.memory_figures()
    )
    assert estimate(rows, 512, 2, False, "bf16").mib == 13000  # type: ignore[union-attr]
