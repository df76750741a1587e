"""Helpers for the fs store tests: runtimes on a temp directory, a faulty file layer,
and child processes that own (and crash) a runtime directory."""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker_runtime import Runtime, RuntimeConfig, testing
from worker_runtime.clock import Clock, new_id
from worker_runtime.domain import WorkerRecord
from worker_runtime.engines import Engine
from worker_runtime.profiles import Profile, ProfileRegistry
from worker_runtime.stores.fs import FsStore
from worker_runtime.stores.fs.fileops import FileOps
from worker_runtime.testing import NOW as NOW  # the suite's fixed time, re-exported

RUNTIME_ID = "rt-fs"
REPO = Path(__file__).resolve().parents[2]


def fs_config(data_dir: Path, **changes: Any) -> RuntimeConfig:
    changes.setdefault("runtime_id", RUNTIME_ID)
    return RuntimeConfig(store="fs", data_dir=str(data_dir), **changes)


def open_runtime(
    data_dir: Path,
    *,
    ops: FileOps | None = None,
    engines: Mapping[str, Engine] | None = None,
    **changes: Any,
) -> Runtime:
    """A runtime on the fs store in ``data_dir``: optionally with a fault-injecting
    ``ops``, and a named profile per fake engine (profile name = engine name)."""
    config = fs_config(data_dir, **changes)
    engines = dict(engines or {})
    registry = ProfileRegistry(
        [Profile(name=name, kind="named", engine=name) for name in engines],
        engines={name: functools.partial(_same, engine) for name, engine in engines.items()},
    )
    store = FsStore.open(str(data_dir), config.runtime_id, new_id, ops=ops)
    return Runtime.open(config, store=store, profiles=registry)


def _same(engine: Engine, settings: Mapping[str, Any]) -> Engine:
    return engine


def worker_record(worker_id: str = "w", **fields: Any) -> WorkerRecord:
    """:func:`worker_runtime.testing.worker_record` in this suite's runtime (``RUNTIME_ID``)."""
    fields.setdefault("runtime_id", RUNTIME_ID)
    return testing.worker_record(worker_id, **fields)


def runtime_dir(data_dir: Path, runtime_id: str = RUNTIME_ID) -> Path:
    return data_dir / "runtimes" / runtime_id


class FaultyOps(FileOps):
    """The real file layer, except that ``fail_*`` makes the next calls fail:
    every fsync (EIO), every write (ENOSPC), only writes to the commit journal
    (after the logs of a flush were written: a crash before its commit), or only
    record files (a checkpoint).

    Counts fsyncs so a test can see that a failed one is never retried.
    """

    def __init__(self) -> None:
        self.fail_fsync = False
        self.fail_write = False
        self.fail_journal = False
        self.fail_records = False
        self.fsyncs = 0
        self.fsync_gate: threading.Event | None = None
        self.in_fsync = threading.Event()
        self._paths: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        fd = super().open(path, flags, mode)
        self._paths[fd] = path
        return fd

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        if self.fsync_gate is not None:
            self.in_fsync.set()
            assert self.fsync_gate.wait(10), "the test never opened the fsync gate"
        if self.fail_fsync:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)

    def write_synced(self, path: str, data: bytes, mode: int = 0o600) -> None:
        if self.fail_records and path.endswith(".json.tmp"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().write_synced(path, data, mode)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        journal = self._paths.get(fd, "").endswith("journal.jsonl")
        if self.fail_write or (self.fail_journal and journal):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)


class NoSyncOps(FileOps):
    """The real file layer without fsyncs: for tests of what bytes on disk are
    recovered to, run over many copies of a store, where durability is not the
    question (and fsyncs would only make them slow)."""

    def fsync(self, fd: int) -> None:
        return None


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@contextmanager
def child(script: str, *args: str, timeout: float = 30.0) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` (Python source) in a child process; it is killed on exit."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=child_env(),
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=timeout)


def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The child's next stdout line, or fail past ``timeout`` (the child is killed)."""
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if reader.is_alive() or not result or not result[0]:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"the child said nothing within {timeout}s; stderr: {err[-2000:]}")
    return result[0].strip()


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def env_of(mapping: Mapping[str, str]) -> dict[str, str]:
    env = child_env()
    env.update(mapping)
    return env


class ShiftedClock(Clock):
    """Wall time plus an offset the test moves: expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> str:
        moment = datetime.now(UTC) + self.offset
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
