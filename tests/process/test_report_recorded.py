"""`kohya-wrap report` as a process, on a run folder whose events come from a recorded sd-scripts run."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image
from report_run_fixture import OUTPUT_NAME, PROMPTS, STAND_IN_LORA, loss_event_count, make_run


class PageParser(HTMLParser):
    """Collects what the checks need from report.html."""

    def __init__(self) -> None:
        super().__init__()
        self.polylines: dict[str, dict[str, str]] = {}
        self.grids: dict[str, dict[str, str]] = {}
        self.grid_rows: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.summary: dict[str, str] = {}
        self._key: str | None = None
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for name in ("href", "src", "action", "xlink:href"):
            if name in a:
                self.urls.append(a[name])
        if tag == "polyline":
            self.polylines[a["id"]] = a
        elif tag == "table" and a.get("class") == "grid":
            self.grids[a["id"]] = a
        elif tag == "tr" and a.get("class") == "grid-row":
            self.grid_rows.append(a.get("data-step", ""))
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "table":
            self._in_summary = a.get("id") == "summary"
        elif tag == "td" and self._in_summary:
            self._key = a.get("data-key")
            self.summary[self._key or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None
        elif tag == "table":
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.summary[self._key] += data


def kohya_wrap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kohya_wrap", *args], capture_output=True, text=True, timeout=120)


def test_report_of_recorded_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, transcript="A_cli", sample_steps=(2, 4))
    done = kohya_wrap("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    page_path = run_dir / "report.html"
    assert f"report written: {page_path}" in done.stdout
    text = page_path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    page = PageParser()
    page.feed(text)

    assert page.summary["preset"] == "smoke"
    assert page.summary["dataset"] == "4 images (40 with repeats)"
    assert page.summary["steps"] == "4 of 4"
    assert page.summary["training time"] == "13s"
    assert page.summary["mean it/s"] == "0.308"
    assert page.summary["final loss"] == "1.12"
    assert page.summary["outcome"].startswith("finished")

    loss = page.polylines["loss-line"]
    assert int(loss["data-points"]) == len(loss["points"].split()) == loss_event_count(run_dir)
    assert len(page.polylines["loss-average"]["points"].split()) == loss_event_count(run_dir)

    grid = page.grids["training-samples"]
    assert (grid["data-rows"], grid["data-columns"]) == ("2", str(len(PROMPTS)))
    assert page.grid_rows == ["2", "4"]
    assert len(page.images) == 2 * len(PROMPTS)
    for src in page.images:  # every image is a real PNG inside the page
        head, data = src.split(",", 1)
        assert head == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)
    assert all(url.startswith("data:") for url in page.urls)


def test_report_of_long_recorded_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, transcript="F5x_sigint_ignored_bg", sample_steps=())
    out = tmp_path / "page.html"
    done = kohya_wrap("report", str(run_dir), "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = PageParser()
    page.feed(out.read_text(encoding="utf-8"))
    count = loss_event_count(run_dir)
    assert count > 40
    assert len(page.polylines["loss-line"]["points"].split()) == count
    assert not (run_dir / "report.html").exists()


def test_runs_lists_the_recorded_run(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", name="first")
    done = kohya_wrap("runs", str(tmp_path / "runs"), "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["outcome"], row["steps_done"], row["final_loss"], row["preset"]) == ("finished", 4, 1.12, "smoke")


def test_report_of_a_non_run(tmp_path: Path) -> None:
    done = kohya_wrap("report", str(tmp_path))
    assert done.returncode == 1
    assert "is not a run directory: it holds neither plan.json nor events.jsonl" in done.stderr
    assert "Traceback" not in done.stderr


# A stand-in for sd-scripts' gen_img.py (the process boundary): it reads the arguments `sample`
# passes, the way gen_img.py v0.10.1 does, and writes im_NNNNNN.png files with the prompt and seed
# in their PNG text, or exits 1 when told to.
FAKE_GEN_IMG = r"""
import argparse, os, re, sys
from PIL import Image, PngImagePlugin
p = argparse.ArgumentParser()
for flag in ("--v1", "--sequential_file_name", "--sdpa", "--fp16"):
    p.add_argument(flag, action="store_true")
for name, kind in (("--ckpt", str), ("--from_file", str), ("--outdir", str), ("--images_per_prompt", int),
                   ("--W", int), ("--H", int), ("--steps", int), ("--scale", float), ("--sampler", str),
                   ("--tokenizer_cache_dir", str)):
    p.add_argument(name, type=kind)
p.add_argument("--network_module", nargs="*")
p.add_argument("--network_weights", nargs="*")
p.add_argument("--network_mul", type=float, nargs="*")
args = p.parse_args()
assert args.v1 and args.sequential_file_name and os.path.isfile(args.ckpt)
if "FAIL" in open(args.from_file).read():
    print("Traceback (most recent call last):\nRuntimeError: the fake generator failed", file=sys.stderr)
    sys.exit(1)
os.makedirs(args.outdir, exist_ok=True)
n = 0
for line in open(args.from_file, encoding="utf-8").read().splitlines():
    m = re.search(r" --d ([\d,]+)", line)
    seeds = [int(s) for s in m.group(1).split(",")]
    prompt = line[:m.start()]
    for k in range(args.images_per_prompt):
        n += 1
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", prompt)
        info.add_text("seed", str(seeds[k]))
        info.add_text("mul", str(args.network_mul))
        Image.new("RGB", (args.W, args.H), (n * 40 % 256, 0, 0)).save(os.path.join(args.outdir, f"im_{n:06d}.png"), pnginfo=info)
print("done!")
"""


def fake_checkout(root: Path) -> Path:
    checkout = root / "fake-sd-scripts"
    checkout.mkdir()
    (checkout / "train_network.py").write_text("raise SystemExit('not used here')\n")
    (checkout / "gen_img.py").write_text(FAKE_GEN_IMG)
    return checkout


def test_sample_a_run_through_the_generator_process(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=(2,))
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    checkout = fake_checkout(tmp_path)
    done = kohya_wrap(
        "sample",
        str(run_dir),
        "--prompt",
        "ohwx man",
        "--prompt",
        "ohwx man --n blurry",
        "-n",
        "2",
        "--seed",
        "100",
        "--size",
        "64",
        "--weight",
        "0.0",
        "--sd-scripts",
        str(checkout),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    rows = sorted((i["step"], i["prompt_index"], i["image_index"], i["seed"]) for i in made["images"])
    # the stand-in LoRA files carry no metadata: the step comes from the file name, or the plan for the final file
    assert rows == [(s, p, k, 100 + k) for s in (2, 4) for p in (0, 1) for k in (0, 1)]
    by_file = {Path(i["path"]).parent.name for i in made["images"]}
    assert by_file == {"tinylora-step00000002", "tinylora"}
    for item in made["images"]:
        with Image.open(item["path"]) as image:
            assert image.text["seed"] == str(item["seed"])
            assert image.text["prompt"] == ["ohwx man", "ohwx man --n blurry"][item["prompt_index"]]
            assert image.text["mul"] == "[0.0]"  # a weight of 0.0 is passed, not dropped
    session = Path(made["folder"])
    assert session.parent == run_dir / "samples"
    assert (session / "prompts.txt").read_text() == "ohwx man --d 100,101\nohwx man --n blurry --d 100,101\n"
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="sample-session-0" data-rows="2" data-columns="2"' in page

    again = kohya_wrap(
        "sample",
        str(run_dir),
        "--prompt",
        "x",
        "--steps-of",
        "last",
        "--seed",
        "1",
        "--sd-scripts",
        str(checkout),
        "--json",
    )
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert Path(second["folder"]) != session and session.is_dir()  # an earlier session is never touched
    assert {Path(i["path"]).parent.name for i in second["images"]} == {"tinylora"}


def test_sample_reports_generator_failure_and_bad_input(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=())
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    checkout = fake_checkout(tmp_path)
    failed = kohya_wrap("sample", str(run_dir), "--prompt", "FAIL", "--sd-scripts", str(checkout))
    assert failed.returncode == 1
    assert "the fake generator failed" in failed.stderr and "gen.log" in failed.stderr
    missing_step = kohya_wrap("sample", str(run_dir), "--prompt", "x", "--steps-of", "3", "--sd-scripts", str(checkout))
    assert missing_step.returncode == 1 and "no checkpoint at step 3" in missing_step.stderr
    assert "checkpoints exist at steps: 2" in missing_step.stderr
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    no_base = kohya_wrap("sample", str(lone), "--prompt", "x", "--sd-scripts", str(checkout))
    assert no_base.returncode == 1 and "--base-model" in no_base.stderr
    bad_size = kohya_wrap("sample", str(run_dir), "--prompt", "x", "--size", "30", "--sd-scripts", str(checkout))
    assert bad_size.returncode == 1 and "not a multiple of 8" in bad_size.stderr


def test_sample_of_an_exported_lora_offline_without_a_tokenizer_stops_cleanly(tmp_path: Path) -> None:
    # kohya-wrap's own tokenizer cache is empty (KOHYA_WRAP_HOME is the test's) and HF_HUB_OFFLINE=1
    checkout = fake_checkout(tmp_path)
    loras = tmp_path / "loras"
    loras.mkdir()
    lora = loras / "ohwx.safetensors"
    lora.write_bytes(STAND_IN_LORA)
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    done = kohya_wrap(
        "sample",
        str(lora),
        "--prompt",
        "x",
        "--base-model",
        str(tmp_path / "sd15.safetensors"),
        "--sd-scripts",
        str(checkout),
    )
    assert done.returncode == 11, done.stderr
    said = " ".join(done.stderr.split())
    assert "CLIP tokenizer" in said and "--tokenizer-cache-dir" in said and "Traceback" not in done.stderr
    assert sorted(p.name for p in loras.iterdir()) == ["ohwx.safetensors"]  # no empty folder beside the LoRA


def test_sample_leaves_out_a_checkpoint_cut_short_and_refuses_one_given_alone(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=(2,))
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    checkout = fake_checkout(tmp_path)
    torn = run_dir / "output" / f"{OUTPUT_NAME}-step00000002.safetensors"
    torn.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")  # a header that says 64 bytes, cut after one
    common = ("--prompt", "x", "--seed", "1", "--size", "64", "--sd-scripts", str(checkout))
    done = kohya_wrap("sample", str(run_dir), *common, "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert {Path(i["path"]).parent.name for i in made["images"]} == {OUTPUT_NAME}  # the final file alone
    assert len(made["skipped"]) == 1 and made["skipped"][0].startswith(f"skipped {torn.name}: it is cut short")
    assert f"warning: skipped {torn.name}: it is cut short" in " ".join(done.stderr.split())

    asked = kohya_wrap("sample", str(run_dir), *common, "--steps-of", "2")
    assert asked.returncode == 1 and "Traceback" not in asked.stderr
    assert f"the checkpoint of step 2 ({torn.name}) is cut short" in " ".join(asked.stderr.split())

    alone = kohya_wrap("sample", str(torn), *common)
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    said = " ".join(alone.stderr.split())
    assert f"{torn} is not a complete LoRA file" in said and "export it again" in said

    (run_dir / "output" / f"{OUTPUT_NAME}.safetensors").write_bytes(b"\x10\x00")
    none_left = kohya_wrap("sample", str(run_dir), *common)
    assert none_left.returncode == 1 and "has no complete LoRA file" in " ".join(none_left.stderr.split())
    assert "--resume" in none_left.stderr
    sessions = run_dir / "samples"
    assert len(list(sessions.iterdir())) == 1  # the refusals made no session folder
    assert "cut short" in " ".join(kohya_wrap("sample", "--help").stdout.split())


def test_sample_shows_a_progress_view_not_the_generators_output(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=(2,))
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    checkout = fake_checkout(tmp_path)
    done = kohya_wrap(
        "sample", str(run_dir), "--prompt", "ohwx man", "--seed", "1", "--size", "64", "--sd-scripts", str(checkout)
    )
    assert done.returncode == 0, done.stderr
    assert "sampled tinylora-step00000002.safetensors (1/2 images)" in done.stderr
    assert "sampled tinylora.safetensors (2/2 images)" in done.stderr
    assert "done!" not in done.stdout + done.stderr  # the generator's own output is in gen.log
    session = next((run_dir / "samples").iterdir())
    assert "done!" in (session / "gen.log").read_text()


def test_sample_with_a_tokenizer_folder_that_holds_none_names_it(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, sample_steps=(2,))
    (tmp_path / "sd15.safetensors").write_bytes(b"base")
    checkout = fake_checkout(tmp_path)
    empty = tmp_path / "no-tokenizer"
    empty.mkdir()
    done = kohya_wrap(
        "sample", str(run_dir), "--prompt", "x", "--tokenizer-cache-dir", str(empty), "--sd-scripts", str(checkout)
    )
    assert done.returncode == 1, done.stderr
    assert f"--tokenizer-cache-dir {empty}" in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
    assert not (run_dir / "samples").exists()
