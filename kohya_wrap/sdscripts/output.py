"""sd-scripts' console output -> events. Pure: no I/O, never raises, never prints.

What train_network.py (v0.10.1) prints, and where (docs/sd-scripts.md#console-output, #training-summary, #progress-bar):
- stdout: `accelerator.print` lines: the "running training" summary, `epoch 1/10`, `saving checkpoint: PATH`.
- stderr: rich log records `TIME LEVEL    message    file.py:123` (wrapped onto continuation lines
  indented 29 columns when the console is narrow: 80 columns on a pipe unless COLUMNS is set), tqdm
  bars redrawn with `\r` and never ended by a newline (so a log record may be glued to a bar), nested
  bars' `\x1b[A`, Python warnings and tracebacks; on a terminal also colours and OSC-8 hyperlinks.

OutputParser.feed(stream, data) takes raw bytes as they were read and returns the events they
complete. A log record is only complete when the next line arrives, so flush() ends it (call it
when the streams are idle) and close() ends everything at EOF.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import deque
from dataclasses import dataclass
from pathlib import PurePath

from kohya_wrap.events import (
    Checkpoint,
    Epoch,
    Error,
    ErrorKind,
    Event,
    Phase,
    PhaseName,
    Progress,
    StateSaved,
    Summary,
    Warning_,
)

__all__ = [
    "LineSplitter",
    "NAN_REMEDIES",
    "OOM_REMEDIES",
    "OutputParser",
]

STDOUT = "stdout"
STDERR = "stderr"

_ANSI = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

# rich's log table: time (19) + space + level (8) + space -> the message starts at column 29.
_MSG_COL = 29
_RECORD_HEAD = re.compile(
    r"^ *(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d| {19}) (DEBUG|INFO|WARNING|ERROR|CRITICAL)(?: .*)? (\S+\.py:\d+) *$"
)
_CONTINUATION_PREFIX = " " * _MSG_COL
_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_LEVEL_WORDS = ("DEBUG ", "INFO ", "WARNING ", "ERROR ", "CRITICAL ")

# The "steps" bar (docs/sd-scripts.md#progress-bar), loosened for a record glued after the bar.
_BAR = re.compile(
    r"^steps:\s+(\d+)%\|[^|]*\|\s*(\d+)/(\d+)\s+\[([0-9:]+)<([0-9:?]+),\s*([0-9.?]+)\s*(it/s|s/it)(?:,\s*([^\]]*))?\]"
)
_POSTFIX = re.compile(r"(\w[\w ]*)=([^,]+)")
_OTHER_BAR = re.compile(r"^[^|\n]{0,40}\d+%\|[^|]*\|\s*\d+/\d+ \[[^\]]*\]|^\d+it \[[^\]]*\]")
_BAR_END = re.compile(r"\](\s*)")

_EPOCH = re.compile(r"^epoch (\d+)/(\d+)$")
_SAVING_CHECKPOINT = "saving checkpoint: "
_STEP_IN_NAME = re.compile(r"-step(\d{8})(?:-state)?(?:\.[A-Za-z]+)?$")
_SAVE_TRAIN_STATE = re.compile(r"^save train state to (.+?)[/\\]train_state\.json at epoch (\d+) step (\d+)")
_SKIPPING_STEPS = re.compile(r"^skipping (\d+) steps")
_SKIPPING_EPOCH = re.compile(r"^skipping epoch \d+ because")
_SUMMARY_LINE = re.compile(
    r"^\s+(num [\w *]+?|batch size per device|gradient accumulation steps|total optimization steps) / .*?(?:: | = )(.+)$"
)
_PY_WARNING = re.compile(r"^\S+\.py:\d+: (\w*Warning): (.*)$")
_QUIET_WARNINGS = frozenset({"FutureWarning", "DeprecationWarning", "PendingDeprecationWarning", "SyntaxWarning"})
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Invalid|Exit|Warning)\w*)(?::\s*(.*))?$")
_ARGPARSE_ERROR = re.compile(r"^\S+\.py: error: (.+)$")

MODEL_MISSING_PATTERNS = (
    "model is not found as a file or in Hugging Face",
    "is neither a valid local path nor a valid repo id",
    "Cannot load model",
    "HFValidationError",
    "Repo id must be in the form",
    "Error no file named",
    "does not appear to have a file named",
)
# --set overrides that address a failure class (advice text is written in kohya_wrap.train.outcome)
OOM_REMEDIES = ("train_batch_size=1", "gradient_checkpointing=true", "optimizer_type=AdamW8bit")
NAN_REMEDIES = ("mixed_precision=bf16", "learning_rate=5e-5")

NO_DATA = "No data found"
INVALID_USER_CONFIG = "Invalid user config"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


def english(message: str) -> str:
    """sd-scripts messages are `English / Japanese`; keep the English half."""
    head, sep, tail = message.rpartition(" / ")
    if sep and head and not tail.isascii():
        return head.rstrip()
    return message


def _display_width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _seconds(clock: str) -> float | None:
    if "?" in clock:
        return None
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def step_from_file_name(name: str) -> int | None:
    """The step in a step-named checkpoint or state folder (`NAME-step00000500[.safetensors|-state]`)."""
    m = _STEP_IN_NAME.search(PurePath(name).name)
    return int(m.group(1)) if m else None


def classify_exception(line: str) -> ErrorKind:
    """The error kind of a traceback's last line."""
    if "out of memory" in line or "OutOfMemoryError" in line:
        return "oom"
    if line.startswith(("ModuleNotFoundError", "ImportError")) or "No module named" in line:
        return "missing_package"
    if line.startswith("voluptuous.") or "extra keys not allowed" in line or "TomlDecodeError" in line:
        return "config_rejected"
    if any(p in line for p in MODEL_MISSING_PATTERNS):
        return "model_missing"
    if line.startswith("KeyboardInterrupt"):
        return "interrupted"
    if line.startswith("subprocess.CalledProcessError"):
        # accelerate's own traceback after its child failed; a signal shows as "died with <Signals...>"
        return "killed" if "died with <Signals." in line else "launcher"
    return "exception"


@dataclass(slots=True)
class _Record:
    level: str
    parts: list[str]
    width: int
    folded: bool = False


class LineSplitter:
    """Bytes -> text lines. `\\n`, `\\r\\n` and a lone `\\r` (a tqdm redraw) each end a line.

    A `\\r` at the end of a read ends its line at once (no waiting for the next redraw); a `\\n`
    starting the next read is then the second half of a CRLF split across reads, not an empty line.
    An incomplete UTF-8 sequence waits for the next read; undecodable bytes are replaced.
    """

    __slots__ = ("_buffer", "_pending", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = ""
        self._pending = b""
        self._skip_lf = False

    def feed(self, data: bytes) -> list[str]:
        data = self._pending + data
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte < 0x80:
                break
            if byte >= 0xC0:
                need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                if need > back:
                    cut = len(data) - back
                break
        self._pending = data[cut:]
        text = data[:cut].decode("utf-8", "replace")
        if self._skip_lf and text:
            if text[0] == "\n":
                text = text[1:]
            self._skip_lf = False
        if not text:
            return []
        text = self._buffer + text
        if text[-1] == "\r":
            self._skip_lf = True
            text = text[:-1] + "\n"
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        self._buffer = lines.pop()
        return lines

    @property
    def partial(self) -> str:
        """The text of the line not yet ended."""
        return self._buffer

    def close(self) -> list[str]:
        rest = self._buffer + self._pending.decode("utf-8", "replace")
        self._buffer = ""
        self._pending = b""
        return [rest] if rest else []


class OutputParser:
    """Stateful, pure parser of both streams of one train_network.py run."""

    def __init__(self) -> None:
        self._splitters = {STDOUT: LineSplitter(), STDERR: LineSplitter()}
        self._record: _Record | None = None
        self._traceback: list[str] | None = None
        self._phase: PhaseName | None = None
        self._summary: dict[str, str] | None = None
        self._last_bar: str | None = None
        self._nan_reported = False
        self._batches_per_epoch: int | None = None
        self._grad_accum = 1
        self.total_steps: int | None = None
        self.skipped_steps = 0  # --skip_until_initial_step: steps already done before this run
        self._skipped_epochs = 0
        self.last_step: int | None = None
        self._pending_state: StateSaved | None = None
        self._recent: deque[str] = deque(maxlen=200)  # the last lines, for a crash report

    # -- public ------------------------------------------------------------------------------

    def feed(self, stream: str, data: bytes) -> list[Event]:
        events: list[Event] = []
        try:
            splitter = self._splitters[stream]
            for line in splitter.feed(data):
                self._line(stream, line, events)
            # tqdm starts a redraw with \r and ends it with nothing: a complete bar waiting for the
            # next redraw is reported now (the same text is not reported twice).
            partial = splitter.partial
            if partial.startswith("steps:"):
                m = _BAR.match(partial)
                if m:
                    self._end_record(events)
                    self._bar(m, events)
        except Exception as e:  # noqa: BLE001  the parser must never stop a training run
            events.append(Error(message=f"kohya-wrap could not parse a trainer line: {e!r}", kind="log"))
        return events

    def flush(self) -> list[Event]:
        events: list[Event] = []
        self._end_record(events)
        return events

    def close(self) -> list[Event]:
        events: list[Event] = []
        for stream, splitter in self._splitters.items():
            for line in splitter.close():
                self._line(stream, line, events)
        self._end_record(events)
        self._end_traceback(None, events)
        return events

    @property
    def phase(self) -> str | None:
        return self._phase

    # -- lines -------------------------------------------------------------------------------

    @property
    def recent_lines(self) -> list[str]:
        return list(self._recent)

    def _line(self, stream: str, raw: str, events: list[Event]) -> None:
        line = _ANSI.sub("", raw) if "\x1b" in raw else raw
        if stream == STDOUT:
            line = line.rstrip()
            if line:
                self._recent.append(line)
            self._stdout_line(line, events)
            return
        self._stderr_line(line, events)

    def _set_phase(self, phase: PhaseName, events: list[Event]) -> None:
        if phase != self._phase and self._phase != "finished":
            self._phase = phase
            events.append(Phase(phase=phase))

    def _stdout_line(self, line: str, events: list[Event]) -> None:
        if self._summary is not None:
            m = _SUMMARY_LINE.match(line)
            if m:
                self._summary[m.group(1)] = m.group(2).strip()
                if m.group(1) == "total optimization steps":
                    self._emit_summary(events)
                return
            self._summary = None
        if not line:
            return
        if line.startswith(_SAVING_CHECKPOINT):
            self._emit_pending_state(events)
            path = line[len(_SAVING_CHECKPOINT) :].strip()
            self._set_phase("saving", events)
            events.append(Checkpoint(path=path, step=self._absolute_file_step(step_from_file_name(path))))
            return
        m = _EPOCH.match(line)
        if m:
            events.append(Epoch(epoch=int(m.group(1)), total=int(m.group(2))))
            return
        if line.startswith("running training"):
            self._summary = {}
            return
        if line.startswith("prepare optimizer, data loader"):
            self._set_phase("preparing", events)
            return
        if line.startswith("NaN found in latents"):
            events.append(Warning_(message=line))

    def _emit_pending_state(self, events: list[Event]) -> None:
        if self._pending_state is not None:
            events.append(self._pending_state)
            self._pending_state = None

    def _emit_summary(self, events: list[Event]) -> None:
        s = self._summary or {}
        self._summary = None

        def as_int(key: str) -> int | None:
            value = s.get(key)
            return int(value) if value is not None and value.strip().isdigit() else None

        self._batches_per_epoch = as_int("num batches per epoch")
        self._grad_accum = as_int("gradient accumulation steps") or 1
        self.total_steps = as_int("total optimization steps")
        events.append(
            Summary(
                train_images=as_int("num train images * repeats"),
                reg_images=as_int("num reg images"),
                batches_per_epoch=self._batches_per_epoch,
                epochs=as_int("num epochs"),
                batch_size=s.get("batch size per device"),
                grad_accum=as_int("gradient accumulation steps"),
                total_steps=self.total_steps,
            )
        )

    def _stderr_line(self, line: str, events: list[Event], after_bar: bool = False) -> None:
        # tqdm bar first: a log record may be glued right after it.
        if line.startswith("steps:"):
            m = _BAR.match(line)
            if m:
                self._end_record(events)
                self._bar(m, events)
                rest = line[m.end() :]
                if rest.strip():
                    self._stderr_line(rest, events, after_bar=True)
                return
        record = self._record
        if record is not None and not after_bar and line.startswith(_CONTINUATION_PREFIX):
            self._continue_record(record, line)
            return
        if self._start_record(line, events):
            return
        if self._record is not None:
            self._end_record(events)
        stripped = line.strip()
        if not stripped:
            return
        # other tqdm bars (dataset, caching, sampling): progress of no interest, but glued text may follow
        if "%|" in line or "it [" in line:
            m = _OTHER_BAR.match(stripped)
            if m:
                rest = stripped[m.end() :]
                if rest.strip():
                    self._stderr_line(rest, events)
                return
        self._recent.append(line.rstrip())
        self._plain_stderr(line, stripped, events)

    def _continue_record(self, record: _Record, line: str) -> None:
        """A rich log record's next line: its message column continues the message."""
        width = record.width
        fragment = (line[_MSG_COL : _MSG_COL + width] if width > 0 else line[_MSG_COL:]).strip()
        if fragment:
            if record.folded:
                record.parts[-1] += fragment
            else:
                record.parts.append(fragment)
            record.folded = self._is_fold(fragment, width)

    def _start_record(self, line: str, events: list[Event]) -> bool:
        """A rich log record's first line opens a record (ending the one before, and a traceback); False: not one."""
        first = line[:1]
        if not (first == " " or first.isdigit()):
            return False
        head = self._record_head(line)
        if head is None:
            return False
        if self._record is not None:
            self._end_record(events)
        if self._traceback is not None:
            self._end_traceback(None, events)
        level, msg_start, path_start = head
        message = line[msg_start:path_start].strip()
        width = path_start - 1 - msg_start
        self._record = _Record(level=level, parts=[message], width=width, folded=self._is_fold(message, width))
        return True

    @staticmethod
    def _is_fold(text: str, width: int) -> bool:
        """rich folds a word longer than the column; such a fragment fills it and has no space."""
        if width <= 0 or " " in text:
            return False
        return len(text) >= width or (not text.isascii() and _display_width(text) >= width)

    @staticmethod
    def _record_head(line: str) -> tuple[str, int, int] | None:
        """(level, message start, path start) of a rich log record's first line, or None."""
        if line[19:20] == " " and line[20:28].rstrip() in _LEVELS and (line[0] == " " or line[4:5] == "-"):
            level = line[20:28].rstrip()
            msg_start = 29
        else:
            if line[0] == " " and not line.lstrip(" ").startswith(_LEVEL_WORDS):
                return None
            m = _RECORD_HEAD.match(line)
            if m is None:
                return None
            level = m.group(1)
            msg_start = m.end(1) + (9 - len(level))
        end = len(line.rstrip())
        path_start = line.rfind(" ", 0, end) + 1
        if path_start <= msg_start - 1 or ".py:" not in line[path_start:end] or not line[end - 1].isdigit():
            return None
        return level, msg_start, path_start

    def _bar(self, m: re.Match[str], events: list[Event]) -> None:
        text = m.group(0)
        if text == self._last_bar:
            return
        self._last_bar = text
        if self._pending_state is not None:  # training went on, so that save completed
            self._emit_pending_state(events)
        if self._phase != "finished":
            self._set_phase("training", events)
        avr_loss: float | None = None
        lr: float | None = None
        if m.group(8):
            for key, value in _POSTFIX.findall(m.group(8)):
                key = key.strip()
                if key == "avr_loss":
                    avr_loss = _number(value.strip())
                elif key in ("lr", "current_lr"):
                    lr = _number(value.strip())
        step = int(m.group(2)) + self.skipped_steps
        total = int(m.group(3))
        if self.skipped_steps:
            # past epoch 1 the bar's total is off (docs/sd-scripts.md#step-counter-after-a-resume); the summary's total is right
            total = self.total_steps or total + self.skipped_steps
        self.last_step = step
        rate_text = m.group(6)
        events.append(
            Progress(
                step=step,
                total=total,
                rate=None if "?" in rate_text else _number(rate_text),
                rate_unit=m.group(7),
                elapsed_s=_seconds(m.group(4)) or 0.0,
                eta_s=_seconds(m.group(5)),
                avr_loss=avr_loss,
                lr=lr,
            )
        )
        if avr_loss is not None and not math.isfinite(avr_loss) and not self._nan_reported:
            self._nan_reported = True
            events.append(Error(message=f"the training loss is {avr_loss} at step {step}", kind="nan"))

    def _absolute_file_step(self, step: int | None) -> int | None:
        """sd-scripts names files after its global_step, which restarts past epoch 1 on resume (train_network.py: NetworkTrainer.train; docs/sd-scripts.md#step-counter-after-a-resume)."""
        if step is None or not self.skipped_steps:
            return step
        start = self.skipped_steps * self._grad_accum - self._skipped_epochs * (self._batches_per_epoch or 0)
        return step + (self.skipped_steps - start)

    def _plain_stderr(self, line: str, stripped: str, events: list[Event]) -> None:
        if self._traceback is not None:
            if line[:1] in (" ", "\t") or stripped.startswith("^"):
                self._traceback.append(stripped)
                return
            self._end_traceback(stripped, events)
            return
        if stripped.startswith("Traceback (most recent call last):"):
            self._traceback = []
            return
        m = _PY_WARNING.match(stripped)
        if m:
            if m.group(1) not in _QUIET_WARNINGS:
                events.append(Warning_(message=f"{m.group(1)}: {m.group(2)}"))
            return
        m = _ARGPARSE_ERROR.match(stripped)
        if m:
            events.append(Error(message=m.group(1), kind="config_rejected"))
            return
        if "CUDA out of memory" in stripped:
            events.append(Error(message=stripped, kind="oom"))
            return
        # both streams merged (a terminal, or a log replayed): stdout's lines arrive here too
        self._stdout_line(line.rstrip(), events)

    def _end_traceback(self, last_line: str | None, events: list[Event]) -> None:
        if self._traceback is None:
            return
        self._traceback = None
        if last_line is None:
            return
        m = _EXCEPTION_LINE.match(last_line)
        if not m and last_line.startswith("During handling"):
            return
        events.append(Error(message=last_line, kind=classify_exception(last_line)))

    def _end_record(self, events: list[Event]) -> None:
        record = self._record
        if record is None:
            return
        self._record = None
        message = " ".join(record.parts).strip()
        self._recent.append(f"{record.level} {message}")
        self._record_event(record.level, message, events)

    def _record_event(self, level: str, message: str, events: list[Event]) -> None:
        text = english(message)
        if level in ("ERROR", "CRITICAL"):
            events.append(Error(message=text, kind=_error_kind(text)))
            return
        if level == "WARNING":
            if any(p in text for p in MODEL_MISSING_PATTERNS):
                events.append(Error(message=text, kind="model_missing"))
            events.append(Warning_(message=text))
            return
        phase = next((phase for starts, phase in _PHASES if text.startswith(starts)), None)
        if phase is not None:
            self._set_phase(phase, events)
        elif text.startswith("model saved."):
            self._emit_pending_state(events)
            self._set_phase("finished", events)
        elif text.startswith(("save train state to", "Random states saved in", "skipping")):
            self._state_record(text, events)
        elif any(p in text for p in MODEL_MISSING_PATTERNS):
            events.append(Error(message=text, kind="model_missing"))

    def _state_record(self, text: str, events: list[Event]) -> None:
        """A saved state's first and last lines, and the steps or epochs a resume skips."""
        if text.startswith("save train state to"):
            # written first; accelerate then writes the weights, optimizer, ... and the random
            # states last: the state is only complete (and reported) after that
            m = _SAVE_TRAIN_STATE.match(text)
            if m:
                self._pending_state = StateSaved(path=m.group(1), step=self._absolute_file_step(int(m.group(3))))
        elif text.startswith("Random states saved in"):
            self._emit_pending_state(events)
        else:
            m = _SKIPPING_STEPS.match(text)
            if m:
                self.skipped_steps = int(m.group(1))
            elif _SKIPPING_EPOCH.match(text):
                self._skipped_epochs += 1


# the log lines that open a phase of the run, by how they start
_PHASES: tuple[tuple[tuple[str, ...], PhaseName], ...] = (
    (
        (
            "Loading settings from",
            "Using v1 tokenizer",
            "Loading dataset config",
            "Using DreamBooth method",
            "prepare images",
        ),
        "preparing",
    ),
    (("loading model for process", "load StableDiffusion checkpoint", "load Diffusers pretrained"), "loading_model"),
    (("caching latents",), "caching_latents"),
    (("generating sample images",), "sampling"),
    (("saving state at", "saving last state"), "saving"),
)


def _error_kind(text: str) -> ErrorKind:
    """The kind of an ERROR or CRITICAL log record."""
    if text.startswith(NO_DATA):
        return "no_data"
    if text.startswith(INVALID_USER_CONFIG):
        return "config_rejected"
    if any(p in text for p in MODEL_MISSING_PATTERNS):
        return "model_missing"
    return "log"
