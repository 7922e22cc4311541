"""A tiny stand-in for `accelerate launch train_network.py`, for the process test tier.

It writes what sd-scripts v0.10.1 writes, on the same streams (tests/data/transcripts were recorded
from the real one): rich log records on stderr (wrapped at 80 columns unless COLUMNS is set), the
tqdm `steps:` bar redrawn with `\\r` and never ended, accelerator.print lines on stdout; and the
files it writes into output_dir: step checkpoints and the final LoRA (real Kohya key names, ss_*
metadata, built with numpy + safetensors), `-state` folders with train_state.json, sample PNGs.

    fake_trainer.py [--launcher] [fake options] --config_file RUN_DIR/config.toml [--resume DIR --skip_until_initial_step]

--launcher     start a child copy of itself and wait for it without forwarding signals (like
               accelerate launch), exiting 1 with a CalledProcessError traceback if the child fails.
--replay NAME  write tests/data/transcripts/NAME.pipe.{stderr,stdout}.txt and exit with the code in
               NAME.pipe.meta.txt (the failure classes).
--step-delay S seconds per step; --step-work S: seconds of CPU work (one core) per step (a CPU-bound
               trainer: it takes longer when something else takes its core); --nan-at N: avr_loss becomes nan
               from step N; --oom-at N: a CUDA
               out-of-memory traceback at step N; --zero-up: the LoRA's up weights are all zero;
               --missing-package: exit like a trainer that cannot import a package; --crash-at N: a
               traceback and exit 1 at step N; --kill-self-at N: the trainer dies of SIGKILL at step N
               (as from the kernel's OOM killer); --torn-save-at N: the checkpoint saved at step N is
               cut short and the trainer dies of SIGKILL (killed mid-write); --ignore-sigint: the trainer ignores SIGINT (a hung
               trainer); --pid-file F: append "pid pgid" of each process to F.
--samples-from JSON  sample images made from photos, on a schedule: a JSON list of [from_step, folder];
               at each sample step the folder with the highest from_step <= step gives the images (the
               i-th sample is its i-th photo, cycling), saved as sd-scripts names them.
--sample-count N     samples per sample step (one per prompt of sd-scripts' prompt file; default 1).
SIGINT: KeyboardInterrupt in both processes, nothing saved (transcript F5_sigint_group).

Steps are counted as train_network.py v0.10.1 counts them (NetworkTrainer.train): a resume or
--initial_step with --skip_until_initial_step starts global_step at the initial step minus the
batches of the epochs it skips (the relative counter of docs/sd-scripts.md#step-counter-after-a-resume);
an epoch has as many batches as the dataset config's images x num_repeats (batch 1), else
fake_batches_per_epoch of the config file. --network_weights loads a LoRA file before training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRANSCRIPTS = HERE.parent / "data" / "transcripts"


# -- rich-like log records ------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.width = int(os.environ.get("COLUMNS") or 80)
        self.last_time = ""

    def record(self, level: str, message: str, where: str = "train_util.py:1") -> None:
        now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        time_col = now if now != self.last_time else " " * 19
        self.last_time = now
        msg_width = max(self.width - 30 - len(where), 10)
        lines = _wrap(message, msg_width)
        out = [f"{time_col} {level:<8} {lines[0]:<{msg_width}} {where}"]
        out += [f"{'':29}{line:<{msg_width}} {'':{len(where)}}" for line in lines[1:]]
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()


def _wrap(text: str, width: int) -> list[str]:
    """rich's way: break at spaces, fold words longer than the column."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def bar(n: int, total: int, elapsed: float, loss: float | None) -> None:
    pct = int(100 * n / total) if total else 100
    filled = int(10 * n / total) if total else 10
    cells = "█" * filled + " " * (10 - filled)
    if n == 0:
        rate, remaining = "?it/s", "?"
    else:
        per = elapsed / n
        rate = f"{per:5.2f}s/it" if per > 1 else f"{1 / per if per else 0:5.2f}it/s"
        left = int(per * (total - n))
        remaining = f"{left // 60:02d}:{left % 60:02d}"
    el = int(elapsed)
    postfix = "" if loss is None else f", avr_loss={loss:.3g}"
    sys.stderr.write(
        f"\rsteps: {pct:3d}%|{cells}| {n}/{total} [{el // 60:02d}:{el % 60:02d}<{remaining}, {rate}{postfix}]"
    )
    sys.stderr.flush()


# -- files sd-scripts writes ----------------------------------------------------------------


def lora_modules() -> list[tuple[str, int, int, bool]]:
    """(name, in, out, is_conv) of networks.lora for SD1.5 without conv: 72 text encoder + 192 U-Net."""
    modules = []
    for i in range(12):
        p = f"lora_te_text_model_encoder_layers_{i}_"
        modules += [
            (p + "self_attn_q_proj", 768, 768, False),
            (p + "self_attn_k_proj", 768, 768, False),
            (p + "self_attn_v_proj", 768, 768, False),
            (p + "self_attn_out_proj", 768, 768, False),
            (p + "mlp_fc1", 768, 3072, False),
            (p + "mlp_fc2", 3072, 768, False),
        ]
    blocks = [(f"down_blocks_{b}_attentions_{a}", c) for b, c in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1)]
    blocks += [("mid_block_attentions_0", 1280)]
    blocks += [(f"up_blocks_{b}_attentions_{a}", c) for b, c in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)]
    for block, c in blocks:
        p = f"lora_unet_{block}_"
        t = p + "transformer_blocks_0_"
        modules += [(p + "proj_in", c, c, True), (p + "proj_out", c, c, True)]
        for attn, ctx in (("attn1", c), ("attn2", 768)):
            modules += [
                (t + f"{attn}_to_q", c, c, False),
                (t + f"{attn}_to_k", ctx, c, False),
                (t + f"{attn}_to_v", ctx, c, False),
                (t + f"{attn}_to_out_0", c, c, False),
            ]
        modules += [(t + "ff_net_0_proj", c, 8 * c, False), (t + "ff_net_2", 4 * c, c, False)]
    return modules


def write_lora(path: Path, cfg: dict, step: int, epoch: int, *, zero_up: bool, nan: bool) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    dim = int(cfg.get("network_dim") or 4)
    alpha = float(cfg.get("network_alpha", 1.0))
    rng = np.random.default_rng(step)
    tensors = {}
    unet_only = bool(cfg.get("network_train_unet_only"))
    for name, fan_in, fan_out, conv in lora_modules():
        if unet_only and name.startswith("lora_te"):
            continue
        down = rng.standard_normal((dim, fan_in)).astype(np.float32) * 0.01
        up = (
            np.zeros((fan_out, dim), np.float32)
            if zero_up
            else rng.standard_normal((fan_out, dim)).astype(np.float32) * 1e-3
        )
        if nan:
            up[0, 0] = np.nan
        if conv:
            down, up = down[:, :, None, None], up[:, :, None, None]
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = np.array(alpha, np.float32)
    base = Path(str(cfg.get("pretrained_model_name_or_path", "")))
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(alpha),
        "ss_max_train_steps": str(cfg.get("max_train_steps")),
        "ss_steps": str(step),
        "ss_epoch": str(epoch),
        "ss_output_name": str(cfg.get("output_name")),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_sd_model_name": base.name,
        "ss_sd_scripts_commit_hash": "ae72efb92babe89ff8e70f057e42db68440e8d61",
        "ss_learning_rate": str(cfg.get("learning_rate")),
        "ss_seed": str(cfg.get("seed")),
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.sai_model_spec": "1.0.1",
    }
    if base.is_file():
        metadata["ss_new_sd_model_hash"] = hashlib.sha256(base.read_bytes()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def write_png(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * 8 for _ in range(8))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def write_photo_sample(path: Path, photo: Path) -> None:
    """A sample image made from a photo, at most 512 px, as a PNG (what sd-scripts writes)."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    image.thumbnail((512, 512))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    image.save(partial, format="PNG")
    partial.replace(path)


def photo_for(schedule: list, step: int, index: int) -> Path | None:
    folder = None
    for start, where in sorted(schedule, key=lambda item: item[0]):
        if step >= int(start):
            folder = Path(where)
    if folder is None:
        return None
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return photos[index % len(photos)] if photos else None


def batches_per_epoch(dataset_config: str | None, cfg: dict) -> int:
    """images x num_repeats of the dataset config's subsets (batch 1), else fake_batches_per_epoch."""
    if dataset_config:
        with open(dataset_config, "rb") as f:
            data = tomllib.load(f)
        total = 0
        for dataset in data.get("datasets", []):
            for subset in dataset.get("subsets", []):
                folder = Path(str(subset.get("image_dir", "")))
                images = (
                    [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
                    if folder.is_dir()
                    else []
                )
                total += len(images) * int(subset.get("num_repeats", 1))
        if total:
            return total
    return int(cfg.get("fake_batches_per_epoch", 40))


def save_state(log: Log, out_dir: Path, name: str, epoch: int, step: int) -> None:
    state = out_dir / name
    log.record("INFO", f"Saving current state to {state}", "accelerator.py:3241")
    state.mkdir(parents=True, exist_ok=True)
    log.record(
        "INFO", f"save train state to {state}/train_state.json at epoch {epoch} step {step}", "train_network.py:946"
    )
    (state / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": step}))
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        (state / name).write_bytes(b"")
    log.record("INFO", f"Random states saved in {state}/random_states_0.pkl", "checkpointing.py:170")


# -- the run --------------------------------------------------------------------------------


def load_config(path: str) -> dict:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def replay(name: str) -> int:
    stdout = (TRANSCRIPTS / f"{name}.pipe.stdout.txt").read_bytes()
    stderr = (TRANSCRIPTS / f"{name}.pipe.stderr.txt").read_bytes()
    meta = (TRANSCRIPTS / f"{name}.pipe.meta.txt").read_text()
    code = int(next(line.split(":")[1] for line in meta.splitlines() if line.startswith("exit_code")))
    half = len(stderr) // 2
    sys.stderr.buffer.write(stderr[:half])
    sys.stderr.flush()
    sys.stdout.buffer.write(stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(stderr[half:])
    sys.stderr.flush()
    return code


def train(args: argparse.Namespace, cfg: dict) -> int:
    log = Log()
    out_dir = Path(cfg["output_dir"])
    name = str(cfg.get("output_name") or "last")
    total = int(cfg.get("max_train_steps") or 1600)
    every = cfg.get("save_every_n_steps")
    sample_every = cfg.get("sample_every_n_steps")
    with_state = bool(cfg.get("save_state"))
    log.record("INFO", "Using v1 tokenizer", "strategy_sd.py:26")
    log.record("INFO", "Using DreamBooth method.", "train_network.py:530")
    log.record("WARNING", "no regularization images / 正則化画像が見つかりませんでした", "train_util.py:2167")
    if args.missing_package:
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "train_network.py", line 12, in <module>\n'
            "    import voluptuous\nModuleNotFoundError: No module named 'voluptuous'\n"
        )
        return 1
    out("accelerator device: cpu")
    log.record("INFO", "loading model for process 0/1", "train_util.py:5574")
    log.record(
        "INFO", f"load StableDiffusion checkpoint: {cfg.get('pretrained_model_name_or_path')}", "train_util.py:5530"
    )
    log.record("INFO", "caching latents...", "train_util.py:1170")
    out("import network module: networks.lora")
    if args.network_weights:
        if not Path(args.network_weights).is_file():
            sys.stderr.write(f"FileNotFoundError: No such file or directory: '{args.network_weights}'\n")
            return 1
        out(f"load network weights from {args.network_weights}: <All keys matched successfully>")
    out("prepare optimizer, data loader etc.")
    initial = 0
    if args.resume:
        state = json.loads((Path(args.resume) / "train_state.json").read_text())
        log.record("INFO", f"resume training from local state: {args.resume}", "train_util.py:4777")
        log.record("INFO", f"load train state from {args.resume}/train_state.json: {state}", "train_network.py:969")
        if args.skip_until_initial_step:
            initial = int(state["current_step"])
    if args.initial_step is not None:
        initial = args.initial_step if args.skip_until_initial_step else 0
    batches = batches_per_epoch(args.dataset_config, cfg)
    out("running training / 学習開始")
    for label, value in (
        ("num train images * repeats / 学習画像の数×繰り返し回数", batches),
        ("num validation images * repeats / 学習画像の数×繰り返し回数", 0),
        ("num reg images / 正則化画像の数", 0),
        ("num batches per epoch / 1epochのバッチ数", batches),
        ("num epochs / epoch数", max(1, -(-total // batches))),
        ("batch size per device / バッチサイズ", 1),
    ):
        out(f"  {label}: {value}")
    out("  gradient accumulation steps / 勾配を合計するステップ数 = 1")
    out(f"  total optimization steps / 学習ステップ数: {total}")
    if initial:
        log.record("INFO", f"skipping {initial} steps / {initial}ステップをスキップします", "train_network.py:1265")
    # train_network.py: global_step = initial_step minus the batches of the epochs skipped before it
    epoch_to_start = initial // batches
    first = initial - epoch_to_start * batches
    remaining = initial
    for skipped_epoch in range(epoch_to_start):
        log.record(
            "INFO",
            f"skipping epoch {skipped_epoch + 1} because initial_step (multiplied) is {remaining}",
            "train_network.py:1342",
        )
        remaining -= batches
    schedule = json.loads(args.samples_from) if args.samples_from else None
    bar(0, total - initial, 0, None)
    out("\nepoch 1/1\n")
    started = time.monotonic()
    loss = None
    losses: list[float] = []
    for step in range(first + 1, total + 1):
        time.sleep(args.step_delay)
        if args.step_work:
            busy_until = time.thread_time() + args.step_work
            while time.thread_time() < busy_until:
                sum(i * i for i in range(1000))
        if args.crash_at and step >= args.crash_at:
            sys.stderr.write(
                '\nTraceback (most recent call last):\n  File "train_network.py", line 1450, in train\n'
                "    batch = next(it)\nRuntimeError: DataLoader worker (pid 4242) exited unexpectedly\n"
            )
            return 1
        if args.kill_self_at and step >= args.kill_self_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.oom_at and step >= args.oom_at:
            sys.stderr.write(
                '\nTraceback (most recent call last):\n  File "train_network.py", line 1450, in train\n'
                "    loss = self.process_batch(...)\ntorch.OutOfMemoryError: CUDA out of memory. "
                "Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 7.79 GiB\n"
            )
            return 1
        current = float("nan") if args.nan_at and step >= args.nan_at else 1.0 / (step + 1) + 0.08
        losses.append(current)
        loss = sum(losses) / len(losses)
        done = step - first
        bar(done, total - initial, time.monotonic() - started, None if done == 1 and loss is None else loss)
        if every and step % int(every) == 0:
            ckpt = out_dir / f"{name}-step{step:08d}.safetensors"
            out(f"\nsaving checkpoint: {ckpt}")
            write_lora(ckpt, cfg, step, 1, zero_up=args.zero_up, nan=False)
            if args.torn_save_at and step >= args.torn_save_at:
                ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # killed mid-write
                os.kill(os.getpid(), signal.SIGKILL)
            if with_state:
                log.record("INFO", "", "train_util.py:5963")
                log.record("INFO", f"saving state at step {step}", "train_util.py:5964")
                save_state(log, out_dir, f"{name}-step{step:08d}-state", 1, step)
        if sample_every and step % int(sample_every) == 0:
            log.record(
                "INFO", f"generating sample images at step / サンプル画像生成 ステップ: {step}", "train_util.py:6394"
            )
            sys.stderr.write(
                "\n\r  0%|          | 0/4 [00:00<?, ?it/s]\x1b[A\n\r100%|██████████| 4/4 [00:01<00:00,  2.42s/it]\x1b[A"
            )
            stamp = datetime.now().strftime("%Y%m%d%H%M%S")
            for index in range(args.sample_count):
                target = out_dir / "sample" / f"{name}_{step:06d}_{index:02d}_{stamp}_{1234 + index}.png"
                photo = photo_for(schedule, step, index) if schedule else None
                if photo is not None:
                    write_photo_sample(target, photo)
                else:
                    write_png(target)
    if with_state:
        log.record("INFO", "saving last state.", "train_util.py:5990")
        save_state(log, out_dir, f"{name}-state", 1, total)
    final = out_dir / f"{name}.safetensors"
    out(f"\nsaving checkpoint: {final}")
    write_lora(final, cfg, total, 1, zero_up=args.zero_up, nan=False)
    log.record("INFO", "model saved.", "train_network.py:1729")
    bar(total - first, total - initial, time.monotonic() - started, loss)
    sys.stderr.write("\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--launcher", action="store_true")
    ap.add_argument("--replay")
    ap.add_argument("--step-delay", type=float, default=0.0)
    ap.add_argument("--step-work", type=float, default=0.0)
    ap.add_argument("--nan-at", type=int)
    ap.add_argument("--oom-at", type=int)
    ap.add_argument("--zero-up", action="store_true")
    ap.add_argument("--missing-package", action="store_true")
    ap.add_argument("--crash-at", type=int)
    ap.add_argument("--kill-self-at", type=int)
    ap.add_argument("--torn-save-at", type=int)
    ap.add_argument("--ignore-sigint", action="store_true")
    ap.add_argument("--pid-file")
    ap.add_argument("--samples-from")
    ap.add_argument("--sample-count", type=int, default=1)
    ap.add_argument("--config_file")
    ap.add_argument("--max_train_steps", type=int)
    ap.add_argument("--network_weights")
    ap.add_argument("--initial_step", type=int)
    ap.add_argument("--dataset_config")
    ap.add_argument("--resume")
    ap.add_argument("--skip_until_initial_step", action="store_true")
    ap.add_argument("--pretrained_model_name_or_path")
    ap.add_argument("--output_dir")
    ap.add_argument("--logging_dir")
    ap.add_argument("--sample_prompts")
    args, _unknown = ap.parse_known_args()
    if args.pid_file:
        with open(args.pid_file, "a") as f:
            f.write(f"{os.getpid()} {os.getpgid(0)}\n")
    if args.ignore_sigint and not args.launcher:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.launcher:
        child = [sys.executable, __file__] + [a for a in sys.argv[1:] if a != "--launcher"]
        process = subprocess.Popen(child)
        process.wait()  # no signal forwarding, exactly like accelerate's simple_launcher
        if process.returncode != 0:
            raise subprocess.CalledProcessError(returncode=process.returncode, cmd=child)
        return 0
    if args.replay:
        return replay(args.replay)
    cfg = load_config(args.config_file)
    if (
        args.pretrained_model_name_or_path
    ):  # the command line overrides the config file (docs/sd-scripts.md#config-file-merging)
        cfg["pretrained_model_name_or_path"] = args.pretrained_model_name_or_path
    for key in ("output_dir", "logging_dir", "sample_prompts"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    if args.max_train_steps:
        cfg["max_train_steps"] = args.max_train_steps
    return train(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
