"""The filesystem store: durable, crash-safe, and fast through group commit.

Writes are staged in memory (cheap, under the runtime's lock) and made
durable by :meth:`FsStore.sync`, which shares one flush among all threads
waiting at the same time (see ``commit.py``). A flush:

1. creates new worker directories;
2. appends staged log lines (events, transcripts, runs, diagnostics,
   idempotency keys) and writes each dirty record once, to a temp file in
   its own directory, however many times it changed since the last flush;
3. fsyncs all of those at once, with the directories of new files;
4. renames the temp files over the records (``os.replace``) and fsyncs
   their directories.

A record is therefore never newer than its logs, and loading
(``fs_load.py``) reconciles a record that is older. Any ``OSError`` fails
the store for good (``runtime_unavailable``); see ``fs_files.py`` for the
layout.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..domain import Diagnostic, Event, Run, RuntimeRecord, TranscriptEntry, WorkerRecord
from ..errors import ConfigError, RuntimeUnavailable
from .base import IdempotencyRecord, Store, StoreState
from .commit import GroupCommit
from .fs_files import Layout, WorkerFiles, encode_runtime, encode_worker
from .fs_load import Loaded, load
from .fsio import FileOps, Parallel
from .jsonl import JsonlLog, Written
from .lock import DirLock, default_runtime_id

__all__ = ["FsStore"]


@dataclass(kw_only=True)
class _Batch:
    """What one flush writes; ``written`` is filled in by the flush."""

    dirs: list[str]
    logs: list[tuple[JsonlLog[Any], list[Any]]]
    records: list[tuple[str, Callable[[], bytes]]]
    written: list[tuple[JsonlLog[Any], Written]] = field(default_factory=list)


class FsStore(Store):
    """Runtime state in files under ``<data_dir>/runtimes/<runtime_id>/``.

    Open with :meth:`FsStore.open`, which takes the directory's lock and
    recovers what a crash left; :meth:`close` flushes and releases the lock.
    """

    kind = "fs"

    def __init__(self, layout: Layout, lock: DirLock, ops: FileOps, loaded: Loaded) -> None:
        self.runtime_id = layout.runtime_id
        self.layout = layout
        self._lock_file = lock
        self._ops = ops
        self._parallel = Parallel()
        self._mutex = threading.Lock()
        self._commit: GroupCommit[_Batch] = GroupCommit(
            self._mutex, take=self._take, flush=self._flush, done=self._done
        )
        self._state = loaded.state
        self._events = loaded.events
        self._first_event_id = loaded.first_event_id
        self._diagnostics = loaded.diagnostics
        self._diagnostic_cache: list[Diagnostic] | None = None
        self._idempotency_log = loaded.idempotency_log
        self._idempotency = loaded.idempotency
        self._workers = loaded.workers
        self._next_seq = loaded.next_seq
        self._dirty_logs: dict[int, JsonlLog[Any]] = {}
        self._dirty_workers: dict[str, WorkerRecord] = {}
        self._dirty_runtime: RuntimeRecord | None = None
        self._new_dirs: list[str] = []
        self._closed = False

    @classmethod
    def open(
        cls,
        data_dir: str,
        runtime_id: str | None,
        new_id: Callable[[str], str],
        *,
        ops: FileOps | None = None,
    ) -> FsStore:
        """Lock and load the runtime ``runtime_id`` under ``data_dir``; without an
        id, the one created on first use of ``data_dir`` (made with ``new_id``)."""
        ops = ops or FileOps()
        data_dir = os.path.abspath(data_dir)
        try:
            ops.makedirs(data_dir)
            if runtime_id is None:
                runtime_id = default_runtime_id(data_dir, new_id, ops)
            layout = Layout(data_dir, runtime_id)
            ops.makedirs(layout.workers)
            lock = DirLock.acquire(layout.path("lock"))
        except OSError as exc:
            raise ConfigError(
                f"cannot use the data directory {data_dir}: {exc.strerror}",
                details={"data_dir": data_dir},
            ) from exc
        try:
            return cls(layout, lock, ops, load(layout, ops))
        except OSError as exc:
            lock.release()
            raise RuntimeUnavailable(
                f"cannot read the runtime directory {layout.root}: {exc.strerror}"
            ) from exc
        except BaseException:
            lock.release()
            raise

    @property
    def flushes(self) -> int:
        """How many flushes have run (each one is a group of syncs)."""
        return self._commit.flushes

    def load(self) -> StoreState:
        return self._state

    # -- records -------------------------------------------------------------------

    def put_runtime(self, record: RuntimeRecord) -> None:
        with self._mutex:
            self._commit.staged()
            self._dirty_runtime = record

    def put_worker(self, record: WorkerRecord) -> None:
        with self._mutex:
            self._commit.staged()
            self._files(record.worker_id)
            self._dirty_workers[record.worker_id] = record

    def _files(self, worker_id: str) -> WorkerFiles:
        files = self._workers.get(worker_id)
        if files is None:
            files = WorkerFiles.create(self.layout, worker_id, self._next_seq, self._ops)
            self._next_seq += 1
            self._workers[worker_id] = files
            self._new_dirs.append(worker_id)
        return files

    def _stage(self, log: JsonlLog[Any], item: Any) -> None:
        log.append(item)
        self._dirty_logs[id(log)] = log

    # -- logs ---------------------------------------------------------------------

    def append_transcript(self, worker_id: str, entry: TranscriptEntry) -> None:
        with self._mutex:
            self._commit.staged()
            self._stage(self._files(worker_id).transcript, entry)

    def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptEntry]:
        with self._mutex, self._reading():
            files = self._workers.get(worker_id)
            return files.transcript.read(start, limit) if files else []

    def put_run(self, worker_id: str, run: Run) -> None:
        with self._mutex:
            self._commit.staged()
            files = self._files(worker_id)
            self._stage(files.runs, run)
            if files.runs_by_id is not None:
                files.runs_by_id[run.run_id] = run

    def get_run(self, worker_id: str, run_id: str) -> Run | None:
        with self._mutex, self._reading():
            files = self._workers.get(worker_id)
            if files is None:
                return None
            if files.runs_by_id is None:
                files.runs_by_id = {run.run_id: run for run in files.runs.read_all()}
            return files.runs_by_id.get(run_id)

    def append_event(self, event: Event) -> None:
        with self._mutex:
            self._commit.staged()
            self._stage(self._events, event)

    def read_events(self, cursor: int, limit: int) -> list[Event]:
        with self._mutex, self._reading():
            return self._events.read(max(cursor - self._first_event_id, 0), limit)

    def append_diagnostic(self, diagnostic: Diagnostic) -> None:
        with self._mutex:
            self._commit.staged()
            self._stage(self._diagnostics, diagnostic)
            if self._diagnostic_cache is not None:
                self._diagnostic_cache.append(diagnostic)

    def read_diagnostics(self) -> Sequence[Diagnostic]:
        with self._mutex, self._reading():
            if self._diagnostic_cache is None:
                self._diagnostic_cache = self._diagnostics.read_all()
            return tuple(self._diagnostic_cache)

    def get_idempotency(self, key: str) -> IdempotencyRecord | None:
        with self._mutex:
            return self._idempotency.get(key)

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        with self._mutex:
            self._commit.staged()
            if record.key not in self._idempotency:
                self._idempotency[record.key] = record
                self._stage(self._idempotency_log, record)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise RuntimeUnavailable(
                f"the store could not be read: {exc.strerror}", details={"retry_after_s": 1}
            ) from exc

    # -- durability ---------------------------------------------------------------

    def sync(self) -> None:
        self._commit.sync()

    def close(self) -> None:
        """Flush everything and release the directory lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit.sync()
        finally:
            with self._mutex:
                self._commit.fail("the store is closed")
            self._parallel.close()
            self._lock_file.release()

    def _take(self) -> _Batch:
        records: list[tuple[str, Callable[[], bytes]]] = []
        for worker_id, record in self._dirty_workers.items():
            path = self.layout.path(self.layout.worker_rel(worker_id, "worker.json"))
            seq = self._workers[worker_id].seq
            records.append((path, functools.partial(encode_worker, seq, record)))
        if self._dirty_runtime is not None:
            runtime = self._dirty_runtime
            records.append(
                (self.layout.path("runtime.json"), functools.partial(encode_runtime, runtime))
            )
        batch = _Batch(
            dirs=[self.layout.path(self.layout.worker_rel(w)) for w in self._new_dirs],
            logs=[(log, log.take()) for log in self._dirty_logs.values()],
            records=records,
        )
        self._dirty_logs, self._dirty_workers, self._dirty_runtime = {}, {}, None
        self._new_dirs = []
        return batch

    def _flush(self, batch: _Batch) -> None:
        ops = self._ops
        created = [ops.mkdir(d) for d in batch.dirs]
        new_entries = {self.layout.workers} if any(created) else set()
        try:
            for log, items in batch.logs:
                written = log.write(items)
                batch.written.append((log, written))
                if written.created:
                    new_entries.add(os.path.dirname(log.path))
            # Temp files are encoded and written by the pool too, beside the fsyncs.
            tasks: list[Callable[[], None]] = [
                functools.partial(ops.fsync, written.fd) for _, written in batch.written
            ]
            tasks += [
                functools.partial(_write_temp, ops, path, encode) for path, encode in batch.records
            ]
            tasks += [functools.partial(ops.fsync_dir, d) for d in new_entries]
            self._parallel.run(tasks)
        finally:
            _close_all(ops, [written.fd for _, written in batch.written])
        for path, _ in batch.records:
            ops.replace(path + ".tmp", path)
        parents = {os.path.dirname(path) for path, _ in batch.records}
        self._parallel.run([functools.partial(ops.fsync_dir, d) for d in sorted(parents)])

    def _done(self, batch: _Batch) -> None:
        for log, written in batch.written:
            log.advance(written)


def _close_all(ops: FileOps, fds: list[int]) -> None:
    failure: OSError | None = None
    for fd in fds:
        try:
            ops.close(fd)
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _write_temp(ops: FileOps, path: str, encode: Callable[[], bytes]) -> None:
    ops.write_synced(path + ".tmp", encode())
