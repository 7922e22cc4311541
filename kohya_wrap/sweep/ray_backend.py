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
from pathlib import Path
from typing import Any

from kohya_wrap.sweep.run import Job, OnChange, finish_job, start_job
from kohya_wrap.sweep.spec import SweepError
from kohya_wrap.sweep.state import SweepState

SLOT_RESOURCE = "kohya_wrap_trainer"
INSTALL_HINT = "install it with `pip install 'kohya-wrap[ray]'` (or `pip install ray`), or use --backend local"
# Signals within this long of the last one forwarded are the same Ctrl-C seen twice (a terminal's
# Ctrl-C reaches the Ray workers too, and the driver then cancels): only a later one kills.
SAME_INTERRUPT_S = 2.0
# After a cancel, how long the sweep waits for its tasks before cancelling them by force.
CANCEL_WAIT_S = 120.0


def require_ray(address: str | None = None) -> None:
    """Import Ray, or say how to install it; for a cluster, set up its authentication first."""
    if address is not None:
        _token_auth_like_ray_start()  # before the import: Ray reads its configuration when imported
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SweepError("--backend ray needs Ray, which is not installed", INSTALL_HINT) from None


def train_task(job: Job) -> dict[str, Any]:
    """Run on the node: the variant's worker, to its end; a KeyboardInterrupt (ray.cancel) stops it."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "ab") as log:
        proc = subprocess.Popen(
            job.worker_argv(sys.executable),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        forwarded = 0.0
        while True:
            try:
                # a timeout, so that the wait returns to Python: ray.cancel interrupts the main thread
                # (_thread.interrupt_main), which a wait blocked in the kernel would never see
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:
                log.write(b"kohya-wrap sweep: the Ray task was cancelled; stopping the variant\n")
                log.flush()
                if time.monotonic() - forwarded > SAME_INTERRUPT_S:
                    forwarded = time.monotonic()
                    try:
                        proc.send_signal(signal.SIGINT)
                    except ProcessLookupError:
                        pass
    return {"returncode": code, "host": socket.gethostname(), "device": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _task_options(resources: dict[str, float], address: str | None) -> tuple[dict[str, Any], int]:
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

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
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
    # SIGTERM and SIGHUP get what Ctrl-C gets: Ray's driver turns SIGTERM into sys.exit (after ray.init,
    # so ours goes in after it), and SIGHUP would end the driver and leave Ray's processes behind
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        options, capacity = _task_options(ray.cluster_resources(), address)
        remote = ray.remote(train_task).options(**options)
        limit = min(capacity, max_parallel or capacity)
        pending = list(jobs)
        inflight: dict[Any, Job] = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < limit:
                    job = pending.pop(0)
                    inflight[remote.remote(job)] = job
                    start_job(state, job, on_change, device=None, host=None)
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in done:
                    _finish(ray, state, inflight.pop(ref), ref, on_change)
        except KeyboardInterrupt:
            _cancel(ray, state, inflight, on_change)
            return True
        return False
    finally:
        try:
            ray.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _finish(ray: Any, state: SweepState, job: Job, ref: Any, on_change: OnChange | None) -> None:
    try:
        info = ray.get(ref)
    except (ray.exceptions.TaskCancelledError, ray.exceptions.RayError) as e:
        info = {"returncode": None, "error": f"{type(e).__name__}: {e}"}
    extra = {k: info[k] for k in ("host", "device", "error") if info.get(k) is not None}
    finish_job(state, job, info.get("returncode"), on_change, extra=extra)


def _cancel(ray: Any, state: SweepState, inflight: dict[Any, Job], on_change: OnChange | None) -> None:
    """Stop every task and wait for it to end, so that no trainer outlives the sweep (nor Ray, if ours)."""
    for ref in inflight:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + CANCEL_WAIT_S
    forced = False
    while inflight:
        try:
            done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.5)
        except KeyboardInterrupt:
            done = []
            for ref in inflight:  # a second Ctrl-C: the workers kill their trainers
                ray.cancel(ref, force=False)
        for ref in done:
            _finish(ray, state, inflight.pop(ref), ref, on_change)
        if inflight and time.monotonic() > deadline and not forced:
            forced = True
            for ref in inflight:
                ray.cancel(ref, force=True)  # the workers see their task process go and stop on their own
            deadline = time.monotonic() + 30.0
        elif inflight and forced and time.monotonic() > deadline:
            break
    for job in inflight.values():
        finish_job(state, job, None, on_change)
