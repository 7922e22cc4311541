"""One variant's training, in a process of its own: `python -m kohya_wrap.sweep.worker RUN_DIR RESULT_JSON ...`.

Both backends start this worker (the local one per GPU slot, Ray's task on the node that trains), so
every variant trains on the main thread of its own process, where kohya_wrap/process.py's Streamer
turns SIGINT into stopping the trainer's whole process group. The worker runs in a session of its own:
only its driver signals it (a terminal's Ctrl-C goes to the driver, which forwards it once). If the
driver dies without a word (kill -9, a Ray worker killed), the worker notices its parent is gone and
stops its trainer the same way, so no trainer outlives its sweep.

The result (outcome, exit code, loss, an error message: a VariantResult, kohya_wrap/sweep/state.py) is
written to RESULT_JSON for the driver.
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

import msgspec

from kohya_wrap.errors import ExitCode, KohyaWrapError
from kohya_wrap.process import accept_stop_signals
from kohya_wrap.sweep.state import VariantResult, write_result

PARENT_POLL_S = 0.5


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


def train(run_dir: Path, *, resume: bool, allow_nan: bool, sd_scripts: str | None) -> VariantResult:
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
        return VariantResult(exit_code=failure.exit_code, error=failure.message)
    return VariantResult(
        outcome=result.outcome,
        exit_code=result.exit_code,
        final_loss=result.final_loss,
        last_step=result.last_step,
        total_steps=result.total_steps,
        lora_file=str(result.lora_file) if result.lora_file else None,
        advice=result.advice or None,
        resumed_from=result.resumed_from,
        score_note=done.score_note,
    )


def _trained(args: argparse.Namespace) -> VariantResult:
    """train(), with every way it can end as a result for the driver."""
    try:
        return train(args.run_dir, resume=args.resume, allow_nan=args.allow_nan, sd_scripts=args.sd_scripts)
    except KeyboardInterrupt:
        return VariantResult(outcome="interrupted", exit_code=int(ExitCode.INTERRUPTED))
    except KohyaWrapError as e:
        return VariantResult(exit_code=int(e.exit_code), error=str(e))
    except Exception as e:  # noqa: BLE001  the driver records it; the traceback goes to the variant's log
        traceback.print_exc()
        return VariantResult(exit_code=int(ExitCode.UNEXPECTED), error=f"{type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kohya_wrap.sweep.worker")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--allow-nan", action="store_true")
    ap.add_argument("--sd-scripts", default=None)
    args = ap.parse_args(argv)
    accept_stop_signals()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    result = msgspec.structs.replace(
        _trained(args), host=socket.gethostname(), device=os.environ.get("CUDA_VISIBLE_DEVICES"), pid=os.getpid()
    )
    exit_code = result.exit_code if result.exit_code is not None else int(ExitCode.UNEXPECTED)
    sys.stderr.write(
        f"kohya-wrap sweep worker: {result.outcome or 'error'} (exit code {exit_code})"
        + (f": {result.error}" if result.error else "")
        + "\n"
    )
    write_result(args.result, result)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
