"""The local backend: one variant at a time per GPU of this machine, every GPU used; CPU-only: one at a time.

Each variant is a worker process (kohya_wrap/sweep/worker.py) in a session of its own, seeing one GPU
through CUDA_VISIBLE_DEVICES. Ctrl-C (SIGINT, SIGTERM, SIGHUP) to the sweep is forwarded once to every
worker, which stops its trainer's process group (kohya_wrap/process.py); a second one is forwarded again
and kills the trainers. No worker is started after the first, and the sweep waits for every worker to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kohya_wrap.sweep.run import Job, OnChange, finish_job, start_job
from kohya_wrap.sweep.state import SweepState

POLL_S = 0.2
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def gpu_slots() -> list[str | None]:
    """The CUDA devices this machine trains on, one variant each (as train.machine finds them); [None]
    without a GPU. Devices that CUDA_VISIBLE_DEVICES names are taken as named, even where nvidia-smi
    cannot be asked (a container without it)."""
    from kohya_wrap.train.machine import cuda_visible_devices, visible_gpus

    named = cuda_visible_devices()
    devices: list[str] = named if named is not None else [g.device for g in visible_gpus()]
    return list(devices) or [None]


class _Running:
    def __init__(self, job: Job, proc: subprocess.Popen[bytes], log: IO[bytes], slot: str | None) -> None:
        self.job, self.proc, self.log, self.slot = job, proc, log, slot


def run_local(
    jobs: list[Job], state: SweepState, *, max_parallel: int | None = None, on_change: OnChange | None = None
) -> bool:
    """Train every job; True when a signal stopped the sweep."""
    slots = gpu_slots()
    if max_parallel:
        slots = slots[:max_parallel]
    queue = list(jobs)
    running: dict[int, _Running] = {}
    stops = 0

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stops
        stops += 1
        for item in running.values():
            try:
                item.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in _SIGNALS}
    try:
        while True:
            for index, slot in enumerate(slots):
                if stops or not queue or index in running:
                    continue
                job = queue.pop(0)
                running[index] = _start(job, slot, state, on_change)
            if not running:
                break
            for index, item in list(running.items()):
                code = item.proc.poll()
                if code is None:
                    continue
                item.log.close()
                del running[index]
                finish_job(state, item.job, code, on_change)
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for item in running.values():  # only on an exception of our own: leave no worker behind
            _stop(item)
    return stops > 0


def _start(job: Job, slot: str | None, state: SweepState, on_change: OnChange | None) -> _Running:
    env: dict[str, Any] = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    job.log.parent.mkdir(parents=True, exist_ok=True)
    job.result.parent.mkdir(parents=True, exist_ok=True)
    log = open(job.log, "ab")
    proc = subprocess.Popen(
        job.worker_argv(),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path.cwd(),
    )
    start_job(state, job, on_change, device=slot, pid=proc.pid)
    return _Running(job, proc, log, slot)


def _stop(item: _Running) -> None:
    try:
        item.proc.send_signal(signal.SIGINT)
        item.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        item.proc.kill()
        item.proc.wait()
    except ProcessLookupError:
        pass
    finally:
        item.log.close()
