import pytest
import tomllib

from kohya_wrap.sdscripts.configs import (
    DatasetSubset,
    SamplePrompt,
    render_config_toml,
    render_dataset_toml,
    render_sample_prompts,
    tokenizer_subdir,
)


def test_config_toml_keeps_exact_types_and_every_falsy_value():
    values = {
        "learning_rate": 0.0001,
        "caption_dropout_rate": 0.0,
        "keep_tokens": 0,
        "flip_aug": False,
        "optimizer_type": "",
        "resolution": "512",
        "text_encoder_lr": [5e-05],
        "network_args": [],
        "network_dim": 32,
        "vae": None,
    }
    text = render_config_toml(values, header="test header")
    assert text.startswith("# test header\n")
    doc = tomllib.loads(text)
    flat = {k: v for section in doc.values() for k, v in section.items()}
    assert flat == {k: v for k, v in values.items() if v is not None}  # None is never written; nothing else dropped
    assert type(flat["caption_dropout_rate"]) is float and flat["caption_dropout_rate"] == 0.0
    assert "caption_dropout_rate = 0.0" in text
    assert 'resolution = "512"' in text
    assert set(doc) <= {
        "model_arguments",
        "dataset_arguments",
        "network_arguments",
        "optimizer_arguments",
        "training_arguments",
        "saving_arguments",
        "sample_prompt_arguments",
        "logging_arguments",
        "metadata_arguments",
        "other_arguments",
    }
    assert all(isinstance(section, dict) for section in doc.values())  # flat: one level of sections


def test_config_toml_reads_back_with_sd_scripts_toml_parser():
    toml = pytest.importorskip("toml")  # sd-scripts reads --config_file with toml 0.10.2, not tomllib
    values = {"learning_rate": 5e-05, "network_alpha": 16.0, "output_name": 'a "quoted" \\ name', "seed": 0}
    doc = toml.loads(render_config_toml(values))
    flat = {k: v for section in doc.values() for k, v in section.items()}
    assert flat == values


def test_dataset_toml_has_the_types_voluptuous_requires():
    subsets = [
        DatasetSubset("/d/img/10_ohwx man", 10, "ohwx man", False),
        DatasetSubset("/d/reg/1_man", 1, "man", True),
    ]
    doc = tomllib.loads(render_dataset_toml(subsets, resolution="512", batch_size=2, enable_bucket=True))
    assert doc == {
        "general": {"caption_extension": ".txt"},
        "datasets": [
            {
                "resolution": 512,
                "batch_size": 2,
                "enable_bucket": True,
                "subsets": [
                    {"image_dir": "/d/img/10_ohwx man", "num_repeats": 10, "class_tokens": "ohwx man", "is_reg": False},
                    {"image_dir": "/d/reg/1_man", "num_repeats": 1, "class_tokens": "man", "is_reg": True},
                ],
            }
        ],
    }
    two = tomllib.loads(render_dataset_toml(subsets[:1], resolution="512,768", batch_size=1, enable_bucket=False))
    assert two["datasets"][0]["resolution"] == [512, 768]
    assert two["datasets"][0]["enable_bucket"] is False


def test_sample_prompts_have_fixed_seeds_and_sizes():
    text = render_sample_prompts(
        [
            SamplePrompt("a photo of ohwx man", "blurry", 64, 64, 1234, 4, 7.0),
            SamplePrompt("ohwx man smiling", "", 512, 768, 1235, 28, 7.5),
        ],
        header="h",
    )
    assert text == (
        "# h\n"
        "a photo of ohwx man --n blurry --w 64 --h 64 --d 1234 --s 4 --l 7.0\n"
        "ohwx man smiling --w 512 --h 768 --d 1235 --s 28 --l 7.5\n"
    )


@pytest.mark.parametrize("prompt", ["a --w 9 trick", "two\nlines", "# comment", " "])
def test_sample_prompts_refuse_text_sd_scripts_would_misread(prompt):
    with pytest.raises(ValueError):
        render_sample_prompts([SamplePrompt(prompt, "", 64, 64, 1, 4, 7.0)])


def test_tokenizer_folder_is_named_as_sd_scripts_looks_for_it(tmp_path):
    assert tokenizer_subdir(tmp_path) == tmp_path / "openai_clip-vit-large-patch14"


def test_relocate_dataset_toml_moves_the_image_folders_inside_the_old_run_dir_only():
    from pathlib import Path

    from kohya_wrap.sdscripts.configs import DatasetSubset, relocate_dataset_toml, render_dataset_toml

    old, new = Path("/old/run"), Path("/new/run")
    subsets = [
        DatasetSubset("/old/run/dataset/10_ohwx man", 10, "ohwx man", False),
        DatasetSubset("/data/reg", 1, "man", True),
    ]
    text = render_dataset_toml(subsets, resolution="512", batch_size=2, enable_bucket=False, header="dataset.toml")
    moved = relocate_dataset_toml(text, old, new)
    assert moved is not None and moved.startswith(
        "# dataset.toml\n# Its image folders were moved by train from /old/run"
    )
    doc = tomllib.loads(moved)
    assert [s["image_dir"] for s in doc["datasets"][0]["subsets"]] == ["/new/run/dataset/10_ohwx man", "/data/reg"]
    assert doc["datasets"][0]["batch_size"] == 2 and doc["datasets"][0]["subsets"][0]["num_repeats"] == 10
    assert relocate_dataset_toml(text, Path("/elsewhere"), new) is None
    for odd in (
        "datasets = 3",
        "datasets = ['x']",
        "[[datasets]]\nsubsets = 'x'",
        "[[datasets]]\nsubsets = [1, {image_dir = 2}]",
    ):
        assert relocate_dataset_toml(odd, old, new) is None
