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


def _cache_tokenizer() -> None:
    """kohya-wrap's own tokenizer cache, filled (the test's KOHYA_WRAP_HOME), as train leaves it."""
    from kohya_wrap.models import default_tokenizer_cache_dir
    from kohya_wrap.sdscripts.configs import TOKENIZER_REQUIRED_FILES, tokenizer_subdir

    folder = tokenizer_subdir(default_tokenizer_cache_dir())
    folder.mkdir(parents=True)
    for name in TOKENIZER_REQUIRED_FILES:
        (folder / name).write_text("{}")


def test_doctor_exits_zero_when_everything_is_there(monkeypatch, tmp_path):
    co = tmp_path / "sd"
    co.mkdir()
    (co / "train_network.py").write_text("")
    _cache_tokenizer()
    result = _run(monkeypatch, ["--sd-scripts", str(co), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "Training can start." in result.output
    assert "NVIDIA H100" in result.output


def test_offline_mode_is_reported(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in doctor.check_hf_cache().detail


def test_offline_without_a_cached_tokenizer_training_cannot_start(monkeypatch, tmp_path):
    # HF_HUB_OFFLINE=1 and an empty KOHYA_WRAP_HOME and HF_HOME (tests/conftest.py): train would stop at once
    co = tmp_path / "sd"
    co.mkdir()
    (co / "train_network.py").write_text("")
    result = _run(monkeypatch, ["--sd-scripts", str(co), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["can_train"] is False
    tokenizer = next(c for c in report["checks"] if c["name"] == "CLIP tokenizer")
    assert tokenizer["status"] == "fail" and "HF_HUB_OFFLINE is set" in tokenizer["detail"]
    assert "exit 11" in tokenizer["detail"] and "--tokenizer-cache-dir" in tokenizer["fix"]
    text = _run(monkeypatch, ["--sd-scripts", str(co), "--runs-dir", str(tmp_path / "runs")])
    assert "Training cannot start" in text.output and "Training can start." not in text.output


def test_online_an_uncached_tokenizer_is_a_warning_train_downloads_it(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check = doctor.check_tokenizer()
    assert check.status == doctor.WARN and "train downloads it" in check.detail
    _cache_tokenizer()
    assert doctor.check_tokenizer().status == doctor.OK
