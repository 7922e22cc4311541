"""The local backend: one variant at a time per GPU of this machine, every GPU used; CPU-only: one at a time.

Each variant is a worker process (kohya_wrap/sweep/worker.py) in a process group of its own
(process.ProcessGroup, WORKER policy), seeing one GPU through CUDA_VISIBLE_DEVICES. Ctrl-C (SIGINT,
SIGTERM, SIGHUP) to the sweep stops every worker's group, and each worker stops its trainer's process
group; a second one is passed on again and the workers kill their trainers. No worker is started after
the first, and the sweep waits for every worker to end.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import IO

from kohya_wrap.process import WORKER, ProcessGroup, forwarded_signals
from kohya_wrap.sweep.jobs import Job, OnChange, Where, finish_job, start_job
from kohya_wrap.sweep.state import SweepState

POLL_S = 0.2


def gpu_slots() -> list[str | None]:
    """The CUDA devices this machine trains on, one variant each (as train.machine finds them); [None]
    without a GPU. Devices that CUDA_VISIBLE_DEVICES names are taken as named, even where nvidia-smi
    cannot be asked (a container without it)."""
    from kohya_wrap.train.machine import cuda_visible_devices, visible_gpus

    named = cuda_visible_devices()
    devices: list[str] = named if named is not None else [g.device for g in visible_gpus()]
    return list(devices) or [None]


class _Running:
    """A job's worker on a slot."""

    def __init__(self, job: Job, slot: str | None) -> None:
        self.job, self.slot = job, slot
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        job.log.parent.mkdir(parents=True, exist_ok=True)
        job.result.parent.mkdir(parents=True, exist_ok=True)
        self.log: IO[bytes] = open(job.log, "ab")  # noqa: SIM115  closed by close()
        try:
            self.group = ProcessGroup(
                job.worker_argv(), env=env, cwd=Path.cwd(), stdout=self.log, stderr=subprocess.STDOUT, policy=WORKER
            )
        except BaseException:
            self.log.close()
            raise

    def close(self, stop_first: bool = False) -> None:
        try:
            self.group.close(stop_first=stop_first)
        finally:
            self.log.close()


def run_local(
    jobs: list[Job], state: SweepState, *, max_parallel: int | None = None, on_change: OnChange | None = None
) -> bool:
    """Train every job; True when a signal stopped the sweep."""
    slots = gpu_slots()[:max_parallel] if max_parallel else gpu_slots()
    queue = list(jobs)
    running: dict[int, _Running] = {}
    stops = 0

    def stop_all(_signum: int) -> None:
        nonlocal stops
        stops += 1
        for item in running.values():
            item.group.stop("interrupt")

    with forwarded_signals(stop_all):
        try:
            while queue or running:
                for index, slot in enumerate(slots):
                    if not stops and queue and index not in running:
                        running[index] = item = _Running(queue.pop(0), slot)
                        start_job(state, item.job, on_change, Where(device=slot, pid=item.group.pid))
                if not running:
                    break
                for index, item in list(running.items()):
                    code = item.group.poll()
                    if code is not None:
                        del running[index]
                        item.close()
                        finish_job(state, item.job, code, on_change)
                time.sleep(POLL_S)
        finally:
            for item in running.values():  # only on an exception of our own: leave no worker behind
                item.close(stop_first=True)
    return stops > 0
