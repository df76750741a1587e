"""The group-commit leader's side of the fs store: writing a flush, and checkpoints.

Only one thread at a time runs these (the leader, or the store's owner at
open and close), so the state here needs no lock: the journal, the append
descriptors kept open between flushes, and the committed records that are
newer than their files.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fs_files import RUNTIME, Layout, WorkerFiles, dump
from .fsio import FileOps, Parallel
from .jsonl import JsonlLog, Written

__all__ = ["JOURNAL_LIMIT", "OPEN_LOGS", "Batch", "Flusher"]

JOURNAL_LIMIT = 4 << 20
"""Journal bytes that trigger a checkpoint (bounds restart work and disk use)."""
OPEN_LOGS = 128
"""Logs whose append descriptors the leader keeps open between flushes."""


@dataclass(kw_only=True)
class Batch:
    """What one flush writes; ``written`` holds the encoded lines of each log."""

    logs: list[tuple[JsonlLog[Any], list[Any]]]
    records: dict[str, Callable[[], dict[str, Any]]]
    new_dirs: list[WorkerFiles]
    written: list[tuple[JsonlLog[Any], Written]] = field(default_factory=list)


class Flusher:
    """Writes batches and checkpoints for one store."""

    def __init__(
        self,
        layout: Layout,
        ops: FileOps,
        journal: JsonlLog[dict[str, Any]],
        workers: dict[str, WorkerFiles],
    ) -> None:
        self.layout = layout
        self._ops = ops
        self._journal = journal
        self._workers = workers  # the store's; only ``dir_exists`` is changed here
        self._parallel = Parallel()
        self._open_logs: OrderedDict[int, JsonlLog[Any]] = OrderedDict()
        self._committed: dict[str, dict[str, Any]] = {}  # newer than their files

    def flush(self, batch: Batch) -> None:
        """Write ``batch`` and its commit line, and fsync them all at once."""
        ops = self._ops
        new_entries = set()
        for files in batch.new_dirs:
            if ops.mkdir(self.layout.path(self.layout.worker_rel(files.worker_id))):
                new_entries.add(self.layout.workers)
            files.dir_exists = True
        for log in [self._journal, *(log for log, _ in batch.logs)]:
            if log.open_append():
                new_entries.add(os.path.dirname(log.path))
            self._open_logs[id(log)] = log
            self._open_logs.move_to_end(id(log))
        batch.written = [(log, log.prepare(items)) for log, items in batch.logs]
        # The commit line is fsynced together with the logs: loading counts it only
        # if every log it names is as long as it says (else the crash came first).
        line = {"records": {key: envelope() for key, envelope in batch.records.items()}}
        self._journal.append(line)
        commit = self._journal.prepare(self._journal.take())
        tasks: list[Callable[[], None]] = [
            functools.partial(log.write, prepared)
            for log, prepared in [*batch.written, (self._journal, commit)]
        ]
        tasks += [functools.partial(ops.fsync_dir, d) for d in sorted(new_entries)]
        self._parallel.run(tasks)
        self._journal.advance(commit)
        self._committed.update(line["records"])
        self._close_idle_logs()
        if self._journal.size > JOURNAL_LIMIT:
            self.checkpoint()

    def _close_idle_logs(self) -> None:
        while len(self._open_logs) > OPEN_LOGS:
            _, log = self._open_logs.popitem(last=False)
            if log is not self._journal:
                log.close_files()

    def checkpoint(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        """Write every committed record newer than its file (and ``records``), then
        empty the journal."""
        self._committed.update(records or {})
        if not self._committed:
            return
        ops, layout = self._ops, self.layout
        paths = {}
        for key in self._committed:
            if key == RUNTIME:
                paths[key] = layout.path("runtime.json")
                continue
            files = self._workers[key]
            if not files.dir_exists:
                if ops.mkdir(layout.path(layout.worker_rel(key))):
                    ops.fsync_dir(layout.workers)
                files.dir_exists = True
            paths[key] = layout.path(layout.worker_rel(key, "worker.json"))
        self._parallel.run(
            [
                functools.partial(ops.write_synced, paths[key] + ".tmp", dump(envelope))
                for key, envelope in self._committed.items()
            ]
        )
        for path in paths.values():
            ops.replace(path + ".tmp", path)
        parents = sorted({os.path.dirname(path) for path in paths.values()})
        self._parallel.run([functools.partial(ops.fsync_dir, d) for d in parents])
        self._journal.reset()
        self._committed.clear()

    def close(self) -> None:
        """Close every descriptor (after the last flush)."""
        for log in [*self._open_logs.values(), self._journal]:
            log.close_files()
        self._parallel.close()
