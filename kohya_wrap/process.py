"""The one place kohya-wrap runs a long-lived child process and follows its output.

stream() starts argv (a list, never a shell string) with an explicit environment and working
directory in a new session, so the child and everything it starts (accelerate's trainer child,
DataLoader workers) form one process group that can be signalled as a whole: accelerate does not
forward signals to its child (accelerate/commands/launch.py: simple_launcher; docs/sd-scripts.md#signals-and-process-groups).

- stdout and stderr are read by one thread each, so neither pipe can fill up and block the child.
  The main thread gets (stream, bytes) chunks in arrival order, writes every byte to the log file
  (both streams interleaved in arrival order, unlabelled, as a terminal would show them) and then
  hands the chunk to on_output. When both pipes are quiet for `idle_s`, on_idle is called.
- Ctrl-C (SIGINT), SIGTERM or SIGHUP to kohya-wrap: the first sends SIGINT to the child's whole
  group and keeps reading until it exits; the second sends SIGKILL to the group.
  stop() does the same from code (for example when the loss became NaN).
- A group that ignores the SIGINT (a hung trainer, one that masks it) gets SIGTERM after
  STOP_TERM_AFTER_S and SIGKILL STOP_KILL_AFTER_S later: a stop never waits for the trainer to finish.
- On the way out, by any path (exceptions included), whatever is left of the group is killed:
  no process of it outlives stream().
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.errors import TrainerNotFound

READ_SIZE = 65536
# After our direct child exits, what is left of its group gets this long to finish on its own.
GROUP_EXIT_GRACE_S = 10.0
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# After a stop's SIGINT: SIGTERM to the group when it is still there this long after, then SIGKILL.
# sd-scripts stops on SIGINT within a second or two (KeyboardInterrupt in its loop, transcript F5).
STOP_TERM_AFTER_S = 8.0
STOP_KILL_AFTER_S = 4.0


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


class Streamer:
    """One run of a child process; see the module docstring. Use stream() unless you need stop()."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        on_output: Callable[[str, bytes], None],
        on_idle: Callable[[], None] | None = None,
        idle_s: float = 0.5,
        on_signal: Callable[[int, int], None] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.pass_fds = tuple(pass_fds)  # descriptors the child keeps (the run directory's lock)
        self.env = dict(env)
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.on_output = on_output
        self.on_idle = on_idle
        self.idle_s = idle_s
        self.on_signal = on_signal  # (signal number, how many so far) -> None, for the UI
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_reason: str | None = None
        self._stops = 0
        self._stopped_at: float | None = None  # monotonic time of the first stop's SIGINT
        self._termed = False
        self._killed = False
        self.log_error: OSError | None = None  # why train.log stopped growing (a full disk), if it did

    # -- control -----------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """First call: SIGINT to the whole group. Second call: SIGKILL to the group."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stops += 1
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        if self._proc is None:
            return
        if self._stops == 1:
            _killpg(self._proc.pid, signal.SIGINT)
        else:
            self.kill()

    def _escalate(self) -> None:
        """A stopped group still running: SIGTERM after STOP_TERM_AFTER_S, SIGKILL after STOP_KILL_AFTER_S more."""
        if self._stopped_at is None or self._proc is None or self._killed:
            return
        waited = time.monotonic() - self._stopped_at
        if waited > STOP_TERM_AFTER_S + STOP_KILL_AFTER_S:
            self.kill()
        elif waited > STOP_TERM_AFTER_S and not self._termed:
            self._termed = True
            _killpg(self._proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self._proc is not None:
            self._killed = True
            _killpg(self._proc.pid, signal.SIGKILL)

    def _handle_signal(self, signum: int, _frame: object) -> None:
        self.stop("interrupt")
        if self.on_signal is not None:
            self.on_signal(signum, self._stops)

    # -- run ---------------------------------------------------------------------------------

    def run(self) -> ProcessResult:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main_thread:
            # Installing our handler before the fork also matters for the child: a signal we
            # ignore (kohya-wrap started as a background job) would stay ignored across exec, and
            # SIGINT to the group would then do nothing (transcript F5x). A handled one resets.
            for sig in _FORWARDED_SIGNALS:
                previous[sig] = signal.signal(sig, self._handle_signal)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        try:
            # unbuffered: a write the disk refuses is dropped whole, never left in a buffer to fail again
            with open(self.log_path, "ab", buffering=0) as log:
                try:
                    self._proc = subprocess.Popen(
                        self.argv,
                        env=self.env,
                        cwd=self.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                        close_fds=True,
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
                if self._stops:  # a Ctrl-C that came while starting
                    _killpg(self._proc.pid, signal.SIGINT)
                returncode = self._pump(log)
        finally:
            self._reap_group()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return ProcessResult(
            returncode=returncode,
            stop_reason=self._stop_reason,
            killed=self._killed,
            started_at=started,
            ended_at=time.time(),
        )

    def _pump(self, log: object) -> int:
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        chunks: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        readers = [
            threading.Thread(target=_reader, args=("stdout", proc.stdout.fileno(), chunks), daemon=True),
            threading.Thread(target=_reader, args=("stderr", proc.stderr.fileno(), chunks), daemon=True),
        ]
        for reader in readers:
            reader.start()
        open_streams = 2
        exited_at: float | None = None
        while open_streams:
            self._escalate()
            try:
                name, data = chunks.get(timeout=self.idle_s)
            except queue.Empty:
                if self.on_idle is not None:
                    self.on_idle()
                if proc.poll() is not None:
                    # Our child is gone but someone in its group still holds the pipes (an
                    # orphaned trainer, docs/sd-scripts.md#signals-and-process-groups): give it a grace period, then stop the group.
                    exited_at = exited_at or time.monotonic()
                    waited = time.monotonic() - exited_at
                    if waited > GROUP_EXIT_GRACE_S and self._stops == 0:
                        self.stop("orphaned")
                    elif waited > 2 * GROUP_EXIT_GRACE_S:
                        self.kill()
                    if waited > 3 * GROUP_EXIT_GRACE_S:
                        break  # something left the group and keeps the pipes: stop reading
                continue
            if data is None:
                open_streams -= 1
                continue
            if self.log_error is None:
                try:
                    log.write(data)  # type: ignore[attr-defined]
                except OSError as e:  # a full disk: the trainer is still followed, the log stops here
                    self.log_error = e
            self.on_output(name, data)
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        return returncode

    def _reap_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None or group_members(proc.pid):
            self._killed = True
            _killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while group_members(proc.pid) and time.monotonic() < deadline:
            _killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.05)


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
