"""The one place kohya-wrap runs a long-lived child process: the trainer, the sample generator, a sweep's workers.

ProcessGroup starts argv (a list, never a shell string) with an explicit environment and working
directory in a new session, so the child and everything it starts (accelerate's trainer child,
DataLoader workers) form one process group that is signalled as a whole: accelerate does not
forward signals to its child (accelerate/commands/launch.py: simple_launcher;
docs/sd-scripts.md#signals-and-process-groups).

- Stopping: stop() sends SIGINT to the whole group. A group that ignores it (a hung trainer, one
  that masks it) gets SIGTERM after `term_after_s` and SIGKILL `kill_after_s` later: a stop never
  waits for the child to finish. A second stop kills the group (TRAINER), or passes SIGINT on again
  to a child that escalates by itself (WORKER: a sweep's worker, which stops its own trainer's group).
- Ctrl-C (SIGINT), SIGTERM or SIGHUP to kohya-wrap: forwarded_signals() turns each into a call of
  the caller's handler (which stops its groups), on the main thread only.
- On the way out, by any path (exceptions included), close() kills whatever is left of the group and
  reaps it: no process of it outlives its ProcessGroup.

Streamer (and stream()) follows a trainer's output besides:
- stdout and stderr are read by one thread each, so neither pipe can fill up and block the child.
  The main thread gets (stream, bytes) chunks in arrival order, writes every byte to the log file
  (both streams interleaved in arrival order, unlabelled, as a terminal would show them) and then
  hands the chunk to on_output. When both pipes are quiet for `idle_s`, on_idle is called.
- the first Ctrl-C stops the group and it keeps reading until the child exits; the second kills it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, TypedDict

from kohya_wrap.errors import TrainerNotFound

if TYPE_CHECKING:
    from typing_extensions import NotRequired, Unpack

READ_SIZE = 65536
# After our direct child exits, what is left of its group gets this long to finish on its own.
GROUP_EXIT_GRACE_S = 10.0
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# After a stop's SIGINT: SIGTERM to the group when it is still there this long after, then SIGKILL.
# sd-scripts stops on SIGINT within a second or two (KeyboardInterrupt in its loop, transcript F5).
STOP_TERM_AFTER_S = 8.0
STOP_KILL_AFTER_S = 4.0


@dataclass(frozen=True)
class StopPolicy:
    """How a group is stopped: SIGINT, then SIGTERM after term_after_s, SIGKILL kill_after_s later;
    what a second stop does: kill the group, or pass SIGINT on again (a child that escalates itself)."""

    term_after_s: float
    kill_after_s: float
    second_stop_kills: bool


# The trainer and the sample generator.
TRAINER = StopPolicy(STOP_TERM_AFTER_S, STOP_KILL_AFTER_S, second_stop_kills=True)
# A sweep's worker: its own TRAINER group stops within STOP_TERM_AFTER_S + STOP_KILL_AFTER_S of its
# SIGINT, and its second SIGINT (or our SIGTERM) kills that group, so the worker is killed only once
# its trainer is surely gone; killing it earlier would leave its trainer (in a session of its own) behind.
WORKER = StopPolicy(60.0, 30.0, second_stop_kills=False)


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    stop_reason: str | None  # "interrupt" (a signal to us), or the reason given to stop(); None if it ended by itself
    killed: bool  # we sent SIGKILL to the group
    started_at: float
    ended_at: float


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group. Linux reads /proc; elsewhere a signal-0 probe."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def forwarded_signals(handler: Callable[[int], None], signals: Sequence[int] = FORWARDED_SIGNALS) -> Iterator[None]:
    """Inside: each of `signals` to kohya-wrap calls handler(signal number) instead of its default, on the
    main thread (elsewhere Python cannot take signals, and nothing changes); the previous handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        handler(signum)

    # Installing a handler before a fork also matters for the child: a signal we ignore (kohya-wrap
    # started as a background job) would stay ignored across exec, and SIGINT to the group would then
    # do nothing (transcript F5x). A handled one resets.
    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def accept_stop_signals() -> None:
    """Undo what a parent may have done to our stop signals: a Ray worker blocks (and may ignore) them,
    and a child inherits both across exec; then neither we nor our children would see a Ctrl-C."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    for sig in FORWARDED_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


class ProcessGroup:
    """A child started in a session (and so a process group) of its own, stopped and reaped as a whole.

    Use it as a context manager, or call close(): no process of the group outlives it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        pass_fds: Sequence[int] = (),
        policy: StopPolicy = TRAINER,
    ) -> None:
        self.policy = policy
        self.proc = subprocess.Popen(
            [str(a) for a in argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
        self.pid = self.proc.pid
        self.stops = 0
        self.stop_reason: str | None = None
        self.killed = False  # we sent SIGKILL to the group
        self._stopped_at: float | None = None  # monotonic time of the first stop's SIGINT
        self._termed = False

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def stop(self, reason: str) -> None:
        """The first: SIGINT to the whole group (escalated by escalate()); a later one as the policy says."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stops += 1
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        if self.stops > 1 and self.policy.second_stop_kills:
            self.kill()
        else:
            _killpg(self.pid, signal.SIGINT)

    def kill(self) -> None:
        self.killed = True
        _killpg(self.pid, signal.SIGKILL)

    def escalate(self) -> None:
        """A stopped group still running: SIGTERM after term_after_s, SIGKILL after kill_after_s more."""
        if self._stopped_at is None or self.killed:
            return
        waited = time.monotonic() - self._stopped_at
        if waited > self.policy.term_after_s + self.policy.kill_after_s:
            self.kill()
        elif waited > self.policy.term_after_s and not self._termed:
            self._termed = True
            _killpg(self.pid, signal.SIGTERM)

    def poll(self) -> int | None:
        """The child's exit code, or None while it runs (a stopped one is escalated meanwhile)."""
        self.escalate()
        return self.proc.poll()

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to timeout_s for the child; its exit code, or None. The timeout also returns control to
        Python, where a KeyboardInterrupt (Ray's cancel interrupts the main thread) can be seen."""
        self.escalate()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def close(self, stop_first: bool = False) -> None:
        """Kill what is left of the group and reap it. stop_first: stop it and wait (escalating) first,
        for a child that must get to write its results (a sweep's worker)."""
        if stop_first and self.proc.poll() is None:
            self.stop("closed")
            while self.wait(0.2) is None:
                pass
        if self.proc.poll() is None or group_members(self.pid):
            self.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while group_members(self.pid) and time.monotonic() < deadline:
            _killpg(self.pid, signal.SIGKILL)
            time.sleep(0.05)


def _reader(name: str, fd: int, chunks: queue.Queue[tuple[str, bytes | None]]) -> None:
    try:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                break
            chunks.put((name, data))
    finally:
        chunks.put((name, None))


class Launch(TypedDict):
    """Where and how Streamer starts its child."""

    env: Mapping[str, str]
    cwd: Path
    pass_fds: NotRequired[Sequence[int]]


class Streamer:
    """One run of a trainer-like child whose output is followed; see the module docstring. Use stream()
    unless you need stop()."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        on_output: Callable[[str, bytes], None],
        on_idle: Callable[[], None] | None = None,
        idle_s: float = 0.5,
        on_signal: Callable[[int, int], None] | None = None,
        **launch: Unpack[Launch],
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.pass_fds = tuple(launch.get("pass_fds", ()))  # descriptors the child keeps (the run directory's lock)
        self.env = dict(launch["env"])
        self.cwd = Path(launch["cwd"])
        self.log_path = Path(log_path)
        self.on_output = on_output
        self.on_idle = on_idle
        self.idle_s = idle_s
        self.on_signal = on_signal  # (signal number, how many so far) -> None, for the UI
        self._group: ProcessGroup | None = None
        self._early_stop: str | None = None  # a stop that came before the child started
        self._early_stops = 0
        self.log_error: OSError | None = None  # why train.log stopped growing (a full disk), if it did

    @property
    def _stops(self) -> int:
        return self._group.stops if self._group is not None else self._early_stops

    def stop(self, reason: str) -> None:
        """First call: SIGINT to the whole group. Second call: SIGKILL to the group."""
        if self._group is not None:
            self._group.stop(reason)
        else:
            self._early_stop = self._early_stop or reason
            self._early_stops += 1

    def kill(self) -> None:
        if self._group is not None:
            self._group.kill()

    def _handle_signal(self, signum: int) -> None:
        self.stop("interrupt")
        if self.on_signal is not None:
            self.on_signal(signum, self._stops)

    def run(self) -> ProcessResult:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with forwarded_signals(self._handle_signal):
            # unbuffered: a write the disk refuses is dropped whole, never left in a buffer to fail again
            with open(self.log_path, "ab", buffering=0) as log:
                group = self._group = self._start()
                try:
                    for _ in range(self._early_stops):  # a Ctrl-C that came while starting
                        group.stop(self._early_stop or "interrupt")
                    returncode = self._pump(group, log)
                finally:
                    group.close()
        return ProcessResult(
            returncode=returncode,
            stop_reason=group.stop_reason,
            killed=group.killed,
            started_at=started,
            ended_at=time.time(),
        )

    def _start(self) -> ProcessGroup:
        try:
            return ProcessGroup(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=self.pass_fds,
            )
        except FileNotFoundError as e:
            raise TrainerNotFound(
                f"cannot start the trainer: {e.filename or self.argv[0]} not found",
                "Install the training dependencies (`pip install 'kohya-wrap[train]'`) in the Python "
                "that runs sd-scripts, or check the checkout with `kohya-wrap doctor`.",
            ) from None
        except PermissionError as e:
            raise TrainerNotFound(
                f"cannot start the trainer: {e.filename or self.argv[0]} is not executable",
                "Check the file's permissions, or run `kohya-wrap doctor`.",
            ) from None

    def _pump(self, group: ProcessGroup, log: IO[bytes]) -> int:
        proc = group.proc
        assert proc.stdout is not None and proc.stderr is not None
        chunks: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            threading.Thread(target=_reader, args=(name, pipe.fileno(), chunks), daemon=True).start()
        open_streams = 2
        exited_at: float | None = None
        while open_streams:
            group.escalate()
            try:
                name, data = chunks.get(timeout=self.idle_s)
            except queue.Empty:
                if self.on_idle is not None:
                    self.on_idle()
                if proc.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if self._orphaned(group, time.monotonic() - exited_at):
                        break  # something left the group and keeps the pipes: stop reading
                continue
            if data is None:
                open_streams -= 1
                continue
            self._log(log, data)
            self.on_output(name, data)
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        return returncode

    @staticmethod
    def _orphaned(group: ProcessGroup, waited: float) -> bool:
        """Our child is gone but someone in its group still holds the pipes (an orphaned trainer,
        docs/sd-scripts.md#signals-and-process-groups): a grace period, then stop the group, then kill
        it; True when it is time to stop reading."""
        if waited > GROUP_EXIT_GRACE_S and group.stops == 0:
            group.stop("orphaned")
        elif waited > 2 * GROUP_EXIT_GRACE_S:
            group.kill()
        return waited > 3 * GROUP_EXIT_GRACE_S

    def _log(self, log: IO[bytes], data: bytes) -> None:
        if self.log_error is None:
            try:
                log.write(data)
            except OSError as e:  # a full disk: the trainer is still followed, the log stops here
                self.log_error = e


def stream(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    on_output: Callable[[str, bytes], None],
    on_idle: Callable[[], None] | None = None,
    idle_s: float = 0.5,
) -> ProcessResult:
    """Run argv to the end, teeing its output to log_path and on_output. See the module docstring."""
    return Streamer(
        argv, env=env, cwd=cwd, log_path=log_path, on_output=on_output, on_idle=on_idle, idle_s=idle_s
    ).run()


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment a child gets: ours, plus what the run sets (which wins)."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass(frozen=True)
class Captured:
    returncode: int
    stdout: str
    stderr: str


def capture(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 30.0
) -> Captured | None:
    """Run a short command and return its output; None when it cannot run or does not finish in time."""
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Captured(done.returncode, done.stdout, done.stderr)
