"""How a training run ended, what that means for the user, and the exit code for it.

| outcome          | exit | when |
|------------------|------|------|
| finished         | 0    | the trainer exited 0 and wrote a LoRA that passed verification |
| oom              | 10   | CUDA out of memory |
| model_missing    | 11   | the base model or the tokenizer is missing or unreadable |
| no_data          | 12   | "No data found" (sd-scripts exits 0 here; we do not) |
| config_rejected  | 13   | the trainer rejected its configuration (dataset schema, TOML, arguments) |
| missing_package  | 14   | a Python package the trainer imports is missing |
| nan              | 15   | the loss became NaN/inf and we stopped the run (unless --allow-nan) |
| crashed          | 16   | any other failure: the last 40 lines of output and the log's path are shown |
| killed           | 17   | killed by a signal we did not send (often the kernel's OOM killer) |
| verify_failed    | 18   | the trainer finished but its LoRA failed a check |
| stopped_early    | 0    | live scoring stopped it (`--stop-early`): more training could only make it worse |
| interrupted      | 130  | Ctrl-C |
"""

from __future__ import annotations

from kohya_wrap.errors import ExitCode, KohyaWrapError
from kohya_wrap.events import Error, Outcome
from kohya_wrap.sdscripts.output import NAN_REMEDIES, OOM_REMEDIES

EXIT_CODES: dict[Outcome, int] = {
    "finished": ExitCode.OK,
    "oom": ExitCode.TRAIN_OOM,
    "model_missing": ExitCode.TRAIN_MODEL_MISSING,
    "no_data": ExitCode.TRAIN_NO_DATA,
    "config_rejected": ExitCode.TRAIN_CONFIG_REJECTED,
    "missing_package": ExitCode.TRAIN_MISSING_PACKAGE,
    "nan": ExitCode.TRAIN_NAN,
    "crashed": ExitCode.TRAIN_CRASHED,
    "killed": ExitCode.TRAIN_KILLED,
    "verify_failed": ExitCode.TRAIN_VERIFY_FAILED,
    "interrupted": ExitCode.INTERRUPTED,
    "stopped_early": ExitCode.OK,
}

ADVICE: dict[Outcome, str] = {
    "finished": "",
    "oom": "The GPU ran out of memory. Lower the batch size (--set {}), turn on gradient checkpointing "
    "(--set {}), or use an 8-bit optimizer (--set {}).".format(*OOM_REMEDIES),
    "model_missing": "The base model could not be loaded. Check the --base-model path (a .safetensors/.ckpt "
    "file or a Diffusers folder) and that the file is complete.",
    "no_data": "The trainer found no images. Check that the dataset folder holds img/<repeats>_<token> <class>/ "
    "subfolders with images (run `kohya-wrap prepare`).",
    "config_rejected": "The trainer rejected its configuration; the error above names the key. Fix the preset "
    "or the --set value and plan again.",
    "missing_package": "A package the trainer needs is missing. Install the training extra: "
    "pip install 'kohya-wrap[train]' (and torch for your GPU).",
    "nan": "The loss became NaN or infinite. Try bf16 (--set {}, if the GPU supports it) or a lower "
    "learning rate (--set {}); --allow-nan keeps training anyway.".format(*NAN_REMEDIES),
    "crashed": "The trainer failed. The last lines of its output are above; the full log is in train.log.",
    "killed": "The trainer was killed by a signal. If nobody killed it, the kernel's out-of-memory killer "
    "probably did (see `dmesg`): close other programs or lower the batch size.",
    "verify_failed": "The trainer finished but the LoRA file failed verification (see the failed checks).",
    "interrupted": "",
    "stopped_early": "",
}

# The reason train gives process.Streamer.stop when live scoring asks it to stop early.
STOP_EARLY = "early"

# When several error kinds show up, the most specific wins.
_PRIORITY: tuple[Outcome, ...] = ("oom", "model_missing", "config_rejected", "missing_package", "no_data")


def classify(returncode: int, stop_reason: str | None, errors: list[Error], lora_written: bool) -> Outcome:
    """The outcome of a run from how the process ended and the error events of its output."""
    kinds = {e.kind for e in errors}
    if stop_reason == STOP_EARLY:
        # the trainer may have reached its end before the interrupt landed
        return "finished" if returncode == 0 and lora_written else "stopped_early"
    if stop_reason == "nan":
        return "nan"
    if stop_reason == "interrupt":
        return "interrupted"
    if stop_reason == "orphaned":
        # the launcher died (not by our hand) and left its trainer running: we stopped that one
        return "killed"
    for kind in _PRIORITY:
        if kind in kinds:
            return kind
    if returncode == 0:
        return "finished" if lora_written else "crashed"
    if returncode < 0 or "killed" in kinds:
        return "killed"
    if "interrupted" in kinds:
        # a KeyboardInterrupt we did not cause: someone sent SIGINT to the trainer itself
        return "interrupted"
    return "crashed"


class TrainingFailed(KohyaWrapError):
    """Raised by the CLI after a run that did not finish; carries the outcome's exit code."""

    def __init__(self, outcome: Outcome, message: str, hint: str | None = None) -> None:
        KohyaWrapError.__init__(self, message, hint)
        self.outcome = outcome
        self.exit_code = EXIT_CODES.get(outcome, ExitCode.ERROR)
