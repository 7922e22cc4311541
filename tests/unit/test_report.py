"""report.html from run folders: summary numbers, the loss curve's points, the sample grid, no network."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from report_run_fixture import PROMPTS, loss_event_count, make_run

from kohya_wrap.cli import cli
from kohya_wrap.errors import RunDirError
from kohya_wrap.events import EventWriter, Progress, Warning_
from kohya_wrap.report.html import render_report, write_report
from kohya_wrap.report.summary import load_run, moving_average
from kohya_wrap.rundir import format_duration
from kohya_wrap.sample.session import load_sessions
from kohya_wrap.sdscripts.samples import checkpoint_files, parse_sample_name, read_prompt_texts


def polyline_points(page: str, element_id: str) -> int:
    m = re.search(rf'<polyline id="{element_id}"[^>]*data-points="(\d+)" points="([^"]*)"', page)
    assert m, f"no polyline {element_id}"
    assert int(m.group(1)) == len(m.group(2).split())
    return int(m.group(1))


def test_summary_of_recorded_run(tmp_path: Path) -> None:
    s = load_run(make_run(tmp_path))
    assert (s.preset, s.train_images, s.train_images_x_repeats, s.reg_images) == ("smoke", 4, 40, 0)
    assert (s.last_step, s.total_steps, s.planned_steps) == (4, 4, 4)
    assert s.final_loss == 1.12 and s.outcome == "finished" and s.exit_code == 0
    assert s.elapsed_s == 13.0 and s.mean_it_per_s == pytest.approx(4 / 13)
    assert s.wall_s == pytest.approx(73.5)
    assert s.lora_file == tmp_path / "run" / "output" / "tinylora.safetensors"
    assert any("no regularization images" in w for w in s.warnings)


def test_report_content(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    page = render_report(load_run(run_dir))
    assert "http://" not in page and "https://" not in page
    assert polyline_points(page, "loss-line") == loss_event_count(run_dir) == 8
    assert polyline_points(page, "loss-average") == 8
    summary = page[page.index('id="summary"') : page.index("</table>", page.index('id="summary"'))]
    for expected in ("smoke", "4 images (40 with repeats)", "4 of 4", "13s", "1m14s", "0.308", "1.12", "finished"):
        assert expected in summary
    grid = re.search(r'<table class="grid" id="training-samples" data-rows="(\d+)" data-columns="(\d+)">', page)
    assert grid and grid.groups() == ("2", "2")
    assert re.findall(r'<tr class="grid-row" data-step="(\d+)">', page) == ["2", "4"]
    assert page.count('src="data:image/jpeg;base64,') == 4
    assert "ohwx man &lt;on&gt; a beach &amp; &quot;sunset&quot;" in page  # prompts are escaped
    assert "no regularization images" in page
    assert "ae72efb92babe89ff8e70f057e42db68440e8d61" in page
    assert '<td data-key="environment.torch"><code>2.14.1</code>' in page
    # a falsy value is shown as itself
    assert re.search(r"<code>noise_offset</code></td><td><code>0\.0</code>", page)
    assert 'id="no-lr"' in page


def test_grid_cells_follow_prompt_index(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=(2,))
    page = render_report(load_run(run_dir))
    row = page[page.index('data-step="2"') :]
    cells = re.findall(r'<td data-prompt-index="(\d)"><img alt="([^"]+)"', row)
    assert cells == [
        ("0", "tinylora_000002_00_20261125091531_42.png"),
        ("1", "tinylora_000002_01_20261125091531_42.png"),
    ]


def test_epoch_samples_get_step_from_plan(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=())
    sample = run_dir / "output" / "sample"
    for epoch in (0, 1):
        Image.new("RGB", (8, 8)).save(sample / f"tinylora_e{epoch:06d}_00_20261125091531.png")
    (sample / "unrelated.png").write_bytes(b"")
    page = render_report(load_run(run_dir))
    assert "epoch 0 (step 0)" in page and "epoch 1 (step 40)" in page
    assert re.search(r'data-rows="2" data-columns="2"', page)
    assert "unrelated.png" not in page


def _write_events(run_dir: Path, events: list) -> None:  # type: ignore[type-arg]
    with EventWriter(run_dir / "events.jsonl") as w:
        for e in events:
            w.write(e)


def _progress(step: int, loss: float | None, lr: float | None = None) -> Progress:
    return Progress(
        step=step, total=10, rate=2.0, rate_unit="it/s", elapsed_s=step / 2, eta_s=1.0, avr_loss=loss, lr=lr
    )


def test_unfinished_run_with_nan_and_lr(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, with_run_json=False, sample_steps=())
    (run_dir / "events.jsonl").unlink()
    _write_events(
        run_dir,
        [
            _progress(0, None),
            _progress(1, 0.5, 1e-4),
            _progress(2, math.nan, 1e-4),
            _progress(3, 0.4, 5e-5),
            Warning_(message="careful <b>"),
        ],
    )
    s = load_run(run_dir)
    assert s.outcome == "unfinished" and s.final_loss == 0.4 and s.manifest is None
    page = render_report(s)
    assert polyline_points(page, "loss-line") == 2  # the NaN reading is not drawn, and is said so
    assert "1 readings were not finite" in page
    assert polyline_points(page, "lr-line") == 3
    assert "careful &lt;b&gt;" in page and "No run.json yet" in page


def test_planned_run_without_events(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, with_run_json=False, with_lora=False, sample_steps=())
    (run_dir / "events.jsonl").unlink()
    s = load_run(run_dir)
    assert (s.outcome, s.last_step, s.total_steps, s.final_loss) == ("planned", None, 4, None)
    page = render_report(s)
    assert 'id="no-loss"' in page and 'id="no-samples"' in page and "<polyline" not in page


def test_a_run_whose_events_were_lost_is_not_planned(tmp_path: Path) -> None:
    # output/ holds the LoRA, but events.jsonl and run.json are gone: train refuses to start it over
    run_dir = make_run(tmp_path, with_run_json=False, sample_steps=())
    (run_dir / "events.jsonl").unlink()
    assert load_run(run_dir).outcome == "unfinished"


def test_failed_outcome_from_events(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=())
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {"t": "2026-11-25T09:16:00.000Z", "type": "finished", "outcome": "oom", "exit_code": 1, "returncode": 1}
            )
            + "\n"
        )
    s = load_run(run_dir)
    assert s.outcome == "oom" and s.exit_code == 1
    assert 'class="outcome-bad">oom</span>' in render_report(s)


def test_sample_sessions_become_grids(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=())
    session = run_dir / "samples" / "20261125-101500"
    images = []
    for stem, step in (("tinylora-step00000002", 2), ("tinylora", 4)):
        (session / stem).mkdir(parents=True)
        for p in range(2):
            for k in range(2):
                seq = p * 2 + k + 1
                Image.new("RGB", (16, 16), (seq * 30, 0, 0)).save(session / stem / f"im_{seq:06d}.png")
                images.append(
                    {
                        "file": f"{stem}/im_{seq:06d}.png",
                        "lora_file": f"/x/{stem}.safetensors",
                        "lora_name": stem,
                        "step": step,
                        "prompt_index": p,
                        "image_index": k,
                        "seed": 7 + k,
                    }
                )
    (session / "samples.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "created_at": "2026-11-25T10:15:00Z",
                "base_model": "/m.safetensors",
                "prompts": ["p0", "p1"],
                "weight": 0.0,
                "seed": 7,
                "count": 2,
                "width": 64,
                "height": 64,
                "sampler_steps": 4,
                "images": images,
            }
        )
    )
    (run_dir / "samples" / "broken").mkdir()
    (run_dir / "samples" / "broken" / "samples.json").write_text("{not json")
    sessions = load_sessions(run_dir)
    assert len(sessions) == 1 and len(sessions[0].images) == 8
    page = render_report(load_run(run_dir), sessions)
    assert re.search(r'id="sample-session-0" data-rows="2" data-columns="2"', page)
    assert "weight 0.0, seed 7, 64x64, 4 sampler steps" in page
    assert page.count("data:image/jpeg;base64,") == 8


def test_write_report_and_cli(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    assert write_report(run_dir) == run_dir / "report.html"
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(cli, ["report", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.output


def test_not_a_run(tmp_path: Path) -> None:
    # the same words as status: report reads a run through the same RunView.load
    with pytest.raises(RunDirError, match="is not a run directory: it holds neither plan.json nor events.jsonl"):
        load_run(tmp_path)
    with pytest.raises(RunDirError, match="no such run directory"):
        load_run(tmp_path / "absent")
    (tmp_path / "plan.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="not an object"):
        load_run(tmp_path)
    (tmp_path / "plan.json").write_text("{")
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_moving_average_and_duration() -> None:
    assert moving_average([1.0, 3.0, 5.0, math.nan, 7.0], 2) == [1.0, 2.0, 4.0, 5.0, 7.0]
    # one duration format across status, the report and the live view
    assert format_duration(None) == "?" and format_duration(0.0) == "0s" and format_duration(3725) == "1h02m"


def test_sample_names_and_prompts(tmp_path: Path) -> None:
    n = parse_sample_name("my_lora_v2_000250_03_20261125091531_1234.png")
    assert (n.output_name, n.step, n.epoch, n.prompt_index, n.seed) == ("my_lora_v2", 250, None, 3, 1234)
    n = parse_sample_name("e000002_00_20261125091531.png")
    assert (n.output_name, n.step, n.epoch, n.seed) == (None, None, 2, None)
    assert parse_sample_name("im_000001.png") is None
    prompts = tmp_path / "p.txt"
    prompts.write_text("# comment\n\nfirst --n bad --w 64\nsecond\n")
    assert read_prompt_texts(prompts) == ["first", "second"]
    assert read_prompt_texts(tmp_path / "none.txt") == []
    out = tmp_path / "out"
    out.mkdir()
    for name in (
        "face.safetensors",
        "face-step00000100.safetensors",
        "face-000002.safetensors",
        "faces.safetensors",
        "face-step00000100-state",
    ):
        (out / name).write_bytes(b"")
    assert [p.name for p in checkpoint_files(out, "face")] == [
        "face-000002.safetensors",
        "face-step00000100.safetensors",
        "face.safetensors",
    ]
    assert PROMPTS[0] == "a photo of ohwx man"


def test_gen_command_and_target_selection(tmp_path: Path) -> None:
    from kohya_wrap.sample.generate import LoraTarget, SampleError, select_targets
    from kohya_wrap.sdscripts.gen_command import GenRequest, build_argv, expected_outputs, prompt_line

    assert prompt_line("ohwx man --n blurry", [3, 4]) == "ohwx man --n blurry --d 3,4"
    for bad in ("", "# comment", "two\nlines", "x --d 5"):
        with pytest.raises(ValueError):
            prompt_line(bad, [1])
    assert expected_outputs(2, 2) == [
        (0, 0, "im_000001.png"),
        (0, 1, "im_000002.png"),
        (1, 0, "im_000003.png"),
        (1, 1, "im_000004.png"),
    ]
    req = GenRequest(
        checkout=Path("/sd"),
        base_model=Path("/m.safetensors"),
        lora_file=Path("/l.safetensors"),
        weight=0.0,
        prompts_file=Path("/p.txt"),
        out_dir=Path("/o"),
        images_per_prompt=2,
        width=64,
        height=64,
        steps=2,
        scale=7.5,
        sampler="euler_a",
        tokenizer_cache_dir=None,
    )
    argv = build_argv(req, python="py")
    assert argv[:2] == ["py", "/sd/gen_img.py"]
    assert argv[argv.index("--network_mul") + 1] == "0.0" and "--tokenizer_cache_dir" not in argv
    assert "--seed" not in argv  # seeds travel in the prompt file (gen_img.py's --seed bug)

    targets = [
        LoraTarget(Path("c.safetensors"), None),
        LoraTarget(Path("b.safetensors"), 20),
        LoraTarget(Path("a.safetensors"), 10),
    ]
    assert [t.step for t in select_targets(targets, "all")] == [10, 20, None]
    assert [t.step for t in select_targets(targets, "last")] == [None]
    assert [t.step for t in select_targets(targets, "20, 10")] == [20, 10]
    with pytest.raises(SampleError, match="checkpoints exist at steps: 10, 20"):
        select_targets(targets, "30")
    with pytest.raises(SampleError, match="not 'all', 'last'"):
        select_targets(targets, "most")
    final = LoraTarget(Path("face.safetensors"), 20, final=True)
    chosen = select_targets([*targets, final], "all")
    assert [t.path.name for t in chosen] == ["a.safetensors", "face.safetensors", "c.safetensors"]


def test_samples_are_embedded_as_jpeg_no_larger_than_768_px(tmp_path):
    import base64
    import io

    from PIL import Image

    from kohya_wrap.report.html import EMBED_MAX_SIDE, image_uri

    big = tmp_path / "big.png"
    Image.new("RGB", (1024, 512), (200, 120, 90)).save(big)
    head, _, data = image_uri(big).partition(",")
    assert head == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as shown:
        assert shown.format == "JPEG" and shown.size == (EMBED_MAX_SIDE, 384)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert image_uri(broken) == "data:image/png;base64," + base64.b64encode(b"not a png").decode()
