"""Live scoring: score a run's checkpoints while it trains, in a worker process beside the trainer.

The pipeline hands a LiveScorer to train as its companion (train.runner.Companion; train never
imports score). When a checkpoint or a sample lands, the scorer asks its worker to score the run
again: `python -m kohya_wrap.score.live RUN_DIR`, started on first use at the lowest CPU priority
(SCHED_IDLE on Linux, else nice 19) with one BLAS thread, holding the identity model between requests and writing score.json
each time (so status and the report show the score so far). Its answers become `score` events, one
per checkpoint whose figures changed, and, with stop_early, one `stop_early` event when
advice.stop_decision says more training can only make it worse. Requests that come while the worker
is busy are merged into one. The trainer's own process never waits for any of this: notice() and
poll() only touch an in-memory queue.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from kohya_wrap import codec
from kohya_wrap.codec import Record
from kohya_wrap.events import Checkpoint, Event, Sample, Score, StopEarly, Warning_
from kohya_wrap.score.advice import stop_decision
from kohya_wrap.score.records import ScoreReport

DEBOUNCE_S = 1.0  # wait for the rest of a checkpoint's samples: they land within a few seconds
WORKER_NICE = 19
_QUIET_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class WorkerAnswer(Record, frozen=True):
    """One line the worker answers a request with: the run's score, or why there is none."""

    score: ScoreReport | None = None
    error: str | None = None


class LiveScorer:
    """A train.runner.Companion that scores the run as it trains and may ask to stop it early."""

    def __init__(
        self,
        run_dir: Path,
        *,
        stop_early: bool = False,
        min_steps: int | None = None,
        after_step: int | None = None,
        python: str | None = None,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.stop_early = stop_early
        self.min_steps = min_steps
        self.after_step = after_step  # `train --extend`: the step the run had reached before
        self.python = python or sys.executable
        self.debounce_s = debounce_s
        self._events: queue.Queue[Event] = queue.Queue()
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._last_notice = 0.0
        self._reported: dict[int, tuple[int, int, float | None, int, int, str | None]] = {}
        self._last_error: str | None = None
        self._stopped = False
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._loop, name="live-score", daemon=True)
        self._thread.start()

    # -- the Companion side (train's thread) ---------------------------------------------------

    def notice(self, event: Event) -> None:
        if isinstance(event, (Sample, Checkpoint)):
            self._last_notice = time.monotonic()
            self._wanted.set()

    def poll(self) -> Sequence[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> Sequence[Event]:
        self._closed.set()
        self._wanted.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()  # a score of a part of the run: the pipeline scores the whole run next
        self._thread.join(timeout=10)
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return self.poll()

    # -- the worker side (this object's thread) ----------------------------------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            if not self._wanted.wait(timeout=0.5) or self._closed.is_set():
                continue
            while time.monotonic() - self._last_notice < self.debounce_s and not self._closed.is_set():
                time.sleep(0.1)
            if self._closed.is_set():
                return
            self._wanted.clear()
            try:
                answer = self._ask()
            except (OSError, ValueError, codec.RecordError) as e:
                answer = WorkerAnswer(error=f"the scoring worker failed: {e}")
            if self._closed.is_set():
                return
            self._take(answer)

    def _ask(self) -> WorkerAnswer:
        process = self._process
        if process is None or process.poll() is not None:
            env = {**os.environ, **_QUIET_THREADS}
            process = self._process = subprocess.Popen(
                [self.python, "-m", "kohya_wrap.score.live", str(self.run_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the trainer does not reach it; close() ends it
            )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("score\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise ValueError("it ended without an answer")
        return codec.decode(line, WorkerAnswer, source="the scoring worker's answer")

    def _take(self, answer: WorkerAnswer) -> None:
        report = answer.score
        if report is None:
            error = answer.error or "an answer without a score"
            if error != self._last_error:
                self._last_error = error
                self._events.put(Warning_(message=f"live scoring: {error}"))
            return
        checkpoints = report.checkpoints
        for c in checkpoints:
            score = Score(
                step=c.step,
                samples=c.samples,
                faces=c.faces,
                likeness=c.likeness,
                matches=c.matches,
                copies=c.copies,
                checkpoint=c.checkpoint,
                recommended=report.recommended_step,
            )
            key = (score.samples, score.faces, score.likeness, score.matches, score.copies, score.checkpoint)
            if self._reported.get(score.step) != key:
                self._reported[score.step] = key
                self._events.put(score)
        if self.stop_early and not self._stopped:
            decision = stop_decision(checkpoints, min_steps=self.min_steps, after_step=self.after_step)
            if decision is not None:
                self._stopped = True
                self._events.put(StopEarly(step=decision.step, reason=decision.reason))


def _serve(run_dir: Path, requests: IO[str], answers: IO[str]) -> None:
    """The worker: one score of the run (score.json written) per request line, as one JSON line."""
    from kohya_wrap.faceid import IdentityModel
    from kohya_wrap.score import ScoreError, score_run

    model = None
    for _line in requests:
        try:
            model = model or IdentityModel()
            answer = WorkerAnswer(score=score_run(run_dir, model=model))
        except ScoreError as e:
            answer = WorkerAnswer(error=e.message)
        except Exception as e:  # noqa: BLE001  a worker that dies silently would leave the run unscored
            answer = WorkerAnswer(error=f"{type(e).__name__}: {e}")
        answers.write(codec.encode(answer, indent=None) + "\n")
        answers.flush()


def lower_priority() -> None:
    """The lowest CPU priority there is: Linux's SCHED_IDLE (it runs only on a core nothing else wants),
    and nice 19 where that policy is missing."""
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        try:
            os.sched_setscheduler(0, idle, os.sched_param(0))
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m kohya_wrap.score.live RUN_DIR (requests on stdin, one a line)\n")
        return 2
    lower_priority()
    _serve(Path(args[0]), sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
