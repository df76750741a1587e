"""The filesystem store: durable, crash-safe, and fast through group commit.

Writes are staged in memory (cheap, under the runtime's lock) and made
durable by :meth:`FsStore.sync`, which shares one flush among all the
threads waiting at the same time (``commit.py``). A flush:

1. appends the staged lines to every log that has some (events,
   transcripts, runs, diagnostics, idempotency keys);
2. appends one line to the commit journal: the latest version of every
   record that changed, each saying how many lines of its logs are now
   committed;
3. fsyncs all of those files at once (with the directory of any new file)
   and returns once every fsync has: nothing is acknowledged before.

Records are replaced atomically in their own files (temp file in the same
directory, fsync, ``os.replace``, fsync the directory) at checkpoints: in
the background when the journal grows past a limit (``flush.py``), on
close, and after recovery; the journal is then emptied. Loading
(``load.py``) rebuilds the committed state from the record files and the
journal (a last journal line counts only if every log it names got its
lines) and cuts every log back to it, so after a crash the store is exactly
as of its last commit: no half-done operation, no entry without its event.
A flush is cut between two runtime operations (see :meth:`FsStore.bind_lock`).
Any ``OSError`` fails the store for good (``runtime_unavailable``). The
layout is in ``layout.py``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence, Set
from typing import Any

from ...clock import Clock
from ...domain import Diagnostic, Event, Run, RuntimeRecord, TranscriptEntry, WorkerRecord
from ...errors import ConfigError, RuntimeUnavailable, StoreCorrupt
from ..base import (
    DEFAULT_IDEMPOTENCY_TTL_S,
    IdempotencyExpiry,
    IdempotencyRecord,
    Store,
    StoreState,
)
from ..idempotency import fresh_idempotency, put_fresh_idempotency
from .commit import GroupCommit, could_not_write
from .fileops import FileOps, Parallel, SymlinkFound, check_dir
from .flush import Batch, Flusher
from .jsonl import JsonlLog
from .layout import COMPACTING, RUNTIME, Layout, WorkerFiles, runtime_envelope, worker_envelope
from .load import Loaded, load
from .lock import DirLock, default_runtime_id
from .pages import DiagnosticPages
from .tombstones import DELETED

__all__ = ["FsStore"]

log = logging.getLogger("worker_runtime.stores")


class FsStore(Store):
    """Runtime state in files under ``<data_dir>/runtimes/<runtime_id>/``.

    Open with :meth:`FsStore.open`, which takes the directory's lock and
    recovers what a crash left; :meth:`close` flushes, checkpoints and
    releases the lock.
    """

    kind = "fs"

    def __init__(
        self,
        layout: Layout,
        lock: DirLock,
        ops: FileOps,
        loaded: Loaded,
        idempotency_ttl_s: float = DEFAULT_IDEMPOTENCY_TTL_S,
    ) -> None:
        self.runtime_id = layout.runtime_id
        self.expiry = IdempotencyExpiry(Clock(), idempotency_ttl_s)
        self.layout = layout
        self._lock_file = lock
        self._ops = ops
        self._mutex = threading.Lock()
        self._state = loaded.state
        self._runtime = loaded.runtime
        self._events, self._events_base = loaded.events, loaded.events_base
        self._diagnostics = loaded.diagnostics
        self._diagnostic_pages: DiagnosticPages | None = None  # read on first use
        self._idempotency_log = loaded.idempotency_log
        self._idempotency = loaded.idempotency
        self._workers = loaded.workers
        self._records = loaded.records  # the latest staged record of each worker
        self._next_seq = loaded.next_seq
        self._dirty_logs: dict[int, JsonlLog[Any]] = {}  # staged since the last take
        self._dirty_keys: set[str] = set()
        self._deletes: list[WorkerFiles] = []  # deleted since the last take
        self._deleted: set[str] = set()  # ids whose latest staged change is a delete
        self._runs_put: set[str] = set()  # workers whose run index lacks versions
        # Nothing is staged yet: the runtime record as loaded is the committed one.
        self._flusher = Flusher(layout, ops, loaded.journal, self._envelope(RUNTIME)())
        self._commit: GroupCommit[Batch] = GroupCommit(
            self._mutex,
            take=self._take,
            flush=self._flusher.flush,
            done=self._done,
            failed=self._flush_failed,
        )
        self._commit.between = self._between_flushes
        self._flusher.also = self._write_run_indexes
        self._closed = False
        try:  # records the journal had newer versions of are written to their files now
            self._flusher.checkpoint({key: self._envelope(key)() for key in loaded.stale})
            self._compact_idempotency()
        except SymlinkFound:
            self._flusher.close()
            raise
        except OSError as exc:
            # SPEC 10: a store that cannot write still serves reads. What was loaded
            # is the committed state (the journal still holds what could not be
            # checkpointed), so the runtime comes up, and its first flush fails.
            log.error("store checkpoint at open failed: %s", exc)
            self._flusher.fail(exc)
        except BaseException:
            self._flusher.close()
            raise
        for event in loaded.lost_events:  # committed by the first flush
            self._commit.staged()
            self._stage(RUNTIME, self._events, event)

    @classmethod
    def open(
        cls,
        data_dir: str,
        runtime_id: str | None,
        new_id: Callable[[str], str],
        *,
        ops: FileOps | None = None,
        idempotency_ttl_s: float = DEFAULT_IDEMPOTENCY_TTL_S,
    ) -> FsStore:
        """Lock and load the runtime ``runtime_id`` under ``data_dir``; without an
        id, the one created on first use of ``data_dir`` (made with ``new_id``)."""
        ops = ops or FileOps()
        # The operator's path may pass through links: resolved once, here. Below
        # it nothing is ever followed (``fileops.py``).
        data_dir = os.path.realpath(data_dir)
        try:
            ops.makedirs(data_dir)
            if runtime_id is None:
                runtime_id = default_runtime_id(data_dir, new_id, ops)
            layout = Layout(data_dir, runtime_id)
            for directory in (os.path.dirname(layout.root), layout.root, layout.workers):
                if ops.mkdir(directory):
                    ops.fsync_dir(os.path.dirname(directory))
            lock = DirLock.acquire(layout.path("lock"))
        except SymlinkFound as exc:
            raise _linked(data_dir, exc) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot use the data directory {data_dir}: {exc.strerror}",
                details={"data_dir": data_dir},
            ) from exc
        try:
            return cls(layout, lock, ops, load(layout, ops), idempotency_ttl_s)
        except SymlinkFound as exc:
            lock.release()
            raise _linked(layout.root, exc) from None
        except OSError as exc:
            # Recovery did not finish (it cuts logs, rebuilds indexes, moves damaged
            # files aside), so what it had read is not a state to serve.
            lock.release()
            raise RuntimeUnavailable(
                f"cannot recover the runtime directory {layout.root}: {_what_failed(exc)}",
                details={"retry_after_s": 1},
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

    def bind_lock(self, lock: contextlib.AbstractContextManager[Any]) -> None:
        self._commit.outer = lock

    # -- staging -------------------------------------------------------------------

    def put_runtime(self, record: RuntimeRecord) -> None:
        with self._mutex:
            self._commit.staged()
            self._runtime = record
            self._dirty_keys.add(RUNTIME)

    def put_worker(self, record: WorkerRecord) -> None:
        with self._mutex:
            self._commit.check()
            self._files(record.worker_id)
            self._commit.staged()
            self._records[record.worker_id] = record
            self._deleted.discard(record.worker_id)
            self._dirty_keys.add(record.worker_id)

    def delete_worker(self, worker_id: str) -> None:
        with self._mutex:
            self._commit.staged()
            files = self._workers.pop(worker_id, None)
            self._records.pop(worker_id, None)
            if files is None:
                return
            for log in files.logs():  # its unwritten lines die with it
                self._dirty_logs.pop(id(log), None)
            self._deletes.append(files)
            self._deleted.add(worker_id)
            self._dirty_keys.add(worker_id)

    def append_transcript(self, worker_id: str, entry: TranscriptEntry) -> None:
        with self._mutex:
            self._commit.check()
            files = self._files(worker_id)
            self._commit.staged()
            self._stage(worker_id, files.transcript, entry)

    def put_run(self, worker_id: str, run: Run) -> None:
        with self._mutex:
            self._commit.check()
            files = self._files(worker_id)
            self._commit.staged()
            self._stage(worker_id, files.runs, run)
            files.run_index.put(run)
            self._runs_put.add(worker_id)

    def append_event(self, event: Event) -> None:
        with self._mutex:
            self._commit.check()
            ref = event.worker_ref
            # First: a new worker's files may be refused, before anything is staged.
            files = self._files(ref.worker_id, events_from=event.event_id) if ref else None
            self._commit.staged()
            self._stage(RUNTIME, self._events, event)
            if files is not None:
                files.events.append(event.event_id)
                self._dirty_keys.add(files.worker_id)

    def append_diagnostic(self, diagnostic: Diagnostic) -> None:
        with self._mutex:
            self._commit.staged()
            self._stage(RUNTIME, self._diagnostics, diagnostic)
            if self._diagnostic_pages is not None:
                self._diagnostic_pages.append(diagnostic)

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        with self._mutex:
            self._commit.staged()
            if put_fresh_idempotency(self._idempotency, record, self.expiry):
                self._stage(RUNTIME, self._idempotency_log, record)

    def _files(self, worker_id: str, events_from: int | None = None) -> WorkerFiles:
        """The worker's files; new ones (a new worker, or one deleted before) own
        no event before ``events_from`` (default: the next event id)."""
        files = self._workers.get(worker_id)
        if files is None:
            self._check_worker_dir(worker_id)
            if events_from is None:
                events_from = self._events_base + self._events.count + 1
            files = WorkerFiles.create(
                self.layout, worker_id, self._next_seq, self._ops, events_from
            )
            self._next_seq += 1
            self._workers[worker_id] = files
        return files

    def _check_worker_dir(self, worker_id: str) -> None:
        """Refuse a new worker (``StoreCorrupt``) whose directory's name is taken by
        anything but a real directory: a link planted since the store opened is
        never written through. (One planted later still is: the flush's ``mkdir``
        and every open below it refuse it, and that flush fails.)"""
        try:
            check_dir(self.layout.path(self.layout.worker_rel(worker_id)))
        except FileNotFoundError:
            return
        except SymlinkFound as exc:
            raise _linked(self.layout.root, exc) from None

    def _stage(self, key: str, log: JsonlLog[Any], item: Any) -> None:
        log.append(item)
        self._dirty_logs[id(log)] = log
        self._dirty_keys.add(key)  # the record holding this log's committed length

    # -- reading -------------------------------------------------------------------

    def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptEntry]:
        with self._mutex, self._reading():
            files = self._workers.get(worker_id)
            return files.transcript.read(start, limit) if files else []

    def get_run(self, worker_id: str, run_id: str) -> Run | None:
        with self._mutex, self._reading():
            files = self._workers.get(worker_id)
            if files is None:
                return None
            run = files.run_index.get(run_id)
            self._index_later(files)
            return run

    def list_runs(self, worker_id: str, after: str | None, limit: int) -> list[Run]:
        with self._mutex, self._reading():
            files = self._workers.get(worker_id)
            if files is None:
                return []
            page = files.run_index.page(after, limit)
            self._index_later(files)
            return page

    def _index_later(self, files: WorkerFiles) -> None:
        """What a first read found of the runs log past its index (mutex held) is
        written into the index at the next checkpoint."""
        if files.run_index.pending:
            self._runs_put.add(files.worker_id)

    def read_events(self, cursor: int, limit: int, worker_id: str | None = None) -> list[Event]:
        with self._mutex, self._reading():
            base = self._events_base
            if worker_id is None:
                return self._events.read(max(cursor - base - 1, 0), limit)
            files = self._workers.get(worker_id)
            if files is None:
                return []
            ids = files.events.ids_from(cursor, limit)
            runs: list[tuple[int, int]] = []  # (start, count) of each run of consecutive ids
            begin = 0
            for end in range(1, len(ids) + 1):
                if end == len(ids) or ids[end] != ids[end - 1] + 1:
                    runs.append((ids[begin] - base - 1, end - begin))
                    begin = end
            return self._events.read_runs(runs)

    def read_diagnostics(self, after: int = 0, limit: int | None = None) -> Sequence[Diagnostic]:
        with self._mutex, self._reading():
            if self._diagnostic_pages is None:
                self._diagnostic_pages = DiagnosticPages(self._diagnostics.read_marked())
            return self._diagnostic_pages.page(after, limit)

    def get_idempotency(self, key: str) -> IdempotencyRecord | None:
        with self._mutex:
            return fresh_idempotency(self._idempotency, key, self.expiry)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except SymlinkFound as exc:
            raise _linked(self.layout.root, exc) from None
        except OSError as exc:
            raise RuntimeUnavailable(
                f"the store could not be read: {exc.strerror}", details={"retry_after_s": 1}
            ) from exc

    # -- durability ---------------------------------------------------------------

    def sync(self) -> None:
        self._commit.sync()

    def close(self) -> None:
        """Flush, checkpoint, and release the directory lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit.sync()
            with self._mutex:
                self._commit.check()  # a failed flush: nothing more is written
            self._commit.close("the store is closed")
            try:
                self._flusher.checkpoint()
                self._compact_idempotency()
            except OSError as exc:
                raise RuntimeUnavailable(f"the store could not checkpoint: {exc.strerror}") from exc
        finally:
            self._commit.close("the store is closed")
            self._flusher.close()
            self._lock_file.release()

    def _between_flushes(self) -> None:
        """After a flush that started a checkpoint (the leader's, no lock held),
        compact ``idempotency.jsonl``: it would otherwise grow with every keyed
        command for as long as the process runs."""
        if not self._flusher.checkpoint_started:
            return
        self._flusher.checkpoint_started = False
        try:
            self._compact_idempotency_between_flushes()
        except OSError as exc:
            # As when a background checkpoint fails: the next flush fails with it,
            # so the sync that meets it makes the runtime unavailable.
            log.error("store maintenance failed: %s", exc)
            self._flusher.fail(exc)

    def _compact_idempotency_between_flushes(self) -> None:
        with self._mutex:
            staged = {id(r) for r in self._idempotency_log.take()}
            kept = self._unexpired_idempotency(skip=staged)
        if len(kept) != self._idempotency_log.written:
            self._flusher.compact(self._idempotency_log, kept)

    def _write_run_indexes(self, parallel: Parallel) -> None:
        """At each checkpoint, write into each touched worker's run index the
        committed versions it lacks (flushes may go on: they only append past
        what a snapshot covers; a delete waits for the checkpoint)."""
        with self._mutex:
            put, self._runs_put = self._runs_put, set()
            snapshots = []
            for worker_id in sorted(put):
                files = self._workers.get(worker_id)
                if files is None:
                    continue  # deleted since
                try:
                    snapshots.append((worker_id, files.run_index, files.run_index.snapshot()))
                except StoreCorrupt as exc:  # its reads say so; the others go on
                    log.warning("the run index of worker %r is not written: %s", worker_id, exc)
        parallel.run([functools.partial(index.write, snap) for _, index, snap in snapshots if snap])
        with self._mutex:
            for worker_id, index, snapshot in snapshots:
                if index.settle(snapshot) and worker_id in self._workers:
                    self._runs_put.add(worker_id)

    def _unexpired_idempotency(self, skip: Set[int] = frozenset()) -> list[IdempotencyRecord]:
        """The idempotency records not yet expired, in log order (mutex held)."""
        cutoff = self.expiry.cutoff()
        return [
            r
            for r in self._idempotency.values()
            if id(r) not in skip and not self.expiry.expired(r, cutoff)
        ]

    def _compact_idempotency(self) -> None:
        """Rewrite ``idempotency.jsonl`` without expired records (no flush can run).

        The runtime record first says which length the log is being compacted
        to, then the log is replaced, then the record says that length alone: a
        crash in between leaves a log loading accepts at either length. (Between
        flushes, :meth:`Flusher.compact` does the same with commit lines.)"""
        log = self._idempotency_log
        kept = self._unexpired_idempotency()
        if len(kept) == log.count:
            return
        pending = {**self._envelope(RUNTIME)(), COMPACTING: {"idempotency": len(kept)}}
        self._flusher.checkpoint({RUNTIME: pending})
        log.rewrite(kept)
        self._idempotency = {r.key: r for r in kept}
        self._flusher.checkpoint({RUNTIME: self._envelope(RUNTIME)()})

    def _flush_failed(self, exc: OSError) -> RuntimeUnavailable:
        """What every write answers after a flush failed with ``exc``."""
        if isinstance(exc, SymlinkFound):
            return _linked(self.layout.root, exc)
        return could_not_write(exc)

    def _envelope(self, key: str) -> Callable[[], dict[str, Any]]:
        """The record ``key`` as it stands now (mutex held), to encode later."""
        if key == RUNTIME:
            ends = {
                "events": self._events.count,
                "events_base": self._events_base,
                "diagnostics": self._diagnostics.count,
                "idempotency": self._idempotency_log.count,
            }
            return functools.partial(runtime_envelope, self._runtime, ends)
        if key in self._deleted:
            return functools.partial(dict, DELETED)
        files = self._workers[key]
        return functools.partial(worker_envelope, files.seq, self._records.get(key), files.ends())

    def _take(self) -> Batch:
        logs = [(log, log.take()) for log in self._dirty_logs.values()]
        # A worker is written with its record: an id that only events name (one
        # deleted, then named again) keeps its index in memory until it has one.
        keys = sorted(
            key
            for key in self._dirty_keys
            if key == RUNTIME or key in self._records or key in self._deleted
        )
        batch = Batch(
            logs=logs,
            records={key: self._envelope(key) for key in keys},
            new_dirs=self._workers_to_create(),
            indexes=[
                (files.events, ids)
                for key in keys
                if key in self._records and (ids := (files := self._workers[key]).events.take())
            ],
            deletes=self._deletes,
        )
        self._dirty_logs, self._deletes = {}, []
        self._dirty_keys = {key for key in self._dirty_keys if key not in keys}
        return batch

    def _workers_to_create(self) -> list[WorkerFiles]:
        # A directory is made when the worker's first log line is written (or at
        # a checkpoint), so creating a worker costs no directory fsync at once.
        return [
            files
            for key in self._dirty_keys
            if key in self._records
            and not (files := self._workers[key]).dir_exists
            and (any(id(log) in self._dirty_logs for log in files.logs()) or files.events.take())
        ]

    def _done(self, batch: Batch) -> None:
        for log, written in batch.written:
            log.advance(written)
        for index, ids in batch.indexes:
            index.advance(len(ids))


def _what_failed(exc: OSError) -> str:
    """``exc`` in words; a full disk or quota can only be met writing."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return could_not_write(exc).message
    return f"{exc.strerror or type(exc).__name__} (errno {exc.errno})"


def _linked(root: str, found: SymlinkFound) -> StoreCorrupt:
    rel = os.path.relpath(str(found.filename), root)
    return StoreCorrupt(
        f"{rel} is a symbolic link or not a directory: the store never follows one",
        details={"file": rel},
    )
