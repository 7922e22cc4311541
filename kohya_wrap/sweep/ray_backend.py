"""The Ray backend: each variant a Ray task on the node that trains it (docs/sweep.md).

A task needs one GPU (num_gpus=1), or on a cluster without GPUs one unit of the custom resource
`kohya_wrap_trainer`, which each CPU node offers once (`ray start ... --resources='{"kohya_wrap_trainer": 1}'`),
so a CPU node trains one variant at a time. Without --ray-address the sweep starts a local Ray instance
(offering that resource once) and stops it at the end; with one it joins that cluster, whose nodes must
see SWEEP_DIR at the same path (a shared filesystem) and have kohya-wrap installed.

The task starts the same worker as the local backend (kohya_wrap/sweep/worker.py) on its node, so the
trainer's machine (GPU, CUDA_VISIBLE_DEVICES, which Ray sets) is resolved there. Ctrl-C (or SIGTERM,
SIGHUP, which the driver takes as Ctrl-C): the sweep
cancels every task (ray.cancel raises KeyboardInterrupt in it), each task forwards SIGINT to its worker,
which stops its trainer's process group; the sweep waits for every task to end before it stops Ray.
A second Ctrl-C cancels again and the workers kill their trainers. A worker whose task process dies
(a forced cancel, a lost node) notices and stops its trainer itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.process import WORKER, ProcessGroup, forwarded_signals
from kohya_wrap.sweep.jobs import Job, OnChange, Where, finish_job, start_job
from kohya_wrap.sweep.spec import SweepError
from kohya_wrap.sweep.state import SweepState

if TYPE_CHECKING:
    from types import ModuleType

    from ray import ObjectRef

    RayOptions = dict[str, int | dict[str, int]]  # keyword arguments of a remote function's .options()

SLOT_RESOURCE = "kohya_wrap_trainer"
INSTALL_HINT = "install it with `pip install 'kohya-wrap[ray]'` (or `pip install ray`), or use --backend local"
# Signals within this long of the last one forwarded are the same Ctrl-C seen twice (a terminal's
# Ctrl-C reaches the Ray workers too, and the driver then cancels): only a later one kills.
SAME_INTERRUPT_S = 2.0
# After a cancel, how long the sweep waits for its tasks before cancelling them by force.
CANCEL_WAIT_S = 120.0


@dataclass(frozen=True)
class TaskInfo:
    """What a task returns to the driver: its worker's exit code and where it ran (the rest is in result.json)."""

    returncode: int | None
    host: str | None = None
    device: str | None = None
    error: str | None = None  # why there is no exit code (the task was lost), set by the driver


def require_ray(address: str | None = None) -> None:
    """Import Ray, or say how to install it; for a cluster, set up its authentication first."""
    if address is not None:
        _token_auth_like_ray_start()  # before the import: Ray reads its configuration when imported
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SweepError("--backend ray needs Ray, which is not installed", INSTALL_HINT) from None


def train_task(job: Job) -> TaskInfo:
    """Run on the node: the variant's worker, to its end; a KeyboardInterrupt (ray.cancel) stops it."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    forwarded = -SAME_INTERRUPT_S
    with (
        open(job.log, "ab") as log,
        ProcessGroup(job.worker_argv(sys.executable), stdout=log, stderr=subprocess.STDOUT, policy=WORKER) as group,
    ):
        while True:
            try:
                code = group.wait(0.2)
                if code is not None:
                    break
            except KeyboardInterrupt:
                log.write(b"kohya-wrap sweep: the Ray task was cancelled; stopping the variant\n")
                log.flush()
                if time.monotonic() - forwarded > SAME_INTERRUPT_S:
                    forwarded = time.monotonic()
                    group.stop("cancelled")
    return TaskInfo(returncode=code, host=socket.gethostname(), device=os.environ.get("CUDA_VISIBLE_DEVICES"))


def _task_options(resources: dict[str, float], address: str | None) -> tuple[RayOptions, int]:
    """Ray options of a variant's task, and how many can run at once on the cluster now."""
    gpus = int(resources.get("GPU", 0))
    if gpus >= 1:
        return {"num_gpus": 1, "num_cpus": 0, "max_retries": 0}, gpus
    slots = int(resources.get(SLOT_RESOURCE, 0))
    if slots >= 1:
        return {"num_cpus": 0, "resources": {SLOT_RESOURCE: 1}, "max_retries": 0}, slots
    raise SweepError(
        f"the Ray cluster at {address} has no GPU and no node offering the {SLOT_RESOURCE} resource",
        "start GPU nodes, or CPU nodes with `ray start --address ADDR "
        f"--resources='{{\"{SLOT_RESOURCE}\": 1}}'` (docs/sweep.md)",
    )


def _token_auth_like_ray_start() -> None:
    """`ray start` turns on token authentication when a token exists ($RAY_AUTH_TOKEN, ~/.ray/auth_token),
    but ray.init(address=...) of Ray 2.60 does not, and such a cluster then refuses it: do as `ray start` does.
    An explicit RAY_AUTH_MODE is left alone."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _init_ray(ray: ModuleType, address: str | None) -> None:
    kwargs: dict[str, bool] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            # a local instance of our own, stopped by ray.shutdown(), never an already running one; on
            # loopback, as nothing else needs to reach it
            ray.init(
                address="local",
                resources={SLOT_RESOURCE: 1},
                num_cpus=os.cpu_count() or 1,
                _node_ip_address="127.0.0.1",
                **kwargs,
            )
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise SweepError(
            f"cannot connect to the Ray cluster at {address}: {e}",
            "start it with `ray start --head` (docs/sweep.md), or leave out --ray-address",
        ) from None


def _interrupt(_signum: int) -> None:
    raise KeyboardInterrupt


def run_ray(
    jobs: list[Job],
    state: SweepState,
    *,
    address: str | None = None,
    max_parallel: int | None = None,
    on_change: OnChange | None = None,
) -> bool:
    """Train every job as a Ray task; True when Ctrl-C stopped the sweep."""
    require_ray(address)
    import ray

    _init_ray(ray, address)
    # SIGTERM and SIGHUP get what Ctrl-C gets: Ray's driver turns SIGTERM into sys.exit (after ray.init,
    # so ours goes in after it), and SIGHUP would end the driver and leave Ray's processes behind
    with forwarded_signals(_interrupt, (signal.SIGTERM, signal.SIGHUP)):
        try:
            return _Tasks(ray, state, on_change).run(jobs, address, max_parallel)
        finally:
            ray.shutdown()


class _Tasks:
    """The sweep's Ray tasks in flight, each with its job."""

    def __init__(self, ray: ModuleType, state: SweepState, on_change: OnChange | None) -> None:
        self.ray, self.state, self.on_change = ray, state, on_change
        self.inflight: dict[ObjectRef[TaskInfo], Job] = {}

    def run(self, jobs: list[Job], address: str | None, max_parallel: int | None) -> bool:
        options, capacity = _task_options(self.ray.cluster_resources(), address)
        remote = self.ray.remote(train_task).options(**options)
        limit = min(capacity, max_parallel or capacity)
        pending = list(jobs)
        try:
            while pending or self.inflight:
                while pending and len(self.inflight) < limit:
                    job = pending.pop(0)
                    self.inflight[remote.remote(job)] = job
                    start_job(self.state, job, self.on_change, Where())
                self._collect(num_returns=1)
        except KeyboardInterrupt:
            self._cancel()
            return True
        return False

    def _collect(self, num_returns: int) -> None:
        done, _ = self.ray.wait(list(self.inflight), num_returns=num_returns, timeout=0.5)
        for ref in done:
            self._finish(self.inflight.pop(ref), ref)

    def _finish(self, job: Job, ref: ObjectRef[TaskInfo]) -> None:
        try:
            info: TaskInfo = self.ray.get(ref)
        except (self.ray.exceptions.TaskCancelledError, self.ray.exceptions.RayError) as e:
            info = TaskInfo(returncode=None, error=f"{type(e).__name__}: {e}")
        where = Where(host=info.host, device=info.device)
        finish_job(self.state, job, info.returncode, self.on_change, error=info.error, where=where)

    def _cancel(self) -> None:
        """Stop every task and wait for it to end, so that no trainer outlives the sweep (nor Ray, if ours)."""
        for ref in self.inflight:
            self.ray.cancel(ref, force=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        forced = False
        while self.inflight:
            try:
                self._collect(num_returns=len(self.inflight))
            except KeyboardInterrupt:
                for ref in self.inflight:  # a second Ctrl-C: the workers kill their trainers
                    self.ray.cancel(ref, force=False)
            if self.inflight and time.monotonic() > deadline:
                if forced:
                    break
                forced = True
                for ref in self.inflight:
                    self.ray.cancel(ref, force=True)  # the workers see their task process go and stop on their own
                deadline = time.monotonic() + 30.0
        for job in self.inflight.values():
            finish_job(self.state, job, None, self.on_change)
