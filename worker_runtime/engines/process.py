"""Run one child process in its own process group, pump its pipes, and stop it for real.

Everything happens on the calling thread with one selector (no helper thread
per run): stdin is written, stdout is handed to a callback as it arrives,
stderr keeps a bounded tail, and the abort check is polled between reads.

The child leads a new session (``start_new_session``), so its pid is its process
group id. On abort the whole group gets ``SIGTERM``, then ``SIGKILL`` after the
grace period. When the leader exits, every member still in its group (forgotten
background jobs that would hold our pipes open) is killed too, while the
leader is still an unreaped zombie, so the group id cannot have been reused.
Every pipe, the pidfd and the selector are closed before returning, and the
child is reaped: thousands of runs leave no zombie and no descriptor behind.

A process that leaves the group on purpose (``setsid``) escapes this cleanup;
the pipes are then abandoned after :data:`DRAIN_S`.

**Dying with the runtime.** On Linux the child is started with
``PR_SET_PDEATHSIG`` = ``SIGKILL`` (set by ``prctl`` between fork and exec),
so a runtime killed outright (``kill -9``, OOM) takes the child with it.
Linux sends that signal when the *thread* that forked the child exits, not
only the process: ``run_process`` must therefore run on a thread that outlives
the child. The runtime's run-pool threads do: a pool thread stays inside
``run_process`` until its child is reaped (or given up on after ``SIGKILL``),
and pool threads only exit when the pool shuts down, after every run has
ended; a child left behind then (one that would not die) is killed with its
thread, as wanted. Never call it from a short-lived helper thread. The setting
is not inherited: the child's own children are reached through the process
group (``killpg`` here; after a ``kill -9`` of the runtime, at the next start,
through the group id recorded via ``on_start`` and
:func:`~.process_groups.kill_stale_group`). Elsewhere it is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .process_groups import kill_stale_group

__all__ = ["DRAIN_S", "POLL_S", "Exit", "kill_stale_group", "run_process"]

log = logging.getLogger("worker_runtime.engines.process")

POLL_S = 0.05
"""How often the abort check runs while the child is silent."""
DRAIN_S = 2.0
"""How long pipes are drained after the group is gone, before being abandoned."""
KILL_WAIT_S = 5.0
"""How long to wait for the leader to die after ``SIGKILL`` before giving up on it."""
_READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Exit:
    """How the child ended: ``returncode`` as in :mod:`subprocess` (negative for a
    signal; None if it could not be reaped), plus the tail of its stderr."""

    returncode: int | None
    stderr_tail: bytes


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    stdin: bytes | None,
    on_stdout: Callable[[bytes], None],
    should_stop: Callable[[], bool],
    term_grace_s: float,
    stderr_tail_bytes: int = 4096,
    on_start: Callable[[int], None] | None = None,
) -> Exit:
    """Run ``argv`` to completion or until ``should_stop()``; ``OSError`` if it cannot start.

    ``on_start`` is called with the child's process group id as soon as it runs
    (before any input is written). If it raises, the group is killed and the
    exception propagates.
    """
    # The selector exists before the child does, so no failure can leave a child unwatched.
    with selectors.DefaultSelector() as selector:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        pump = _Pump(proc, selector, stdin or b"", on_stdout, stderr_tail_bytes)
        try:
            if on_start is not None:
                on_start(proc.pid)  # a session leader: its pid is its group id
            pump.start()
            pump.run(should_stop, term_grace_s)
        finally:
            pump.close()
    return Exit(returncode=proc.returncode, stderr_tail=bytes(pump.stderr_tail))


class _Pump:
    """The I/O loop of one child; ``close`` always leaves nothing behind (but the
    selector, which the caller owns)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        selector: selectors.BaseSelector,
        stdin: bytes,
        on_stdout: Callable[[bytes], None],
        tail_bytes: int,
    ) -> None:
        self._proc = proc
        self._selector = selector
        self._pending = memoryview(stdin)
        self._on_stdout = on_stdout
        self._tail_bytes = tail_bytes
        self.stderr_tail = bytearray()
        self._pidfd = _pidfd_open(proc.pid)
        self._exited = False
        self._reaped = False

    def start(self) -> None:
        """Watch the pipes (non-blocking) and the pidfd."""
        proc = self._proc
        for stream, events in (
            (proc.stdout, selectors.EVENT_READ),
            (proc.stderr, selectors.EVENT_READ),
            (proc.stdin, selectors.EVENT_WRITE),
        ):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                self._selector.register(stream.fileno(), events, stream)
        if self._pidfd is not None:
            self._selector.register(self._pidfd, selectors.EVENT_READ, None)
        if not self._pending:
            self._close_stdin()

    def run(self, should_stop: Callable[[], bool], term_grace_s: float) -> None:
        term_at: float | None = None
        kill_at: float | None = None
        drain_until: float | None = None
        while True:
            self._step()
            now = time.monotonic()
            if self._exited:
                if drain_until is None:
                    self._kill_group(signal.SIGKILL)  # stragglers would hold our pipes
                    self._reap()
                    drain_until = now + DRAIN_S
                if not self._pipes_open() or now >= drain_until:
                    return
            elif kill_at is not None:
                if now - kill_at >= KILL_WAIT_S:
                    log.warning("process %d did not die after SIGKILL", self._proc.pid)
                    return
            elif term_at is not None:
                if now - term_at >= term_grace_s:
                    self._kill_group(signal.SIGKILL)
                    kill_at = now
            elif should_stop():
                self._close_stdin()
                self._kill_group(signal.SIGTERM)
                term_at = now

    def _step(self) -> None:
        for key, _ in self._selector.select(POLL_S):
            if key.data is None:
                self._exited = True
                self._selector.unregister(key.fd)
            elif key.data is self._proc.stdin:
                self._write_stdin()
            else:
                self._read(key.fd, key.data is self._proc.stdout)
        if not self._exited and self._pidfd is None:
            self._exited = _has_exited(self._proc.pid)

    def _read(self, fd: int, is_stdout: bool) -> None:
        try:
            chunk = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not chunk:
            self._selector.unregister(fd)
        elif is_stdout:
            self._on_stdout(chunk)
        else:
            self.stderr_tail += chunk
            del self.stderr_tail[: -self._tail_bytes]

    def _write_stdin(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            written = os.write(stdin.fileno(), self._pending[:_READ_SIZE])
        except BlockingIOError:
            return
        except BrokenPipeError:  # the child does not read its input: not our failure
            written = len(self._pending)
        self._pending = self._pending[written:]
        if not self._pending:
            self._close_stdin()

    def _close_stdin(self) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            return
        if self._selector.get_map().get(stdin.fileno()) is not None:
            self._selector.unregister(stdin.fileno())
        stdin.close()

    def _pipes_open(self) -> bool:
        return any(key.data is not None for key in self._selector.get_map().values())

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._reaped:
            return  # the group id may belong to someone else by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        if not self._reaped:
            self._proc.wait()
            self._reaped = True

    def close(self) -> None:
        """Kill whatever is left of the group, reap the leader, close every descriptor."""
        try:
            if not self._reaped:
                self._kill_group(signal.SIGKILL)
                try:
                    self._proc.wait(timeout=KILL_WAIT_S)
                    self._reaped = True
                except subprocess.TimeoutExpired:
                    log.warning("process %d left unreaped", self._proc.pid)
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
            for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to ``SIGKILL`` the child when its parent
    thread dies; None where there is no ``prctl``."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def setup() -> None:  # runs in the child between fork and exec: two system calls, no more
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the runtime died before the line above took effect
            os._exit(1)

    return setup


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux (loaded in the parent, never after fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


def _pidfd_open(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


def _has_exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it (it keeps holding its group id)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None
