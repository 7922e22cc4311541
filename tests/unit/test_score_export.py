"""export: a checkpoint as a standalone LoRA, metadata kept, score added, tensors byte for byte (no dlib needed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from report_run_fixture import OUTPUT_NAME, make_run
from safetensors.numpy import save_file

from kohya_wrap.score import ScoreError
from kohya_wrap.score.export import SCORE_METADATA_KEY, export_checkpoint, read_header

META = {"ss_steps": "2", "ss_network_dim": "4", "ss_output_name": OUTPUT_NAME, "sshs_model_hash": "abc123"}


def bf16_lora(path: Path, metadata: dict[str, str]) -> None:
    """A LoRA file with a bf16 tensor (numpy cannot make one: written by hand, as the format says)."""
    raw_bf16 = np.array([0x3F80, 0x4000, 0xBF80, 0x0000], dtype="<u2").tobytes()  # 1, 2, -1, 0
    raw_f32 = np.array([1.5], dtype="<f4").tobytes()
    header = {
        "__metadata__": metadata,
        "lora_unet_a.lora_down.weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "lora_unet_a.alpha": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    }
    body = json.dumps(header).encode("utf-8")
    body += b" " * (-(8 + len(body)) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw_bf16 + raw_f32)


def tensor_bytes(path: Path) -> bytes:
    _, start = read_header(path)
    return path.read_bytes()[start:]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = make_run(tmp_path, sample_steps=(2, 4))
    out = run / "output"
    bf16_lora(out / f"{OUTPUT_NAME}-step00000002.safetensors", META)
    save_file(
        {"lora_unet_a.alpha": np.array([4.0], dtype=np.float32)},
        str(out / f"{OUTPUT_NAME}.safetensors"),
        metadata={**META, "ss_steps": "4"},
    )
    return run


def score_json(run: Path, recommended: int | None) -> None:
    checkpoints = [
        {
            "step": s,
            "samples": 2,
            "faces": 2,
            "likeness": lk,
            "matches": 2,
            "copies": c,
            "distance": 0.3,
            "variety": 0.5,
            "checkpoint": None,
            "validation_loss": None,
            "images": [],
        }
        for s, lk, c in ((2, 0.71, 0), (4, 0.8, 1))
    ]
    doc = {
        "checkpoints": checkpoints,
        "recommended": None if recommended is None else {"step": recommended},
        "reason": "because" if recommended else "every checkpoint copies",
        "model": {"id": "dlib-x"},
    }
    (run / "score.json").write_text(json.dumps(doc), encoding="utf-8")


def test_the_recommended_checkpoint_with_its_metadata_kept_and_the_score_added(run: Path, tmp_path: Path) -> None:
    score_json(run, 2)
    source = run / "output" / f"{OUTPUT_NAME}-step00000002.safetensors"
    result = export_checkpoint(run, tmp_path / "ohwx.safetensors")
    assert (result.step, result.why, result.source, result.note) == (2, "recommended", source, "")
    header, start = read_header(result.path)
    meta = header["__metadata__"]
    assert {k: meta[k] for k in META} == META  # sd-scripts' metadata kept, its tensor hash still true
    score = json.loads(meta[SCORE_METADATA_KEY])
    assert score["step"] == 2 and score["likeness"] == 0.71
    assert score["recommended"] is True and score["model"] == "dlib-x"
    assert tensor_bytes(result.path) == tensor_bytes(source)  # bf16 bytes copied verbatim
    assert start % 8 == 0
    src_header, _ = read_header(source)
    assert {k: v for k, v in header.items() if k != "__metadata__"} == {
        k: v for k, v in src_header.items() if k != "__metadata__"
    }
    assert result.prompt == "<lora:ohwx:0.8> photo of ohwx man"


def test_the_exported_file_opens_with_safetensors(run: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    score_json(run, 2)
    result = export_checkpoint(run, tmp_path / "a.safetensors", step=4)
    with safe_open(str(result.path), framework="numpy") as f:
        assert f.get_tensor("lora_unet_a.alpha").tolist() == [4.0]
        assert json.loads(f.metadata()[SCORE_METADATA_KEY])["copies"] == 1
    assert result.why == "--step"


def test_without_a_recommendation_the_last_checkpoint_and_why(run: Path, tmp_path: Path) -> None:
    result = export_checkpoint(run, tmp_path / "a")  # no score.json; the suffix is added
    assert (result.step, result.why, result.path.name) == (4, "last", "a.safetensors")
    assert "no score.json" in result.note and result.score is None
    assert SCORE_METADATA_KEY not in read_header(result.path)[0]["__metadata__"]
    score_json(run, None)
    again = export_checkpoint(run, tmp_path / "b.safetensors")
    assert again.why == "last" and "every checkpoint copies" in again.note
    score_json(run, 2)
    (run / "output" / f"{OUTPUT_NAME}-step00000002.safetensors").unlink()
    gone = export_checkpoint(run, tmp_path / "c.safetensors")
    assert gone.why == "last" and "the recommended step 2 has no LoRA file" in gone.note


def test_a_folder_as_output_and_refusing_to_overwrite(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    first = export_checkpoint(run, folder, step=2)
    assert first.path == folder / f"{OUTPUT_NAME}-step2.safetensors"
    before = first.path.read_bytes()
    with pytest.raises(ScoreError, match="already exists; export never overwrites"):
        export_checkpoint(run, folder, step=2)
    assert first.path.read_bytes() == before
    assert [p.name for p in folder.iterdir()] == [first.path.name]  # no temporary file left behind


def test_an_unknown_step_and_a_run_without_loras(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ScoreError, match="--step 3: no checkpoint was saved at that step") as e:
        export_checkpoint(run, tmp_path / "x.safetensors", step=3)
    assert e.value.hint == "saved steps: 2, 4"
    bare = make_run(tmp_path, sample_steps=(), with_lora=False, name="bare")
    with pytest.raises(ScoreError, match="holds no LoRA file"):
        export_checkpoint(bare, tmp_path / "y.safetensors")


def test_an_unreadable_checkpoint_is_an_error(run: Path, tmp_path: Path) -> None:
    (run / "output" / f"{OUTPUT_NAME}.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ScoreError, match="step 4 .* is incomplete"):
        export_checkpoint(run, tmp_path / "z.safetensors", step=4)
    assert not (tmp_path / "z.safetensors").exists()


def test_a_trailing_slash_names_a_new_folder(run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kohya_wrap.cli import cli

    out = tmp_path / "newdir" / "sub"
    done = CliRunner().invoke(cli, ["export", str(run), "--step", "2", "-o", f"{out}/"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert (out / f"{OUTPUT_NAME}-step2.safetensors").is_file()
    assert not (tmp_path / "newdir" / "sub.safetensors").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_an_exported_lora_has_the_mode_the_umask_gives(run: Path, tmp_path: Path, umask: int) -> None:
    import os

    old = os.umask(umask)
    try:
        result = export_checkpoint(run, tmp_path / f"m{umask:o}.safetensors", step=2)
    finally:
        os.umask(old)
    assert result.path.stat().st_mode & 0o777 == 0o666 & ~umask  # 0644 under umask 022, not 0600
