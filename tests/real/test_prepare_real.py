"""sd-scripts' own folder-mode dataset scan finds every image `prepare` wrote, with its caption.

No model is loaded: the probe imports train_network, scans DATASET_DIR/img and DATASET_DIR/reg with
config_util.generate_dreambooth_subsets_config_by_subdirs (what --train_data_dir/--reg_data_dir do),
builds the datasets through the sanitizer and blueprint, and prints what each image became.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kohya_wrap.prepare import PrepareOptions, prepare_dataset
from kohya_wrap.sdscripts import layout
from kohya_wrap.sdscripts.checkout import locate

PROBE = r"""
import json, sys
from library import config_util, train_util
import train_network

train_dir, reg_dir, caption_extension = sys.argv[1:4]
args = train_network.setup_parser().parse_args([])
args.resolution = "512"
args.enable_bucket = True
args.caption_extension = caption_extension
train_util.prepare_dataset_args(args, True)
user_config = {"datasets": [{"subsets": config_util.generate_dreambooth_subsets_config_by_subdirs(train_dir, reg_dir)}]}
sanitizer = config_util.ConfigSanitizer(True, True, False, True)
blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
images = [
    {"path": info.absolute_path, "caption": info.caption, "repeats": info.num_repeats, "is_reg": info.is_reg}
    for dataset in group.datasets for info in dataset.image_data.values()
]
print("PROBE " + json.dumps({"images": images, "train": group.num_train_images, "reg": group.num_reg_images}), flush=True)
"""


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 255, (12, 16, 3), np.uint8)).resize(size), np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8))


def test_sd_scripts_finds_every_prepared_image_with_its_caption(tmp_path: Path) -> None:
    src, reg = tmp_path / "my photos", tmp_path / "reg photos"
    (src / "2024 trip").mkdir(parents=True)
    reg.mkdir()
    for n in range(5):
        photo(n, (900, 700)).save(src / f"IMG_{n}.JPG", quality=90)
    photo(9, (700, 900)).save(src / "2024 trip" / "ça.png")
    (src / "notes.txt").write_text("not a photo")
    for n in range(3):
        photo(20 + n, (600, 600)).save(reg / f"r{n}.webp")
    out = tmp_path / "data set"
    result = prepare_dataset(
        PrepareOptions(
            src_dir=src, dataset_dir=out, token="ohwx", class_word="man", crop="center", repeats=7, reg_dir=reg, jobs=2
        )
    )
    assert len(result.images) == 9

    checkout = locate()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out / layout.TRAIN_DIR), str(out / layout.REG_DIR), layout.CAPTION_EXTENSION],
        cwd=checkout.path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(text for text in proc.stdout.splitlines() if text.startswith("PROBE "))
    found = json.loads(line.removeprefix("PROBE "))
    seen = {Path(i["path"]).resolve(): i for i in found["images"]}
    assert (found["train"], found["reg"]) == (6 * 7, 3 * 1)  # images x repeats
    assert len(seen) == len(result.images)
    for image in result.images:
        entry = seen[(out / image.output).resolve()]
        assert entry["caption"] == image.caption
        assert entry["is_reg"] == image.is_reg
        if not image.is_reg:  # sd-scripts re-balances reg repeats against the training images itself
            assert entry["repeats"] == 7
    assert {i["caption"] for i in found["images"]} == {"photo of ohwx man", "photo of man"}
    logs = proc.stdout + proc.stderr
    for complaint in (
        "No caption file found",
        "ignore directory",
        "neither caption file nor class tokens",
        "caption file is empty",
        "not directory",
    ):
        assert complaint not in logs
