"""train fits the GPU it finds: from measured memory, gradient checkpointing or a smaller batch; without, nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sd15_stub import write_sd15_stub

from kohya_wrap.codec import to_builtins
from kohya_wrap.plan import PlanRequest, make_plan
from kohya_wrap.rundir import write_plan
from kohya_wrap.sdscripts.trainer import TrainerSettings, set_by, trainer_settings
from kohya_wrap.train import memory
from kohya_wrap.train.machine import GpuInfo, detect_gpus
from kohya_wrap.train.manifest import machine_entry, memory_fit
from kohya_wrap.train.memory import MemoryFigure, estimate, fit_gpu
from kohya_wrap.train.runner import prepare_launch, prepare_run

SRC = "bench/gpu.py on a test GPU"
# a made-up measurement: 3000 MiB fixed, 2000 per image without checkpointing, 500 with it
FIGURES = (
    MemoryFigure(512, 1, False, "bf16", 5000, SRC),
    MemoryFigure(512, 4, False, "bf16", 11000, SRC),
    MemoryFigure(512, 4, True, "bf16", 5000, SRC),
)
PRESET = {"preset:likeness-sd15"}


def values(batch: int = 2, checkpointing: bool = False, resolution: str = "512") -> TrainerSettings:
    return trainer_settings(
        {"resolution": resolution, "train_batch_size": batch, "gradient_checkpointing": checkpointing}
    )


def sources(*user_set: str) -> frozenset[str]:
    keys = ("resolution", "train_batch_size", "gradient_checkpointing", "gradient_accumulation_steps")
    return set_by({k: "--set" if k in user_set else "preset:likeness-sd15" for k in keys}, "--set")


def test_the_need_is_measured_or_linear_in_the_batch_between_measured_batches() -> None:
    assert estimate(FIGURES, 512, 4, False, "bf16").mib == 11000  # type: ignore[union-attr]
    assert estimate(FIGURES, 512, 2, False, "bf16").mib == 7000  # type: ignore[union-attr]
    # checkpointing measured at one batch: its fixed part is that of the runs without it
    assert estimate(FIGURES, 512, 2, True, "bf16").mib == 4000  # type: ignore[union-attr]
    assert estimate(FIGURES, 768, 2, False, "bf16") is None
    assert estimate(FIGURES, 512, 2, False, "fp16") is None
    assert estimate((), 512, 2, False, "bf16") is None


def test_without_a_measurement_the_plan_is_kept_and_train_says_so() -> None:
    fit = fit_gpu(values(), sources(), "bf16", 8000, figures=())
    assert fit is not None and fit.changes == () and fit.need_mib is None
    assert fit.note and "no measured GPU memory figure" in fit.note and "kept" in fit.note
    # the shipped table is empty until bench/gpu.py has measured a GPU
    assert memory.MEASURED == () or all(f.peak_mib > 0 for f in memory.MEASURED)


def test_a_plan_that_fits_changes_nothing_and_says_nothing() -> None:
    fit = fit_gpu(values(batch=2), sources(), "bf16", 24000, figures=FIGURES)
    assert fit is not None and fit.changes == () and fit.note is None and fit.need_mib == 7000


def test_too_little_memory_turns_on_gradient_checkpointing_first() -> None:
    fit = fit_gpu(values(batch=2), sources(), "bf16", 6000, figures=FIGURES)  # 7000 needed, 4000 with it
    assert fit is not None
    assert [(c.key, c.old, c.new) for c in fit.changes] == [("gradient_checkpointing", False, True)]
    assert fit.note and "gradient_checkpointing False -> True" in fit.note and "6000 MiB" in fit.note
    assert to_builtins(memory_fit(fit))["changes"] == [{"key": "gradient_checkpointing", "from": False, "to": True}]


def test_when_checkpointing_is_not_enough_the_batch_halves_and_accumulation_doubles() -> None:
    # batch 4: 11000 without, 5000 with checkpointing; 4200 usable -> batch 2 with checkpointing (4000)
    fit = fit_gpu(values(batch=4), sources(), "bf16", 4600, figures=FIGURES)
    assert fit is not None
    assert {c.key: c.new for c in fit.changes} == {
        "gradient_checkpointing": True,
        "train_batch_size": 2,
        "gradient_accumulation_steps": 2,
    }


def test_values_given_with_set_are_kept_and_the_risk_is_said() -> None:
    fit = fit_gpu(values(batch=4), sources("train_batch_size", "gradient_checkpointing"), "bf16", 6000, FIGURES)
    assert fit is not None and fit.changes == ()
    assert fit.note and "--set gradient_checkpointing, train_batch_size kept as given" in fit.note
    assert "exit 10" in fit.note
    # --set batch alone: checkpointing may still be chosen
    fit = fit_gpu(values(batch=4), sources("train_batch_size"), "bf16", 6000, FIGURES)
    assert fit is not None and [c.key for c in fit.changes] == ["gradient_checkpointing"]


def test_no_gpu_no_fit() -> None:
    assert fit_gpu(values(), sources(), "no", None, FIGURES) is None


def test_gpu_memory_is_read_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0, NVIDIA H200, 9.0, 143771 MiB\\n1, Tesla T4, 7.5, 15360 MiB\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == GpuInfo(2, False, ("NVIDIA H200", "Tesla T4"), 15360)  # the smallest one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert detect_gpus().memory_mib == 143771


def _planned_run(tmp_path: Path, overrides: list[str]) -> Path:
    sub = tmp_path / "ds" / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (512, 512)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text("photo of ohwx man\n")
    tok = tmp_path / "tok" / "openai_clip-vit-large-patch14"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text("{}")
    (tok / "merges.txt").write_text("")
    checkout = tmp_path / "sd"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")
    plan = make_plan(
        PlanRequest(
            tmp_path / "ds",
            preset="likeness-sd15",
            base_model=str(write_sd15_stub(tmp_path / "m.safetensors")),
            run_dir=tmp_path / "run",
            overrides=overrides,
            tokenizer_cache_dir=tmp_path / "tok",
            sd_scripts=checkout,
        )
    )
    write_plan(plan)
    return plan.run_dir


def test_train_launches_with_what_it_chose_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "MEASURED", FIGURES)
    monkeypatch.setattr("kohya_wrap.train.machine.fit_gpu", lambda *a: fit_gpu(*a, figures=FIGURES))
    run_dir = _planned_run(tmp_path, ["train_batch_size=4"])
    sd = str(tmp_path / "sd")
    # train_batch_size came from --set: only checkpointing may change, and it fits 6000 MiB
    launch = prepare_run(run_dir, fetch_models=False, sd_scripts=sd, gpu_info=GpuInfo(1, True, ("small",), 6000))
    argv = list(launch.argv)
    assert "--gradient_checkpointing" in argv and argv[argv.index("--dataset_config") + 1] == str(
        run_dir / "dataset.toml"
    )
    assert to_builtins(machine_entry(launch.machine))["memory_fit"]["changes"][0]["key"] == "gradient_checkpointing"
    assert any("gradient_checkpointing False -> True" in n for n in launch.notes)
    assert launch.gpu_dataset_toml is None


def test_a_smaller_batch_goes_to_the_trainer_in_a_second_dataset_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kohya_wrap.train.machine.fit_gpu", lambda *a: fit_gpu(*a, figures=FIGURES))
    run_dir = _planned_run(tmp_path, [])
    plan_text = (run_dir / "dataset.toml").read_text()
    sd = str(tmp_path / "sd")
    big = GpuInfo(1, True, ("big",), 80000)
    assert "--gradient_checkpointing" not in prepare_run(run_dir, fetch_models=False, sd_scripts=sd, gpu_info=big).argv
    small = GpuInfo(1, True, ("small",), 4000)  # batch 2 needs 7000, 4000 with checkpointing; 3680 usable
    launch = prepare_run(run_dir, fetch_models=False, sd_scripts=sd, gpu_info=small)
    argv = list(launch.argv)
    assert argv[argv.index("--train_batch_size") + 1] == "1"
    assert argv[argv.index("--gradient_accumulation_steps") + 1] == "2"
    assert argv.count("--dataset_config") == 1
    assert argv[argv.index("--dataset_config") + 1] == str(run_dir / "dataset.gpu.toml")
    assert launch.gpu_dataset_toml is not None and "batch_size = 1" in launch.gpu_dataset_toml
    assert "batch_size = 2" in plan_text and (run_dir / "dataset.toml").read_text() == plan_text  # the plan's stays
    assert not (run_dir / "dataset.gpu.toml").exists()  # written at the launch, not by a dry run


def test_a_cpu_run_has_no_memory_fit(tmp_path: Path) -> None:
    run_dir = _planned_run(tmp_path, [])
    launch = prepare_launch(
        __import__("kohya_wrap.rundir", fromlist=["read_plan"]).read_plan(run_dir),
        fetch_models=False,
        sd_scripts=str(tmp_path / "sd"),
        gpu_info=GpuInfo(0, False),
    )
    assert launch.machine.fit is None and to_builtins(machine_entry(launch.machine))["memory_fit"] is None
