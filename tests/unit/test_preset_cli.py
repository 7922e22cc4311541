import json

from click.testing import CliRunner
from PIL import Image
from sd15_stub import write_sd15_stub

from kohya_wrap.cli import cli
from kohya_wrap.plan import GpuInfo, make_plan, write_plan
from kohya_wrap.preset import load_preset


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
        "gradient_checkpointing": (None, True), "resolution": ("512", "768"), "size": (512, 768)}
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
    plan = make_plan(tmp_path / "ds", preset="smoke", base_model=str(model), run_dir=tmp_path / "run",
                     overrides=["vae=/secret/place/vae.safetensors", "network_dim=8"], tokenizer_cache_dir=tmp_path / "tok",
                     sd_scripts=checkout, gpu_info=GpuInfo(0, False))
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
