"""One variant's training, in a process of its own: `python -m kohya_wrap.sweep.worker RUN_DIR RESULT_JSON ...`.

Both backends start this worker (the local one per GPU slot, Ray's task on the node that trains), so
every variant trains on the main thread of its own process, where kohya_wrap/process.py's Streamer
turns SIGINT into stopping the trainer's whole process group. The worker runs in a session of its own:
only its driver signals it (a terminal's Ctrl-C goes to the driver, which forwards it once). If the
driver dies without a word (kill -9, a Ray worker killed), the worker notices its parent is gone and
stops its trainer the same way, so no trainer outlives its sweep.

The result (outcome, exit code, loss, an error message) is written to RESULT_JSON for the driver.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from kohya_wrap.errors import ExitCode, KohyaWrapError
from kohya_wrap.fsutil import atomic_write_json

PARENT_POLL_S = 0.5
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _watch_parent(parent: int) -> None:
    """SIGINT to ourselves when our parent goes, again (a kill) if the trainer does not stop."""
    signals = 0
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            signals += 1
            os.kill(os.getpid(), signal.SIGINT)
            if signals >= 2:
                return
            time.sleep(20.0)


def train(run_dir: Path, *, resume: bool, allow_nan: bool, sd_scripts: str | None) -> dict[str, Any]:
    """One variant through the pipeline, as `kohya-wrap train RUN_DIR` runs it: the report is rewritten at
    every checkpoint and at the end, and a finished run is scored when the scorer is installed."""
    from kohya_wrap import pipeline
    from kohya_wrap.report.html import write_report
    from kohya_wrap.train.runner import TrainOptions

    options = TrainOptions(resume=resume, allow_nan=allow_nan, sd_scripts=sd_scripts)
    request = pipeline.TrainRequest(run_dir=run_dir, options=options, score=True, on_saved=write_report)
    done = pipeline.run_pipeline(pipeline.PipelineRequest(train=request))
    result = done.trained
    if result is None:  # refused before the trainer started
        failure = done.failure
        assert failure is not None
        return {"outcome": None, "exit_code": failure.exit_code, "error": failure.message}
    return {
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "final_loss": result.final_loss,
        "last_step": result.last_step,
        "total_steps": result.total_steps,
        "lora_file": str(result.lora_file) if result.lora_file else None,
        "error": None,
        "advice": result.advice or None,
        "resumed_from": result.resumed_from,
        "score_note": done.score_note,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kohya_wrap.sweep.worker")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--allow-nan", action="store_true")
    ap.add_argument("--sd-scripts", default=None)
    args = ap.parse_args(argv)
    # A Ray worker blocks (and may ignore) these signals, and a child inherits both across exec:
    # undo that, or neither this worker nor its trainer would ever see a Ctrl-C.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    for sig in _SIGNALS:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }
    try:
        info.update(train(args.run_dir, resume=args.resume, allow_nan=args.allow_nan, sd_scripts=args.sd_scripts))
    except KeyboardInterrupt:
        info.update(outcome="interrupted", exit_code=int(ExitCode.INTERRUPTED), error=None)
    except KohyaWrapError as e:
        info.update(outcome=None, exit_code=int(e.exit_code), error=str(e))
    except Exception as e:  # noqa: BLE001  the driver records it; the traceback goes to the variant's log
        traceback.print_exc()
        info.update(outcome=None, exit_code=int(ExitCode.UNEXPECTED), error=f"{type(e).__name__}: {e}")
    sys.stderr.write(
        f"kohya-wrap sweep worker: {info.get('outcome') or 'error'} (exit code {info['exit_code']})"
        + (f": {info['error']}" if info.get("error") else "")
        + "\n"
    )
    atomic_write_json(args.result, info)
    return int(info["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
