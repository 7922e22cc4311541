import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner
from PIL import Image
from sd15_stub import write_sd15_stub

from kohya_wrap.cli import cli
from kohya_wrap.codec import to_builtins
from kohya_wrap.dataset import scan_dataset
from kohya_wrap.errors import DatasetError, KohyaWrapError, PresetError, RunDirError
from kohya_wrap.plan import PlanRequest, make_plan
from kohya_wrap.rundir import Machines, read_plan, write_plan
from kohya_wrap.train.machine import GpuInfo
from kohya_wrap.train.manifest import machine_entry
from kohya_wrap.train.runner import prepare_launch

CPU = GpuInfo(0, False)


def make_dataset(
    root: Path, images: int = 20, repeats: int = 1, explicit: bool = False, reg: int = 0, size: int = 512
) -> Path:
    sub = root / "img" / f"{repeats}_ohwx man"
    sub.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (size, size), (i, i, i)).save(sub / f"{i:04d}.png")
        (sub / f"{i:04d}.txt").write_text("ohwx man\n")
    if reg:
        rsub = root / "reg" / "1_man"
        rsub.mkdir(parents=True)
        for i in range(reg):
            Image.new("RGB", (size, size)).save(rsub / f"r{i:04d}.png")
    (root / "prepare.json").write_text(
        json.dumps(
            {
                "kohya_wrap_version": "0.1.0",
                "parameters": {
                    "token": "ohwx",
                    "class": "man",
                    "size": size,
                    "crop": "face",
                    "repeats": repeats,
                    "repeats_explicit": explicit,
                },
            }
        )
    )
    return root


@pytest.fixture
def env(tmp_path):
    model = write_sd15_stub(tmp_path / "sd15.safetensors")
    tok = tmp_path / "tok" / "openai_clip-vit-large-patch14"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text("{}")
    (tok / "merges.txt").write_text("")
    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("")

    def plan(dataset: Path, run: str = "run", **kw):
        kw.setdefault("preset", "likeness-sd15")
        return make_plan(
            PlanRequest(
                dataset,
                base_model=str(model),
                run_dir=tmp_path / run,
                tokenizer_cache_dir=tmp_path / "tok",
                sd_scripts=checkout,
                **kw,
            )
        )

    def launch(dataset: Path, run: str = "run", gpu_info: GpuInfo = CPU, **kw):
        """The plan, and the command train resolves for it on a machine with these GPUs."""
        return prepare_launch(plan(dataset, run, **kw), fetch_models=False, sd_scripts=str(checkout), gpu_info=gpu_info)

    plan.model, plan.tok, plan.checkout, plan.root, plan.launch = model, tmp_path / "tok", checkout, tmp_path, launch
    return plan


def test_plan_json_has_every_contract_key_with_exact_types(env, tmp_path):
    p = env(make_dataset(tmp_path / "ds"))
    doc = to_builtins(p.document())
    assert list(doc) == [
        "schema",
        "kohya_wrap_version",
        "created_at",
        "preset",
        "dataset",
        "base_model",
        "tokenizer_cache_dir",
        "values",
        "ours",
        "steps",
        "launch",
        "output",
        "sd_scripts",
        "warnings",
    ]
    assert doc["schema"] == 2 and doc["created_at"].endswith("Z")
    assert doc["preset"]["name"] == "likeness-sd15" and len(doc["preset"]["sha256"]) == 64
    assert [Path(f).name for f in doc["preset"]["files"]] == ["likeness-sd15.toml", "base.toml"]
    assert doc["dataset"]["subsets"] == [
        {
            "dir": str((tmp_path / "ds/img/1_ohwx man").resolve()),
            "images": 20,
            "repeats": doc["dataset"]["subsets"][0]["repeats"],
            "class_tokens": "ohwx man",
            "is_reg": False,
        }
    ]
    assert doc["dataset"]["manifest_sha256"] and doc["base_model"] == {
        "source": str(env.model),
        "path": str(env.model),
        "kind": "file",
    }
    assert doc["tokenizer_cache_dir"] == str(env.tok.resolve())
    assert doc["values"]["network_dim"] == {"value": 32, "source": "preset:likeness-sd15"}
    assert doc["values"]["max_train_steps"] == {"value": 3000, "source": "plan"}
    assert "mixed_precision" not in doc["values"]  # automatic: train chooses it for the GPUs it finds
    assert doc["values"]["gradient_accumulation_steps"] == {"value": 1, "source": "default"}
    assert doc["ours"]["target_steps"] == 3000
    steps = doc["steps"]
    assert steps["max_train_steps"] == 3000 == steps["epochs"] * steps["steps_per_epoch"]
    assert steps["train_images_x_repeats"] == 20 * doc["dataset"]["subsets"][0]["repeats"]
    assert steps["arithmetic"].endswith("= 3000 steps")
    run = (tmp_path / "run").resolve()
    # what to train, never where: no interpreter, checkout path, device flag or thread count
    assert doc["launch"] == {
        "gpus": 1,
        "num_machines": 1,
        "machine_rank": 0,
        "main_process_ip": None,
        "main_process_port": 29500,
        "env": doc["launch"]["env"],
    }
    assert doc["launch"]["env"]["PYTHONUNBUFFERED"] == "1" and doc["launch"]["env"]["COLUMNS"] == "1000"
    assert doc["output"] == {
        "dir": str(run / "output"),
        "name": "ohwx",
        "lora_file": str(run / "output/ohwx.safetensors"),
    }
    assert doc["sd_scripts"] == {"commit": None, "matches_pin": False}
    assert sys.executable not in json.dumps(doc) and "--cpu" not in json.dumps(doc)
    assert p.max_train_steps == 3000 and p.values["network_dim"] == 32 and p.output_name == "ohwx"


def test_train_resolves_the_command_on_the_machine_it_finds(env, tmp_path):
    launch = env.launch(make_dataset(tmp_path / "ds"))
    run = (tmp_path / "run").resolve()
    assert list(launch.argv) == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(run / "accelerate.yaml"),
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        launch.argv[14],
        "--cpu",
        str(env.checkout.resolve() / "train_network.py"),
        "--config_file",
        str(run / "config.toml"),
        "--dataset_config",
        str(run / "dataset.toml"),
        "--mixed_precision",
        "no",
    ]
    assert to_builtins(machine_entry(launch.machine))["python"] == sys.executable and launch.machine.device == "cpu"
    assert launch.env["PYTHONUNBUFFERED"] == "1"
    assert "use_cpu: true" in launch.accelerate_config


def test_written_configs_match_the_plan(env, tmp_path):
    p = env(make_dataset(tmp_path / "ds"))
    write_plan(p)
    run = p.run_dir
    assert sorted(x.name for x in run.iterdir()) == ["config.toml", "dataset.toml", "plan.json", "sample_prompts.txt"]
    config = tomllib.loads((run / "config.toml").read_text())
    flat = {k: v for section in config.values() for k, v in section.items()}
    assert flat == dict(p.values)
    assert flat["resolution"] == "512" and flat["max_train_steps"] == 3000 and flat["flip_aug"] is False
    assert flat["dataset_config"] == str(run / "dataset.toml") and flat["sample_prompts"] == str(
        run / "sample_prompts.txt"
    )
    dataset = tomllib.loads((run / "dataset.toml").read_text())
    assert dataset["general"] == {"caption_extension": ".txt"}
    assert dataset["datasets"][0]["resolution"] == 512 and dataset["datasets"][0]["batch_size"] == 2
    assert dataset["datasets"][0]["subsets"][0]["num_repeats"] == p.subsets[0].repeats
    prompts = [line for line in (run / "sample_prompts.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(prompts) == 3 and all("ohwx man" in line and " --d " in line for line in prompts)
    assert [line.split(" --d ")[1].split()[0] for line in prompts] == ["1234", "1235", "1236"]
    assert to_builtins(read_plan(run).document()) == to_builtins(p.document())
    assert read_plan(run).files["config.toml"] == (run / "config.toml").read_text()


def test_explicit_repeats_are_kept(env, tmp_path):
    p = env(make_dataset(tmp_path / "ds", repeats=10, explicit=True))
    assert p.subsets[0].repeats == 10
    assert p.steps.arithmetic == "20 images x 10 repeats / batch 2 = 100 steps per epoch; x 30 epochs = 3000 steps"


def test_absurd_kept_repeats_are_refused_and_prepare_takes_none(env, tmp_path):
    # sd-scripts adds an image to its bucket once per repeat before the first step: 10**11 would hang it
    with pytest.raises(DatasetError, match="99999999999 repeats is out of range: at most 1,000,000"):
        env(make_dataset(tmp_path / "ds", images=2, repeats=99999999999, explicit=True))
    with pytest.raises(DatasetError, match="out of range"):
        env(make_dataset(tmp_path / "gui", images=2, repeats=99999999999), run="r2", overrides=["keep_repeats=true"])
    replaced = env(make_dataset(tmp_path / "gui2", images=2, repeats=99999999999), run="r3")  # plan's own choice
    assert replaced.subsets[0].repeats <= 1000
    photos = tmp_path / "photos"
    photos.mkdir()
    refused = CliRunner().invoke(
        cli,
        [
            "prepare",
            str(photos),
            "-o",
            str(tmp_path / "d"),
            "--token",
            "ohwx",
            "--class",
            "man",
            "--repeats",
            "99999999999",
        ],
    )
    assert refused.exit_code == 2 and "1000000" in refused.output


def test_regularization_images_go_to_dataset_toml(env, tmp_path):
    p = env(make_dataset(tmp_path / "ds", reg=50))
    reg = [s for s in p.subsets if s.is_reg]
    assert reg and reg[0].repeats == 1 and reg[0].class_tokens == "man"
    assert p.steps.reg_images_x_repeats >= p.steps.train_images_x_repeats
    assert p.max_train_steps == 3000


def test_set_overrides_reach_the_config(env, tmp_path):
    p = env(
        make_dataset(tmp_path / "ds"),
        overrides=["network_dim=16", "max_train_steps=500", "caption_dropout_rate=0.0", "network_alpha=0"],
    )
    write_plan(p)
    config = tomllib.loads((p.run_dir / "config.toml").read_text())
    assert config["network_arguments"]["network_alpha"] == 0.0  # a 0 is written, not dropped
    assert p.values["network_dim"] == 16 and p.sources["network_dim"] == "--set"
    assert p.values["max_train_steps"] == 500 and p.sources["max_train_steps"] == "--set"
    assert p.values["caption_dropout_rate"] == 0.0
    with pytest.raises(PresetError, match="unknown sd-scripts argument"):
        env(make_dataset(tmp_path / "ds2"), run="r2", overrides=["netwrk_dim=4"])


def _flag(argv, name: str) -> str:
    return argv[argv.index(name) + 1]


def test_gpus_choose_precision_and_launch_flags(env, tmp_path):
    ds = make_dataset(tmp_path / "ds")
    one = env.launch(ds, run="a", gpu_info=GpuInfo(1, True))
    assert one.machine.launch.mixed_precision == "bf16" and "--cpu" not in one.argv and "--multi_gpu" not in one.argv
    assert one.argv[-2:] == ("--mixed_precision", "bf16")  # for train_network.py: the config file leaves it open
    old = env.launch(ds, run="b", gpu_info=GpuInfo(1, False))
    assert old.machine.launch.mixed_precision == "fp16"
    two = env.launch(ds, run="c", gpu_info=GpuInfo(2, True), gpus=2)
    assert _flag(two.argv, "--num_processes") == "2" and "--multi_gpu" in two.argv
    assert two.plan.steps.num_processes == 2 and two.plan.max_train_steps == 3000
    with pytest.raises(KohyaWrapError, match="only 1 CUDA GPU"):
        env.launch(ds, run="d", gpu_info=GpuInfo(1, True), gpus=2)
    with pytest.raises(KohyaWrapError, match="no CUDA GPU found, so training runs on the CPU"):
        env.launch(ds, run="d2", gpu_info=CPU, gpus=2)
    pinned = env.launch(ds, run="e", gpu_info=GpuInfo(1, True), overrides=["mixed_precision=fp16"])
    assert pinned.plan.values["mixed_precision"] == "fp16" and pinned.plan.sources["mixed_precision"] == "--set"
    assert _flag(pinned.argv, "--mixed_precision") == "fp16" and pinned.argv[-2:] != ("--mixed_precision", "fp16")
    cpu_fp16 = env.launch(ds, run="f", gpu_info=CPU, overrides=["mixed_precision=fp16"])
    assert any("on a machine without a CUDA GPU" in n for n in cpu_fp16.notes)


def test_smoke_preset_plans_four_steps(env, tmp_path):
    p = env(make_dataset(tmp_path / "ds", images=4, size=64), preset="smoke")
    assert p.max_train_steps == 4 and p.values["mixed_precision"] == "no" and p.values["resolution"] == "64"
    assert "--w 64 --h 64" in p.files["sample_prompts.txt"] and " --s 4 " in p.files["sample_prompts.txt"]


def test_finished_runs_are_never_overwritten(env, tmp_path):
    ds = make_dataset(tmp_path / "ds")
    p = env(ds)
    write_plan(p)
    write_plan(env(ds))  # planning again over a plan that never ran is fine
    (p.run_dir / "run.json").write_text("{}")
    with pytest.raises(RunDirError, match="holds a run"):
        env(ds)
    with pytest.raises(RunDirError, match="holds a run"):
        write_plan(p)
    out = tmp_path / "run2" / "output"
    out.mkdir(parents=True)
    (out / "x.safetensors").write_text("")
    with pytest.raises(RunDirError, match="output/"):
        env(ds, run="run2")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="is not a kohya-wrap run directory"):
        env(ds, run="other")


def test_load_plan_errors(tmp_path):
    with pytest.raises(RunDirError, match="has no plan.json"):
        read_plan(tmp_path)
    (tmp_path / "plan.json").write_text('{"schema": 99}')
    with pytest.raises(RunDirError, match="plan schema 99"):
        read_plan(tmp_path)


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="has no img/ folder"):
        scan_dataset(tmp_path / "photos")
    (tmp_path / "d" / "img" / "ohwx man").mkdir(parents=True)
    with pytest.raises(DatasetError, match="folder name is not '<repeats>_<class tokens>'"):
        scan_dataset(tmp_path / "d")
    (tmp_path / "e" / "img" / "1_ohwx man").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(tmp_path / "e")
    (tmp_path / "f" / "img").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no '<repeats>_<class tokens>' folders"):
        scan_dataset(tmp_path / "f")


def test_dataset_scan_reads_the_manifest(tmp_path):
    ds = scan_dataset(make_dataset(tmp_path / "ds", images=3, repeats=5, explicit=True, reg=2))
    assert [(s.images, s.repeats, s.class_tokens, s.is_reg) for s in ds.subsets] == [
        (3, 5, "ohwx man", False),
        (2, 1, "man", True),
    ]
    assert ds.repeats_explicit and ds.token == "ohwx" and ds.class_word == "man" and ds.size == 512
    assert len(ds.manifest_sha256) == 64 and ds.subsets[0].size == (512, 512)


def test_plan_command_json_and_errors(env, tmp_path):
    ds = make_dataset(tmp_path / "ds", images=4, size=64)
    args = [
        "plan",
        str(ds),
        "--preset",
        "smoke",
        "--base-model",
        str(env.model),
        "--tokenizer-cache-dir",
        str(env.tok),
        "--sd-scripts",
        str(env.checkout),
    ]
    result = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "r1"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["values"]["max_train_steps"]["value"] == 4
    assert (tmp_path / "r1" / "plan.json").is_file()
    bad = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "r2"), "--set", "network_dimm=8"])
    assert bad.exit_code == 1
    assert "unknown sd-scripts argument 'network_dimm'" in bad.output and "did you mean" in bad.output
    assert not (tmp_path / "r2").exists()


def test_planning_imports_no_torch(env, tmp_path):
    ds = make_dataset(tmp_path / "ds", images=2)
    code = (
        "import sys\nfrom kohya_wrap.plan import PlanRequest, make_plan\n"
        f"make_plan(PlanRequest({str(ds)!r}, preset='likeness-sd15', base_model={str(env.model)!r}, run_dir={str(tmp_path / 'r')!r},"
        f" tokenizer_cache_dir={str(env.tok)!r}, sd_scripts={str(env.checkout)!r}))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_images_of_another_size_without_resizing_are_refused(env, tmp_path):
    ds = make_dataset(tmp_path / "ds", images=2, size=128)
    with pytest.raises(DatasetError, match="sd-scripts refuses images of another size"):
        env(ds, preset="smoke", overrides=["cache_latents=false"])
    p = env(ds, preset="smoke", run="ok")  # cached latents are resized
    assert any("128x128 px, trained at 64" in w for w in p.warnings)


def test_gpus_are_detected_with_nvidia_smi_not_torch(tmp_path, monkeypatch):
    from kohya_wrap.train.machine import detect_gpus

    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0, NVIDIA H100 80GB HBM3, 9.0\\n1, Tesla T4, 7.5\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == GpuInfo(2, False, ("NVIDIA H100 80GB HBM3", "Tesla T4"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert detect_gpus() == GpuInfo(1, True, ("NVIDIA H100 80GB HBM3",))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the GPU a sweep gave this trainer, not the first one
    assert detect_gpus() == GpuInfo(1, False, ("Tesla T4",))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus().count == 0
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert detect_gpus().count == 0


def test_a_saved_accelerate_config_cannot_change_the_run(env, tmp_path, monkeypatch):
    """accelerate reads ~/.cache/huggingface/accelerate/default_config.yaml unless given its own."""
    import subprocess

    pytest.importorskip("accelerate")
    hf_home = tmp_path / "hf"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 8\nuse_cpu: false\n"
    )
    monkeypatch.setenv("HF_HOME", str(hf_home))
    p = env.launch(make_dataset(tmp_path / "ds"))
    write_plan(p.plan)
    (p.files.accelerate_config).write_text(p.accelerate_config)
    probe = tmp_path / "probe.py"
    probe.write_text("import os; print('WORLD', os.environ.get('WORLD_SIZE', '1'))\n")
    argv = list(p.argv)
    script = next(i for i, a in enumerate(argv) if a.endswith("train_network.py"))
    argv = argv[:script] + [str(probe)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **p.env})
    assert out.returncode == 0, out.stderr
    assert "WORLD 1" in out.stdout
    assert "were not passed" not in out.stderr


def test_several_machines_launch_every_process_with_its_rank(env, tmp_path):
    ds = make_dataset(tmp_path / "ds")
    p = env.launch(ds, run="m", gpu_info=GpuInfo(2, True), gpus=2, machines=Machines(2, 1, "10.0.0.5", 29555))
    argv = list(p.argv)

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    # accelerate counts the processes of all machines; the steps are planned for all of them
    assert flag("--num_processes") == "4" and flag("--num_machines") == "2" and "--multi_gpu" in argv
    assert (
        flag("--machine_rank") == "1"
        and flag("--main_process_ip") == "10.0.0.5"
        and flag("--main_process_port") == "29555"
    )
    assert p.plan.steps.num_processes == 4
    accelerate_yaml = p.accelerate_config
    for line in (
        "distributed_type: 'MULTI_GPU'",
        "num_processes: 4",
        "num_machines: 2",
        "machine_rank: 1",
        "main_process_ip: 10.0.0.5",
        "main_process_port: 29555",
    ):
        assert line in accelerate_yaml.splitlines(), line
    # accelerate's own parser accepts the launcher part exactly as written
    accelerate_launch = pytest.importorskip("accelerate.commands.launch")
    script = next(i for i, a in enumerate(argv) if a.endswith("train_network.py"))
    parsed = accelerate_launch.launch_command_parser().parse_args(argv[3 : script + 1])
    assert (parsed.num_processes, parsed.num_machines, parsed.machine_rank) == (4, 2, 1)
    assert (parsed.main_process_ip, parsed.main_process_port, parsed.multi_gpu) == ("10.0.0.5", 29555, True)
    # one machine with one GPU names no rank or address
    single = env.launch(ds, run="s", gpu_info=GpuInfo(1, True))
    assert "--machine_rank" not in single.argv and "main_process_ip" not in single.accelerate_config


@pytest.mark.parametrize(
    "machines, gpu_info, message",
    [
        ((2, 0, None), GpuInfo(1, True), "needs --main-process-ip"),
        ((2, 2, "10.0.0.5"), GpuInfo(1, True), "--machine-rank 2: must be 0 to 1"),
        ((2, 0, "10.0.0.5"), CPU, "no CUDA GPU found on this machine"),
    ],
)
def test_several_machines_are_checked(env, tmp_path, machines, gpu_info, message):
    with pytest.raises(KohyaWrapError, match=re.escape(message)):
        env.launch(make_dataset(tmp_path / "ds"), gpu_info=gpu_info, machines=Machines(*machines))
    assert not (tmp_path / "run").exists()


def test_plan_command_takes_the_machine_options(env, tmp_path):
    ds = make_dataset(tmp_path / "ds", images=4, size=64)
    args = [
        "plan",
        str(ds),
        "--preset",
        "smoke",
        "--base-model",
        str(env.model),
        "--tokenizer-cache-dir",
        str(env.tok),
        "--sd-scripts",
        str(env.checkout),
        "-o",
        str(tmp_path / "r"),
    ]
    result = CliRunner().invoke(cli, args + ["--num-machines", "2"])
    assert result.exit_code == 1 and "--main-process-ip" in result.output
    result = CliRunner().invoke(cli, args + ["--machine-rank", "-1"])
    assert result.exit_code == 2


def test_likeness_presets_save_state_with_each_checkpoint(env, tmp_path):
    ds = make_dataset(tmp_path / "ds")
    for i, preset in enumerate(("likeness-sd15", "likeness-sd15-768")):
        p = env(ds, run=f"r{i}", preset=preset, overrides=["resolution=512"] if preset.endswith("768") else [])
        assert p.values["save_state"] is True and p.values["save_every_n_steps"] == 250
        assert p.values["save_last_n_steps_state"] == 500
        assert "save_state = true" in p.files["config.toml"]


def test_presets_plan_one_epoch_so_runs_resume(env, tmp_path):
    chosen = env(make_dataset(tmp_path / "ds", images=37))
    assert (chosen.steps.epochs, chosen.max_train_steps, chosen.subsets[0].repeats) == (1, 3000, 163)
    assert not any("epochs of" in w for w in chosen.warnings)
    # explicit repeats leave the epochs to plan: several, and a warning that resuming stops at epoch 1
    several = env(make_dataset(tmp_path / "ds10", images=20, repeats=10, explicit=True), run="r10")
    assert several.steps.epochs == 30
    assert any(
        "resumes correctly only from a state saved in the first epoch (before step 100)" in w for w in several.warnings
    )
