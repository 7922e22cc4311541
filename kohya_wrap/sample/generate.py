"""`sample`: images from a LoRA, or from each checkpoint of a run, with sd-scripts' own generator.

A stage of its own, after train: it reads the run's plan and checkpoints, holds the run
directory's lock while it generates (never beside a trainer), makes a new session folder
(kohya_wrap.sample.session), and calls on_done(run_dir) at the end, where the CLI rewrites the
report, as train's on_saved does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap import rundir
from kohya_wrap.codec import utc_now_text
from kohya_wrap.errors import KohyaWrapError, ModelError, RunDirError
from kohya_wrap.fsutil import atomic_write_text
from kohya_wrap.sample.session import (
    LOG_FILE,
    PROMPTS_FILE,
    SampleEntry,
    SampleImage,
    SampleSession,
    SamplesManifest,
    session_of,
    write_samples,
)

if TYPE_CHECKING:
    from kohya_wrap.rundir import Plan
    from kohya_wrap.sdscripts.gen_command import GenRequest
    from kohya_wrap.sdscripts.output import LineSplitter


class SampleError(KohyaWrapError):
    """Sample images could not be made."""


@dataclass(frozen=True)
class SampleOptions:
    prompts: tuple[str, ...]
    weight: float = 0.8
    seed: int | None = None  # None: a random seed, recorded in samples.json
    count: int = 1
    width: int = 512
    height: int = 512
    sampler_steps: int = 30
    scale: float = 7.5
    sampler: str = "euler_a"
    steps_of: str = "all"  # "all", "last", or comma-separated step numbers


@dataclass(frozen=True)
class SampleProgress:
    """Where a `sample` call stands: the LoRA being sampled and the images made so far, of all."""

    lora: str  # the LoRA file's name, or "base model"
    index: int  # 1-based, of `loras`
    loras: int
    done: int  # images made, all LoRAs together
    total: int


@dataclass(frozen=True)
class LoraTarget:
    path: Path | None  # None: the base model without a LoRA
    step: int | None
    final: bool = False  # the run's last file (`<name>.safetensors`)


@dataclass(frozen=True)
class SampleContext:
    run_dir: Path | None
    base_model: Path
    tokenizer_cache_dir: Path | None
    targets: tuple[LoraTarget, ...]
    sessions_dir: Path
    skipped: tuple[str, ...] = ()  # a sentence for each LoRA file of the run left out (cut short)


# -- what to sample ---------------------------------------------------------------------------


def _checkpoint_step(path: Path) -> int | None:
    from kohya_wrap.sdscripts.samples import checkpoint_step

    return checkpoint_step(path)


def select_targets(candidates: Sequence[LoraTarget], steps_of: str) -> tuple[LoraTarget, ...]:
    if not candidates:
        return ()
    # the final file is the same weights as the step checkpoint saved with it: sample it once, as the final
    by_step_final: dict[int, LoraTarget] = {}
    rest = []
    for t in sorted(candidates, key=lambda t: t.final):
        if t.step is None:
            rest.append(t)
        else:
            by_step_final[t.step] = t
    ordered = sorted(by_step_final.values(), key=lambda t: t.step or 0) + rest
    spec = steps_of.strip().lower()
    if spec == "all":
        return tuple(ordered)
    if spec == "last":
        return (ordered[-1],)
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SampleError(
            f"--steps-of {steps_of!r} is not 'all', 'last' or a list of step numbers.",
            "Use for example --steps-of 500,1000 or --steps-of last.",
        ) from None
    by_step = {t.step: t for t in ordered if t.step is not None}
    missing = [s for s in wanted if s not in by_step]
    if missing:
        have = ", ".join(str(s) for s in sorted(by_step)) or "none"
        raise SampleError(
            f"no checkpoint at step {', '.join(map(str, missing))}; checkpoints exist at steps: {have}.",
            "Pick steps from that list, or use --steps-of all.",
        )
    return tuple(by_step[s] for s in wanted)


def resolve(
    target: Path, *, steps_of: str, base_model: Path | None, tokenizer_cache_dir: Path | None, out_dir: Path | None
) -> SampleContext:
    """Which base model, tokenizer and LoRA files a `sample` call uses, and where its images go."""
    target = Path(target).expanduser().resolve()
    run_dir = _run_of(target)
    plan = rundir.read_plan(run_dir) if run_dir is not None else None
    model = base_model or (plan.base_model_path if plan is not None else None)
    if model is None:
        raise SampleError(
            f"no base model known for {target}: it is not inside a kohya-wrap run.",
            "Give the SD1.5 checkpoint it was trained on with --base-model PATH.",
        )
    if not model.exists():
        raise ModelError(
            f"base model {model} does not exist.", "Give an existing SD1.5 checkpoint with --base-model PATH."
        )
    tokenizer = tokenizer_cache_dir or (
        Path(plan.tokenizer_cache_dir) if plan is not None and plan.tokenizer_cache_dir else None
    )

    skipped: list[str] = []
    if plan is None or target.is_file():
        targets: tuple[LoraTarget, ...] = (_one_file(target, run_dir),)
    else:
        targets, skipped = _run_targets(plan, run_dir or target, steps_of)

    if out_dir is not None:
        sessions_dir = Path(out_dir)
    elif run_dir is not None:
        sessions_dir = rundir.paths(run_dir).samples_dir
    else:
        sessions_dir = target.parent / f"{target.stem}-{rundir.SAMPLES_DIR}"
    return SampleContext(run_dir, model, tokenizer, targets, sessions_dir, tuple(skipped))


def _run_of(target: Path) -> Path | None:
    """The run a target is (a run folder) or belongs to (a LoRA file in its output folder); RunBusy when a
    trainer or another sample holds that run."""
    run_dir: Path | None = None
    if target.is_dir():
        if not rundir.is_planned(target):
            raise RunDirError(
                f"{target} is not a kohya-wrap run (no plan.json).",
                "Give a run folder made by `kohya-wrap plan`, or a LoRA .safetensors file.",
            )
        run_dir = target
    elif target.is_file():
        if rundir.is_planned(target.parent.parent):
            run_dir = target.parent.parent
    else:
        raise SampleError(f"{target} does not exist.", "Give a run folder or a LoRA .safetensors file.")
    holder = rundir.lock_holder(run_dir) if run_dir is not None else None
    if holder is not None:
        # before its files are looked at: a run that is training has few or none yet, and that is not the news
        raise rundir.RunBusy(
            f"{run_dir} is in use by {holder.describe()}; one run directory has one writer at a time",
            "wait for it to end (`kohya-wrap status RUN_DIR` shows it), or stop it first",
        )
    return run_dir


def _one_file(target: Path, run_dir: Path | None) -> LoraTarget:
    from kohya_wrap.safetensors_header import incomplete

    why = incomplete(target)
    if why is not None:
        # the generator would fail on it after loading the base model, with a traceback in gen.log
        raise SampleError(
            f"{target} is not a complete LoRA file: {why}.",
            "It was cut short (a save or copy interrupted): copy or export it again"
            + (", or sample another checkpoint of the run." if run_dir is not None else "."),
        )
    return LoraTarget(target, _checkpoint_step(target))


def _run_targets(plan: Plan, run_dir: Path, steps_of: str) -> tuple[tuple[LoraTarget, ...], list[str]]:
    """The run's complete LoRA files that --steps-of asks for, and a sentence for each one cut short."""
    from kohya_wrap.safetensors_header import incomplete
    from kohya_wrap.sdscripts.samples import checkpoint_files

    files = checkpoint_files(plan.output_dir, plan.output_name)
    if not files:
        raise SampleError(f"{run_dir} has no LoRA files yet.", "Train it first: `kohya-wrap train RUN_DIR`.")
    # a checkpoint cut short (a trainer killed mid-save) is left out with a note, as score and export do
    broken = {f: why for f in files if (why := incomplete(f)) is not None}
    if len(broken) == len(files):
        raise SampleError(
            f"{run_dir} has no complete LoRA file: "
            + "; ".join(f"{f.name} is cut short ({why})" for f, why in broken.items())
            + ".",
            "Resume the run (`kohya-wrap train RUN_DIR --resume`) to save it again, or train it again.",
        )
    skipped = [f"skipped {f.name}: it is cut short ({why})" for f, why in broken.items()]
    files = [f for f in files if f not in broken]
    final_step = plan.max_train_steps
    name = plan.output_name

    def step_of(f: Path) -> int | None:
        step = _checkpoint_step(f)
        # the final file is saved at the end of training, whether or not its metadata says so
        if step is None and f.stem == name:
            return final_step
        return step

    # a step asked for by number whose only file is cut short: say so, not "no checkpoint at step N"
    complete_steps = {step_of(f) for f in files}
    for f, why in broken.items():
        step = step_of(f)
        if step is not None and step not in complete_steps and str(step) in steps_of.replace(" ", "").split(","):
            raise SampleError(
                f"the checkpoint of step {step} ({f.name}) is cut short: {why}.",
                "Pick another step with --steps-of, or --steps-of all for every complete checkpoint.",
            )
    return select_targets([LoraTarget(f, step_of(f), final=f.stem == name) for f in files], steps_of), skipped


# -- running the generator --------------------------------------------------------------------


def _new_session_folder(sessions_dir: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        folder = sessions_dir / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise SampleError(f"could not make a new session folder in {sessions_dir}.", "Remove old sessions there.")


def _manifest(
    folder: Path, ctx: SampleContext, opts: SampleOptions, seed: int, images: list[SampleImage], created_at: str
) -> SamplesManifest:
    return SamplesManifest(
        created_at=created_at,
        base_model=str(ctx.base_model),
        prompts=opts.prompts,
        weight=opts.weight,
        seed=seed,
        count=opts.count,
        width=opts.width,
        height=opts.height,
        sampler_steps=opts.sampler_steps,
        scale=opts.scale,
        sampler=opts.sampler,
        images=tuple(
            SampleEntry(
                file=str(i.path.relative_to(folder)),
                lora_file=i.lora_file,
                lora_name=i.lora_name,
                step=i.step,
                prompt_index=i.prompt_index,
                image_index=i.image_index,
                seed=i.seed,
            )
            for i in images
        ),
    )


def _validate(opts: SampleOptions) -> None:
    from kohya_wrap.sdscripts.gen_command import SAMPLERS

    if not opts.prompts:
        raise SampleError("no prompt given.", "Add --prompt TEXT (repeat it for several prompts).")
    if opts.count < 1:
        raise SampleError(f"-n {opts.count}: the image count must be at least 1.", "Use -n 1 or more.")
    for name, size in (("width", opts.width), ("height", opts.height)):
        if size < 64 or size % 8:
            raise SampleError(f"{name} {size} is not a multiple of 8 of at least 64.", "Use for example --size 512.")
    if opts.sampler_steps < 1:
        raise SampleError(
            f"--sampler-steps {opts.sampler_steps} must be at least 1.", "Use for example --sampler-steps 30."
        )
    if opts.sampler not in SAMPLERS:
        raise SampleError(f"unknown sampler {opts.sampler!r}.", f"Use one of: {', '.join(SAMPLERS)}.")


@dataclass(frozen=True)
class SampleHooks:
    """What `sample` tells its caller as it goes: on_line gets each line of the generator's output (all of it
    is in the session's log too); on_progress is called as each LoRA starts and as its images appear; on_note
    gets a sentence for each of the run's LoRA files left out (cut short), before anything is generated;
    on_done(run_dir) is called at the end, for a run (the CLI rewrites the report there)."""

    on_line: Callable[[str], None] | None = None
    on_progress: Callable[[SampleProgress], None] | None = None
    on_done: Callable[[Path], object] | None = None
    on_note: Callable[[str], None] | None = None


def sample(
    target: Path,
    opts: SampleOptions,
    *,
    base_model: Path | None = None,
    tokenizer_cache_dir: Path | None = None,
    out_dir: Path | None = None,
    sd_scripts: str | None = None,
    python: str | None = None,
    hooks: SampleHooks = SampleHooks(),
) -> SampleSession:
    """Generate the images; then, for a run, call hooks.on_done(run_dir)."""
    _validate(opts)
    if tokenizer_cache_dir is not None:
        from kohya_wrap.models import check_tokenizer_dir

        check_tokenizer_dir(tokenizer_cache_dir)  # given here: it must hold the tokenizer (exit 1 naming it)
    ctx = resolve(
        target, steps_of=opts.steps_of, base_model=base_model, tokenizer_cache_dir=tokenizer_cache_dir, out_dir=out_dir
    )
    for note in ctx.skipped:
        if hooks.on_note is not None:
            hooks.on_note(note)
    lock: AbstractContextManager[object] = (
        rundir.RunLock(ctx.run_dir, "sample") if ctx.run_dir is not None else nullcontext()
    )
    with lock:
        session = _generate(
            ctx, opts, sd_scripts=sd_scripts, python=python, on_line=hooks.on_line, on_progress=hooks.on_progress
        )
    if ctx.run_dir is not None and hooks.on_done is not None:
        hooks.on_done(ctx.run_dir)
    return session


@dataclass(frozen=True)
class _Session:
    """What every LoRA of one `sample` call is generated with, and where its files go."""

    folder: Path
    checkout: Path
    tokenizer: Path
    prompts_file: Path
    log_path: Path
    seeds: list[int]
    python: str | None


@dataclass
class _Watch:
    """The generator's output as it runs: the last lines (for the error), each line to on_line, and the
    images made so far to on_progress (a few stat calls per chunk of output: the images appear one by one)."""

    expected: list[tuple[int, int, str]]  # (prompt, image, file name) of one LoRA's outputs
    loras: int
    on_line: Callable[[str], None] | None
    on_progress: Callable[[SampleProgress], None] | None
    splitters: dict[str, LineSplitter]
    tail: list[str] = field(default_factory=list)
    out: Path | None = None
    name: str = ""
    index: int = 0
    seen: int = -1

    def start(self, out: Path, name: str, index: int) -> None:
        self.out, self.name, self.index, self.seen = out, name, index, -1
        self.tail.clear()
        self.report()

    def report(self) -> None:
        if self.on_progress is None or self.out is None:
            return
        made = sum(1 for _, _, f in self.expected if (self.out / f).is_file())
        if made != self.seen:
            self.seen = made
            per_lora = len(self.expected)
            done = (self.index - 1) * per_lora + made
            self.on_progress(SampleProgress(self.name, self.index, self.loras, done, per_lora * self.loras))

    def keep_tail(self, stream_name: str, data: bytes) -> None:
        for line in self.splitters[stream_name].feed(data):
            if line.strip():
                self.tail.append(line.rstrip())
                if self.on_line is not None:
                    self.on_line(line.rstrip())
        del self.tail[:-40]
        self.report()


def _generate(
    ctx: SampleContext,
    opts: SampleOptions,
    *,
    sd_scripts: str | None,
    python: str | None,
    on_line: Callable[[str], None] | None,
    on_progress: Callable[[SampleProgress], None] | None = None,
) -> SampleSession:
    from kohya_wrap.models import ensure_tokenizer
    from kohya_wrap.sdscripts.checkout import locate
    from kohya_wrap.sdscripts.gen_command import expected_outputs, render_prompts_file
    from kohya_wrap.sdscripts.output import LineSplitter

    checkout = locate(sd_scripts)
    # As train's pre-flight: without a tokenizer folder sd-scripts' generator fetches the CLIP tokenizer from
    # the Hub, and offline it fails with a traceback. kohya-wrap's own cache is filled when empty (exit 11
    # with what to do when it cannot be), before the session folder is made.
    tokenizer = ensure_tokenizer(ctx.tokenizer_cache_dir)
    seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
    seeds = [seed + k for k in range(opts.count)]
    try:
        prompts_text = render_prompts_file(opts.prompts, [seeds] * len(opts.prompts))
    except ValueError as e:
        raise SampleError(str(e), "Write each prompt on one line; give seeds with --seed.") from None

    folder = _new_session_folder(ctx.sessions_dir)
    created_at = utc_now_text()
    session = _Session(folder, checkout.path, tokenizer, folder / PROMPTS_FILE, folder / LOG_FILE, seeds, python)
    atomic_write_text(session.prompts_file, prompts_text)
    images: list[SampleImage] = []
    splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
    watch = _Watch(expected_outputs(len(opts.prompts), opts.count), len(ctx.targets), on_line, on_progress, splitters)
    for index, lora in enumerate(ctx.targets, start=1):
        images += _generate_lora(ctx, opts, lora, index, session, watch)
        # written after every LoRA, so an interrupted session keeps what it made
        write_samples(folder, _manifest(folder, ctx, opts, seed, images, created_at))
    return session_of(folder, _manifest(folder, ctx, opts, seed, images, created_at))


def _gen_request(
    ctx: SampleContext, opts: SampleOptions, lora: LoraTarget, session: _Session, lora_out: Path
) -> GenRequest:
    """What sd-scripts' generator is asked for one LoRA (or the base model)."""
    from kohya_wrap.sdscripts.gen_command import GenRequest

    return GenRequest(
        checkout=session.checkout,
        base_model=ctx.base_model,
        lora_file=lora.path,
        weight=opts.weight,
        prompts_file=session.prompts_file,
        out_dir=lora_out,
        images_per_prompt=opts.count,
        width=opts.width,
        height=opts.height,
        steps=opts.sampler_steps,
        scale=opts.scale,
        sampler=opts.sampler,
        tokenizer_cache_dir=session.tokenizer,
    )


def _generate_lora(
    ctx: SampleContext, opts: SampleOptions, lora: LoraTarget, index: int, session: _Session, watch: _Watch
) -> list[SampleImage]:
    """One LoRA's images (or the base model's), by one run of sd-scripts' generator."""
    from kohya_wrap.process import child_env, stream
    from kohya_wrap.sdscripts.gen_command import build_argv as build_gen_argv
    from kohya_wrap.sdscripts.gen_command import build_env as gen_env

    offline = True  # the tokenizer is in its folder (above) and the base model a local file
    name = lora.path.stem if lora.path is not None else "base model"
    lora_out = session.folder / (lora.path.stem if lora.path is not None else "base-model")
    watch.start(lora_out, lora.path.name if lora.path is not None else name, index)
    result = stream(
        build_gen_argv(_gen_request(ctx, opts, lora, session, lora_out), session.python),
        env=child_env(gen_env(offline=offline)),
        cwd=session.checkout,
        log_path=session.log_path,
        on_output=watch.keep_tail,
    )
    if result.stop_reason == "interrupt":
        raise KeyboardInterrupt
    missing = [f for _, _, f in watch.expected if not (lora_out / f).is_file()]
    if result.returncode != 0 or missing:
        last = "\n".join(watch.tail[-12:])
        raise SampleError(
            f"sd-scripts' generator failed for {lora.path or ctx.base_model} (exit code {result.returncode}, "
            f"{len(missing)} images missing). Its last lines:\n{last}",
            f"Full output: {session.log_path}",
        )
    watch.report()
    lora_file = str(lora.path) if lora.path else None
    return [
        SampleImage(lora_out / file_name, lora_file, name, lora.step, p, k, session.seeds[k])
        for p, k, file_name in watch.expected
    ]
