import json

from click.testing import CliRunner

from kohya_wrap import doctor
from kohya_wrap.cli import cli

GPU_PROBE = {
    "torch": "2.6.0+cu124",
    "cuda_build": "12.4",
    "cuda_available": True,
    "gpu_name": "NVIDIA H100",
    "gpu_memory_gb": 79.6,
    "gpu_count": 1,
    "bf16": True,
    "torchvision": "0.21.0",
}


def test_cpu_only_machine_can_train_but_is_warned():
    checks = doctor.check_torch(
        {"torch": "2.13.0+cpu", "cuda_build": None, "cuda_available": False, "torchvision": "0.28.0"}
    )
    gpu = next(c for c in checks if c.name == "gpu")
    assert gpu.status == doctor.WARN and "CPU only: training will be very slow" in gpu.detail
    assert all(c.status != doctor.FAIL for c in checks)


def test_gpu_is_named_with_its_memory():
    gpu = next(c for c in doctor.check_torch(GPU_PROBE) if c.name == "gpu")
    assert gpu.status == doctor.OK and "NVIDIA H100, 79.6 GB" in gpu.detail


def test_broken_torchvision_fails_with_the_fix():
    checks = doctor.check_torch(
        {
            "torch": "2.13.0+cpu",
            "cuda_available": False,
            "torchvision_error": "RuntimeError: operator torchvision::nms does not exist",
        }
    )
    tv = next(c for c in checks if c.name == "torchvision")
    assert tv.status == doctor.FAIL and "torchvision::nms" in tv.detail and "pip install" in tv.fix


def test_missing_torch_fails():
    (check,) = doctor.check_torch({"torch_error": "ModuleNotFoundError: No module named 'torch'"})
    assert check.status == doctor.FAIL and "pip install torch" in check.fix


def test_package_pins_are_compared():
    versions = {r.distribution: r.pinned for r in doctor.TRAIN_REQUIREMENTS}
    assert [c.status for c in doctor.check_train_packages(versions)] == ["ok"]
    versions["accelerate"] = "0.30.0"
    versions["voluptuous"] = None
    checks = {c.name: c for c in doctor.check_train_packages(versions)}
    assert checks["accelerate"].status == doctor.WARN and "pins 1.6.0" in checks["accelerate"].detail
    assert checks["voluptuous"].status == doctor.FAIL and "[train]" in checks["voluptuous"].fix


def _run(monkeypatch, args, probe=GPU_PROBE):
    monkeypatch.setattr(doctor, "probe_torch", lambda: probe)
    monkeypatch.setattr(
        doctor, "train_package_versions", lambda: {r.distribution: r.pinned for r in doctor.TRAIN_REQUIREMENTS}
    )
    return CliRunner().invoke(cli, ["doctor", *args])


def test_doctor_exits_nonzero_without_sd_scripts_and_says_how_to_get_it(monkeypatch, tmp_path):
    result = _run(monkeypatch, ["--sd-scripts", str(tmp_path / "missing"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["can_train"] is False
    sd = next(c for c in report["checks"] if c["name"] == "sd-scripts")
    assert sd["status"] == "fail" and "git submodule update --init" in sd["fix"]


def test_doctor_exits_zero_when_everything_is_there(monkeypatch, tmp_path):
    co = tmp_path / "sd"
    co.mkdir()
    (co / "train_network.py").write_text("")
    result = _run(monkeypatch, ["--sd-scripts", str(co), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "Training can start." in result.output
    assert "NVIDIA H100" in result.output


def test_offline_mode_is_reported(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in doctor.check_hf_cache().detail
