"""Helpers for the engine tests: a runtime on a profiles file, runs driven through
``dispatch``, and checks that processes are really gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from worker_runtime import Runtime, RuntimeConfig, commands
from worker_runtime.domain import Event, ProfileSelector, Role, WorkerIntent
from worker_runtime.testing import wait_for_run_end, wait_until


def write_profiles(tmp_path: Path, profiles: Mapping[str, Any]) -> str:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"profiles": profiles}), encoding="utf-8")
    return str(path)


def open_runtime(tmp_path: Path, profiles: Mapping[str, Any], **config: Any) -> Runtime:
    """A memory-store runtime whose named profiles are ``profiles``."""
    path = write_profiles(tmp_path, profiles)
    return Runtime.open(RuntimeConfig(runtime_id="rt-eng", profiles_path=path, **config))


@contextlib.contextmanager
def runtimes(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """``open(profiles, **config)``: runtimes on profiles files in ``tmp_path``,
    every one closed when the block ends (the engine tests' fixtures)."""
    opened: list[Runtime] = []

    def _open(profiles: Mapping[str, Any], **config: Any) -> Runtime:
        rt = open_runtime(tmp_path, profiles, **config)
        opened.append(rt)
        return rt

    try:
        yield _open
    finally:
        for rt in opened:
            rt.close()


def create(rt: Runtime, profile: str, intent: WorkerIntent | None = None) -> str:
    """A new worker on the named ``profile``; returns its id."""
    worker = rt.dispatch(
        commands.CreateWorker(
            profile=ProfileSelector(kind="named", value=profile), intent=intent or WorkerIntent()
        )
    )
    return worker.worker_id


def send(rt: Runtime, worker_id: str, content: str) -> str:
    """Send input; returns the run id."""
    return rt.dispatch(commands.SendInput(worker_id=worker_id, content=content)).run_id


def run_once(rt: Runtime, worker_id: str, content: str, timeout: float = 20.0) -> Event:
    """Send input and wait for the run's terminal event."""
    return wait_for_run_end(rt, send(rt, worker_id, content), timeout=timeout)


def reply(rt: Runtime, worker_id: str, run_id: str) -> str:
    """Everything the engine wrote in ``run_id``, joined."""
    items = rt.dispatch(commands.GetTranscript(worker_id=worker_id, limit=256)).items
    return "".join(e.content for e in items if e.role is Role.ASSISTANT and e.run_id == run_id)


def read_pids(path: Path, count: int, timeout: float = 10.0) -> list[int]:
    """Wait until ``path`` holds ``count`` pids (one per line) and return them."""

    def ready() -> bool:
        return path.exists() and len(path.read_text().split()) >= count

    wait_until(ready, timeout, f"{count} pids in {path}")
    return [int(p) for p in path.read_text().split()[:count]]


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie left for init to reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def zombie_children() -> list[int]:
    """This process's children that exited and were never reaped."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] == "Z":
            found.append(int(entry))
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes (of this user) whose environment has ``name=value``: how a
    test finds every process a run started, however deep, without trusting pid files."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and alive(int(entry)):
            found.append(int(entry))
    return found


def kill_all_with_env(name: str, value: str) -> None:
    """Clean-up after a failed test: SIGKILL every process carrying ``name=value``."""
    for pid in processes_with_env(name, value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
