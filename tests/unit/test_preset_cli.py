import json

from click.testing import CliRunner
from PIL import Image
from sd15_stub import write_sd15_stub

from kohya_wrap.cli import cli
from kohya_wrap.plan import PlanRequest, make_plan
from kohya_wrap.preset import load_preset
from kohya_wrap.rundir import write_plan
from kohya_wrap.train.machine import GpuInfo
from kohya_wrap.train.runner import prepare_launch


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_list_names_every_shipped_preset():
    result = run("presets", "list", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"base", "likeness-sd15", "likeness-sd15-768", "smoke"}
    assert rows["smoke"]["extends"] == ["likeness-sd15", "base"]
    assert "likeness-sd15-768" in run("presets", "list").output


def test_show_gives_every_value_with_its_source():
    doc = json.loads(run("presets", "show", "smoke", "--set", "network_dim=8", "--json").stdout)
    assert doc["values"]["network_dim"] == {"value": 8, "source": "--set"}
    assert doc["values"]["network_module"] == {"value": "networks.lora", "source": "preset:base"}
    assert doc["ours"]["target_steps"] == {"value": 4, "source": "preset:smoke"}
    everything = json.loads(run("presets", "show", "smoke", "--all", "--json").stdout)
    assert len(everything["values"]) == 193
    assert everything["values"]["noise_offset"] == {"value": None, "source": "default"}
    text = run("presets", "show", "likeness-sd15").output
    assert "network_dim" in text and "preset:likeness-sd15" in text


def test_diff_shows_the_differences():
    rows = json.loads(run("presets", "diff", "likeness-sd15", "likeness-sd15-768", "--json").stdout)
    assert {r["key"]: (r["a"], r["b"]) for r in rows} == {
        "gradient_checkpointing": (None, True),
        "resolution": ("512", "768"),
        "size": (512, 768),
    }
    assert "same values" in run("presets", "diff", "smoke", "smoke").output


def test_validate_accepts_good_files_and_names_the_bad_key(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('schema = 1\nextends = "likeness-sd15"\n[network]\nnetwork_dim = 16\nnetwork_alpha = 8.0\n')
    result = run("presets", "validate", str(good))
    assert result.exit_code == 0 and "valid" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\n[logging]\nconsole_log_file = "/home/me/.bashrc"\n')
    result = run("presets", "validate", str(bad))
    assert result.exit_code == 1
    assert "[logging] console_log_file: console_log_file is not allowed in a preset" in result.output


def test_unknown_preset_name_suggests():
    result = run("presets", "show", "likeness")
    assert result.exit_code == 1 and "no preset named 'likeness'" in result.output


def test_export_makes_a_shareable_preset_from_a_run(tmp_path):
    sub = tmp_path / "ds" / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64)).save(sub / f"{i}.png")
    model = write_sd15_stub(tmp_path / "m.safetensors")
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
            preset="smoke",
            base_model=str(model),
            run_dir=tmp_path / "run",
            overrides=["vae=/secret/place/vae.safetensors", "network_dim=8"],
            tokenizer_cache_dir=tmp_path / "tok",
            sd_scripts=checkout,
        )
    )
    write_plan(plan)
    out = tmp_path / "shared.toml"
    result = run("presets", "export", str(tmp_path / "run"), "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert str(tmp_path) not in text and "/secret/" not in text
    assert "sd-scripts commit:" in text and "left out" in text
    exported = load_preset(str(out))
    assert exported.values["network_dim"].value == 8 and exported.values["resolution"].value == "64"
    assert "vae" not in exported.values and exported.ours["target_steps"].value == 4
    again = run("presets", "export", str(tmp_path / "run"), "-o", str(out))
    assert again.exit_code == 1 and "never overwrites" in again.output


def test_export_from_a_cpu_run_carries_only_what_the_user_chose(tmp_path):
    """mixed_precision = "no" decided for a CPU would make a GPU user train in fp32: it stays out."""
    sub = tmp_path / "ds" / "img" / "1_ohwx man"
    sub.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64)).save(sub / f"{i}.png")
    model = write_sd15_stub(tmp_path / "m.safetensors")
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
            base_model=str(model),
            run_dir=tmp_path / "run",
            overrides=["network_dim=8"],
            tokenizer_cache_dir=tmp_path / "tok",
            sd_scripts=checkout,
        )
    )
    assert "mixed_precision" not in plan.values  # automatic: train chooses it on the machine it finds
    write_plan(plan)
    out = tmp_path / "shared.toml"
    assert run("presets", "export", str(tmp_path / "run"), "-o", str(out)).exit_code == 0
    exported = load_preset(str(out))
    chosen = {k for k, s in plan.sources.items() if s.startswith(("preset:", "--set"))}
    assert set(exported.values) == chosen
    for key in (
        "mixed_precision",
        "output_name",
        "output_dir",
        "sample_prompts",
        "pretrained_model_name_or_path",
        "tokenizer_cache_dir",
        "gradient_accumulation_steps",
    ):
        assert key not in exported.values, key
    assert exported.values["network_dim"].value == 8 and exported.ours["auto_mixed_precision"].value is True
    gpu = make_plan(
        PlanRequest(
            tmp_path / "ds",
            preset=str(out),
            base_model=str(model),
            run_dir=tmp_path / "run2",
            tokenizer_cache_dir=tmp_path / "tok",
            sd_scripts=checkout,
        )
    )
    launch = prepare_launch(gpu, fetch_models=False, sd_scripts=str(checkout), gpu_info=GpuInfo(1, True))
    assert launch.machine.launch.mixed_precision == "bf16"  # a GPU user of the preset gets the automatic choice


def test_show_prints_the_kohya_wrap_table_title():
    result = run("presets", "show", "smoke")
    assert result.exit_code == 0 and "[kohya_wrap]" in result.output


def test_validate_reports_every_error_not_the_first(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'schema = 1\n[t]\nnetwork_dim = 0\nepoch = 10\noptimizer_type = "adamw9bit"\n[kohya_wrap]\nsize = 1\n'
    )
    result = run("presets", "validate", str(path))
    assert result.exit_code == 1
    for words in (
        "network_dim = 0 is out of range",
        "unknown sd-scripts argument 'epoch'",
        "max_train_epochs",
        "'adamw9bit'",
        "size must be at least 64",
        "4 problems",
    ):
        assert words in result.output, words
    doc = json.loads(run("presets", "validate", str(path), "--json").stdout)
    assert doc["valid"] is False and len(doc["errors"]) == 4


def test_gui_names_point_to_the_sd_scripts_argument():
    for text, target in (
        ("epoch=10", "max_train_epochs"),
        ("lr=1e-4", "learning_rate"),
        ("batch_size=2", "train_batch_size"),
        ("dim=16", "network_dim"),
        ("alpha=8", "network_alpha"),
        ("steps=100", "max_train_steps"),
    ):
        result = run("presets", "show", "likeness-sd15", "--set", text)
        assert result.exit_code == 1 and f"sd-scripts calls it '{target}'" in result.output, (text, result.output)
