"""Benchmark: `prepare` against a naive Pillow pipeline on the same generated 24-MP JPEGs.

    .venv/bin/python bench/prepare.py [--images 40] [--keep DIR]

Naive: one process; per image a full decode, ImageOps.exif_transpose, centre crop, LANCZOS resize to
512, PNG save. prepare: `--crop center` (the same crop) with every core, the same without the identity
check (dlib, where installed: what it costs on photos without a face), then `--crop face` for reference. Prints images/s for each, the ratio (target >= 6x), the PSNR of prepare's centre crops
against the naive outputs (target >= 35 dB), and each side's peak RSS. Not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kohya_wrap.prepare import PrepareOptions, prepare_dataset  # noqa: E402

SIZE = 512
WIDTH, HEIGHT = 6000, 4000


def generate(folder: Path, count: int) -> None:
    """`count` 6000x4000 JPEGs (quality 90): smooth structure, edges and sensor-like noise, varied per image."""
    if all((folder / f"IMG_{i:04d}.jpg").exists() for i in range(count)):
        return
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    noise = rng.normal(0, 7, (HEIGHT // 2, WIDTH // 2, 3)).astype(np.float32)
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if path.exists():
            continue
        base = np.sin(xx / (90 + 7 * i)) * np.cos(yy / (130 + 3 * i)) * 60 + 128
        edges = np.where(((xx // (400 + 13 * i)) + (yy // (300 + 11 * i))) % 2 == 0, 25.0, -25.0)
        rgb = np.stack([base + edges, base[:, ::-1] - edges, 255 - base], axis=-1)
        shift = (i * 97) % (HEIGHT // 2), (i * 131) % (WIDTH // 2)
        tile = np.roll(noise, shift, axis=(0, 1))
        rgb += np.tile(tile, (2, 2, 1))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)


def naive(sources: list[Path], out: Path) -> None:
    for path in sources:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            small = im.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            small.save(out / f"{path.stem}.png")


def psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (prepare's pool workers are joined at its end)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--keep", type=Path, default=None, help="generate into (and reuse) this folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kw-bench-prepare-"))
    src = args.keep or work / "src"
    src.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        generate(src, args.images)
        sources = sorted(src.glob("*.jpg"))[: args.images]
        print(
            f"{len(sources)} sources, {WIDTH}x{HEIGHT} JPEG q90, "
            f"{sum(p.stat().st_size for p in sources) / len(sources) / 1e6:.1f} MB each "
            f"(ready in {time.perf_counter() - t:.0f} s); {os.cpu_count()} cores"
        )
        for p in sources:  # both sides read from the page cache
            p.read_bytes()

        load_before = os.getloadavg()[0]

        results = {}
        for label, crop, check in (
            ("center", "center", True),
            ("center-unchecked", "center", False),
            ("face", "face", True),
        ):
            dataset = work / f"dataset-{label}"
            t, cpu = time.perf_counter(), cpu_seconds()
            result = prepare_dataset(
                PrepareOptions(
                    src_dir=src,
                    dataset_dir=dataset,
                    token="ohwx",
                    class_word="man",
                    size=SIZE,
                    crop=crop,  # type: ignore[arg-type]
                    identity=check,
                )
            )
            results[label] = (time.perf_counter() - t, cpu_seconds() - cpu, result)
        prepare_parent_rss = peak_rss_mib(resource.RUSAGE_SELF)

        naive_out = work / "naive"
        naive_out.mkdir()
        t, cpu = time.perf_counter(), cpu_seconds()
        naive(sources, naive_out)
        naive_s, naive_cpu = time.perf_counter() - t, cpu_seconds() - cpu

        n = len(sources)
        center_s, center_cpu, center = results["center"]
        face_s, face_cpu, _ = results["face"]
        unchecked_s, unchecked_cpu, _ = results["center-unchecked"]
        by_source = {Path(i.source).stem: center.dataset_dir / i.output for i in center.images}
        values = [psnr(naive_out / f"{p.stem}.png", by_source[p.stem]) for p in sources]
        print(f"{'pipeline':<26}{'seconds':>9}{'images/s':>10}{'vs naive':>10}{'CPU s/image':>13}")
        for label, wall, cpu in (
            ("naive (1 process)", naive_s, naive_cpu),
            ("prepare --crop center", center_s, center_cpu),
            ("  the same, no identity check", unchecked_s, unchecked_cpu),
            ("prepare --crop face", face_s, face_cpu),
        ):
            print(f"{label:<26}{wall:>9.2f}{n / wall:>10.2f}{naive_s / wall:>9.2f}x{cpu / n:>13.3f}")
        print(
            f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} "
            "(other work on the machine slows the 2-process side more than the 1-process one)"
        )
        print(f"PSNR prepare center vs naive: min {min(values):.2f} dB, mean {sum(values) / n:.2f} dB (target >= 35)")
        print(
            f"CPU-time ratio naive / prepare center: {naive_cpu / center_cpu:.2f}x per core; with both cores free "
            f"that is {2 * naive_cpu / center_cpu:.1f}x wall (a projection, not a measurement)"
        )
        print(
            f"peak RSS: prepare's parent {prepare_parent_rss:.0f} MiB (includes generating the images unless "
            f"--keep had them), largest prepare worker {peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB "
            f"(one image at a time each), after naive {peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB"
        )
        ok = naive_s / center_s >= 6 and min(values) >= 35
        print("target met" if ok else "TARGET MISSED")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
