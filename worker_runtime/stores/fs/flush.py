"""The group-commit leader's side of the fs store: writing a flush, and checkpoints.

Only one thread at a time flushes (the leader), so the flush state here needs
no lock: the journal, the append descriptors kept open between flushes, and
the committed records newer than their files. A checkpoint writes those
records to their files; when the journal grows past :data:`JOURNAL_LIMIT` it
is renamed ``journal.old.jsonl``, a new one is started, and a background
thread writes the records while flushes go on, then deletes the old journal.
Loading replays ``journal.old.jsonl`` before ``journal.jsonl``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fileops import FileOps, Parallel
from .jsonl import JsonlLog, Written
from .layout import (
    COMPACTING,
    JOURNAL,
    OLD_JOURNAL,
    RUNTIME,
    Layout,
    WorkerFiles,
    dump,
    open_journal,
)
from .tombstones import is_deleted, remove_tree, tombstone_name
from .worker_events import WorkerEvents

__all__ = ["JOURNAL_LIMIT", "OPEN_LOGS", "Batch", "Flusher"]

JOURNAL_LIMIT = 4 << 20
"""Journal bytes that start a checkpoint (bounds restart work and disk use)."""
OPEN_LOGS = 128
"""Logs whose append descriptors the leader keeps open between flushes."""

log = logging.getLogger("worker_runtime.stores")


@dataclass(kw_only=True)
class Batch:
    """What one flush writes; ``written`` holds the encoded lines of each log."""

    logs: list[tuple[JsonlLog[Any], list[Any]]]
    records: dict[str, Callable[[], dict[str, Any]]]
    new_dirs: list[WorkerFiles]
    indexes: list[tuple[WorkerEvents, list[int]]] = field(default_factory=list)
    """Event ids to append to workers' event indexes."""
    deletes: list[WorkerFiles] = field(default_factory=list)
    """Deleted workers (their records are the journal's deleted marker)."""
    written: list[tuple[JsonlLog[Any], Written]] = field(default_factory=list)


class Flusher:
    """Writes batches and checkpoints for one store."""

    def __init__(
        self,
        layout: Layout,
        ops: FileOps,
        journal: JsonlLog[dict[str, Any]],
        runtime: dict[str, Any],
    ) -> None:
        self.layout = layout
        self.runtime = runtime
        """The runtime record's envelope as last committed."""
        self.checkpoint_started = False
        """Set when a checkpoint starts (for the store's work between flushes)."""
        self.also: Callable[[Parallel], None] | None = None
        """More work for every checkpoint, after its records (the store's run
        indexes): in the background one's thread, which a delete waits for."""
        self._ops = ops
        self._journal = journal
        self._parallel = Parallel()
        self._open_logs: OrderedDict[int, JsonlLog[Any]] = OrderedDict()
        self._committed: dict[str, dict[str, Any]] = {}  # newer than their files
        self._background: threading.Thread | None = None
        self._failure: OSError | None = None  # a checkpoint's: every later flush fails

    def flush(self, batch: Batch) -> None:
        """Write ``batch`` and its commit line, and fsync them all at once."""
        if self._failure is not None:
            raise self._failure  # a checkpoint failed: so does the store
        ops = self._ops
        new_entries = set()
        graves = self._bury(batch.deletes)
        if graves:
            new_entries.add(self.layout.workers)
        for files in batch.new_dirs:
            ops.mkdir(self.layout.path(self.layout.worker_rel(files.worker_id)))
            # Even if a checkpoint made it first: its entry must be durable now.
            new_entries.add(self.layout.workers)
            files.dir_exists = True
        for opened in [self._journal, *(log for log, _ in batch.logs)]:
            if opened.open_append():
                new_entries.add(os.path.dirname(opened.path))
            self._open_logs[id(opened)] = opened
            self._open_logs.move_to_end(id(opened))
        batch.written = [(log, log.prepare(items)) for log, items in batch.logs]
        # The commit line is fsynced together with the logs: loading counts it only
        # if every log it names is as long as it says (else the crash came first).
        line: dict[str, Any] = {
            "records": {key: envelope() for key, envelope in batch.records.items()}
        }
        if graves:
            line["tombstones"] = sorted(graves)
        self._journal.append(line)
        commit = self._journal.prepare(self._journal.take())
        tasks: list[Callable[[], None]] = [
            functools.partial(log.write, prepared)
            for log, prepared in [*batch.written, (self._journal, commit)]
        ]
        tasks += [functools.partial(index.write, ids) for index, ids in batch.indexes]
        tasks += [functools.partial(ops.fsync_dir, d) for d in sorted(new_entries)]
        self._parallel.run(tasks)
        self._journal.advance(commit)
        self._committed.update(line["records"])
        self.runtime = line["records"].get(RUNTIME, self.runtime)
        for name in sorted(graves):  # the deletes are committed: their files go now
            remove_tree(ops, os.path.join(self.layout.workers, name))
        self._close_idle_logs()
        if self._journal.size > JOURNAL_LIMIT and not self._checkpointing():
            if self._failure is not None:
                raise self._failure  # its lines are in the old journal still
            self._rotate()

    def _bury(self, deletes: list[WorkerFiles]) -> list[str]:
        """Move each deleted worker's directory to a tombstone (before the commit
        line: a worker created again in the same flush gets a fresh directory;
        loading undoes it if the line never commits). Returns the tombstones."""
        if not deletes:
            return []
        self.wait()  # a background checkpoint may be writing into those directories
        graves = []
        for files in deletes:
            for opened in files.logs():
                self._open_logs.pop(id(opened), None)
                opened.close_files()
            path = self.layout.path(self.layout.worker_rel(files.worker_id))
            if os.path.lexists(path):
                name = tombstone_name(files.worker_id)
                self._ops.replace(path, os.path.join(self.layout.workers, name))
                graves.append(name)
        return graves

    def _close_idle_logs(self) -> None:
        while len(self._open_logs) > OPEN_LOGS:
            _, idle = self._open_logs.popitem(last=False)
            if idle is not self._journal:
                idle.close_files()

    def _checkpointing(self) -> bool:
        return self._background is not None and self._background.is_alive()

    def _rotate(self) -> None:
        """Move the commit lines so far aside and write their records in the background."""
        ops, layout = self._ops, self.layout
        if os.path.exists(layout.path(OLD_JOURNAL)):  # never overwrite unwritten records
            raise FileExistsError(f"{OLD_JOURNAL} is still there: a checkpoint did not finish")
        self._open_logs.pop(id(self._journal), None)
        self._journal.close_files()
        for old, new in ((JOURNAL, OLD_JOURNAL), ("journal.idx", "journal.old.idx")):
            if os.path.exists(layout.path(old)):
                ops.replace(layout.path(old), layout.path(new))
        ops.fsync_dir(layout.root)
        self._journal = open_journal(layout, ops)
        self.checkpoint_started = True
        pending, self._committed = self._committed, {}
        self._background = threading.Thread(
            target=self._checkpoint_in_background, args=(pending,), name="wr-checkpoint"
        )
        self._background.start()

    def _checkpoint_in_background(self, pending: dict[str, dict[str, Any]]) -> None:
        parallel = Parallel()
        try:
            self._write_records(pending, parallel)
            self._drop_old_journal()
            if self.also is not None:
                self.also(parallel)
        except OSError as exc:
            log.error("store checkpoint failed: %s", exc)
            self._failure = exc
        finally:
            parallel.close()

    def checkpoint(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        """Write every committed record newer than its file (and ``records``), then
        empty the journal (at open and close, when no flush can run)."""
        self.wait()
        self._committed.update(records or {})
        self.runtime = self._committed.get(RUNTIME, self.runtime)
        if self._committed:
            self._write_records(self._committed, self._parallel)
            self._committed.clear()
            self._journal.reset()
        self._drop_old_journal()
        if self.also is not None:
            self.also(self._parallel)

    def compact(self, shared: JsonlLog[Any], kept: list[Any]) -> None:
        """Rewrite a runtime-wide log (idempotency) as ``kept``, its written
        entries still wanted, between two flushes (the leader's; entries staged
        meanwhile stay staged). Two commit lines bracket the replace: the first
        announces the new length (``compacting``), so that loading takes the log
        at either length if a crash comes in between; the second commits it."""
        name, envelope = shared.rel.removesuffix(".jsonl"), self.runtime
        ends = envelope["ends"]
        if ends.get(name) != shared.written:  # never: each append commits the runtime record
            log.warning("%s: not compacted, its committed length is not known", shared.rel)
            return
        self._commit_records({RUNTIME: {**envelope, COMPACTING: {name: len(kept)}}})
        shared.rewrite(kept)
        self._commit_records({RUNTIME: {**envelope, "ends": {**ends, name: len(kept)}}})

    def _commit_records(self, records: dict[str, dict[str, Any]]) -> None:
        """One commit line of ``records`` alone, durable on return (between flushes)."""
        if self._journal.open_append():
            self._ops.fsync_dir(self.layout.root)
        self._open_logs[id(self._journal)] = self._journal
        self._journal.append({"records": records})
        commit = self._journal.prepare(self._journal.take())
        self._journal.write(commit)
        self._journal.advance(commit)
        self._committed.update(records)
        self.runtime = records.get(RUNTIME, self.runtime)

    def fail(self, exc: OSError) -> None:
        """Fail every flush from now on with ``exc``: a checkpoint the store made
        outside a flush (at open) could not write. Until the first flush, reads
        and staging go on, so a runtime opened on a full disk still comes up."""
        self._failure = exc

    def wait(self) -> None:
        """Let a background checkpoint finish; raise its failure, if any."""
        if self._background is not None:
            self._background.join()
            self._background = None
        if self._failure is not None:
            raise self._failure

    def _write_records(self, records: dict[str, dict[str, Any]], parallel: Parallel) -> None:
        """Replace each record file atomically: temp files, fsync, rename, fsync dirs."""
        ops, layout = self._ops, self.layout
        records = {key: e for key, e in records.items() if not is_deleted(e)}
        paths = {}
        for key in records:
            if key == RUNTIME:
                paths[key] = layout.path("runtime.json")
                continue
            if ops.mkdir(layout.path(layout.worker_rel(key))):
                ops.fsync_dir(layout.workers)
            paths[key] = layout.path(layout.worker_rel(key, "worker.json"))
        parallel.run(
            [
                functools.partial(ops.write_synced, paths[key] + ".tmp", dump(envelope))
                for key, envelope in records.items()
            ]
        )
        for path in paths.values():
            ops.replace(path + ".tmp", path)
        parents = sorted({os.path.dirname(path) for path in paths.values()})
        parallel.run([functools.partial(ops.fsync_dir, d) for d in parents])

    def _drop_old_journal(self) -> None:
        removed = False
        for name in (OLD_JOURNAL, "journal.old.idx"):
            path = self.layout.path(name)
            if os.path.exists(path):
                self._ops.unlink(path)
                removed = True
        if removed:
            self._ops.fsync_dir(self.layout.root)

    def close(self) -> None:
        """Close every descriptor (after the last flush)."""
        if self._background is not None:
            self._background.join()
        for opened in [*self._open_logs.values(), self._journal]:
            opened.close_files()
        self._parallel.close()
