"""One worker's event index: the ids of its events in the runtime-wide ``events.jsonl``.

``workers/<worker_id>/events.idx`` holds the id of each event naming the
worker, increasing, as little-endian u64s. A filtered read finds the first id
at or past its cursor by binary search (O(log n) reads of 8 bytes, none when
the cursor is among the newest ids, which stay in memory) and then reads
``limit`` ids and those events: its cost does not grow with other workers'
events.

Like the other ``.idx`` files it is derived data: the flush leader appends to
it (no fsync) before the commit line that counts its entries
(``ends["events"]`` in ``worker.json``), and loading checks it against that
count and the event log and rebuilds it from ``events.jsonl`` when they
disagree. ``ends["events_from"]`` is the first event id that can belong to
this worker: a worker deleted and created again under the same id never
inherits the older events (they stay in the runtime-wide log).
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
from collections.abc import Callable

from .fileops import FileOps

__all__ = ["ENTRY", "WorkerEvents"]

ENTRY = struct.Struct("<Q")
TAIL = 256  # newest ids kept in memory: a follower keeping up reads no index file


class WorkerEvents:
    """The event ids of one worker: written (in the file), and staged."""

    def __init__(self, root: str, rel: str, ops: FileOps, events_from: int) -> None:
        self.rel = rel
        self.path = os.path.join(root, rel)
        self.events_from = events_from
        self._ops = ops
        self._written = 0
        self._tail: list[int] = []  # the last written ids (at most TAIL)
        self._staged: list[int] = []
        self.reads = 0  # index-file reads, for tests (cost must not grow with others' events)

    @property
    def count(self) -> int:
        """Ids in the index, staged ones included."""
        return self._written + len(self._staged)

    @property
    def last(self) -> int:
        """The newest id, or 0."""
        if self._staged:
            return self._staged[-1]
        return self._tail[-1] if self._tail else 0

    # -- reading (the store's mutex held) ----------------------------------------------

    def ids_from(self, cursor: int, limit: int) -> list[int]:
        """Up to ``limit`` ids ``>= cursor``, increasing."""
        memory = self._tail + self._staged
        in_file = self._written - len(self._tail)  # ids only in the file: positions < this
        if limit <= 0:
            return []
        if in_file == 0 or (memory and cursor >= memory[0]):
            begin = bisect.bisect_left(memory, cursor)
            return memory[begin : begin + limit]
        lo, hi = 0, in_file
        while lo < hi:  # the first position in the file whose id is >= cursor
            mid = (lo + hi) // 2
            if self._read(mid, 1)[0] < cursor:
                lo = mid + 1
            else:
                hi = mid
        ids = self._read(lo, min(limit, in_file - lo)) if lo < in_file else []
        return ids + memory[: limit - len(ids)]

    def _read(self, position: int, n: int) -> list[int]:
        self.reads += 1
        fd = self._ops.open(self.path, os.O_RDONLY)
        try:
            data = self._ops.pread(fd, 8 * n, 8 * position)
        finally:
            self._ops.close(fd)
        if len(data) != 8 * n:
            raise OSError(f"{self.rel} is shorter than its {self._written} entries")
        return [v for (v,) in ENTRY.iter_unpack(data)]

    # -- staging and flushing ---------------------------------------------------------

    def append(self, event_id: int) -> None:
        self._staged.append(event_id)

    def take(self) -> list[int]:
        return list(self._staged)

    def write(self, ids: list[int]) -> None:
        """Append ``ids`` to the file (the leader, holding no lock; never fsynced)."""
        fd = self._ops.open(self.path, os.O_WRONLY | os.O_CREAT)
        try:
            self._ops.pwrite(fd, b"".join(ENTRY.pack(i) for i in ids), 8 * self._written)
        finally:
            self._ops.close(fd)

    def advance(self, n: int) -> None:
        """``n`` staged ids are in the file now (after a successful flush)."""
        self._tail.extend(self._staged[:n])
        del self._tail[:-TAIL]
        del self._staged[:n]
        self._written += n

    # -- opening (before any write) -----------------------------------------------------

    def recover(self, committed: int | None, belongs: Callable[[int], bool]) -> bool:
        """Open the index as a crash left it, cut back to ``committed`` entries.
        False if it must be rebuilt: missing entries, an unknown count (a record
        written by version 1), or a last id that is not an event of this worker
        (``belongs``)."""
        try:
            fd = self._ops.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return committed == 0
        try:
            entries = os.fstat(fd).st_size // 8
            if committed is None or entries < committed:
                return False
            if entries * 8 != os.fstat(fd).st_size or entries > committed:
                self._ops.truncate(fd, 8 * committed)  # lines of a flush that never committed
            keep = min(committed, TAIL)
            data = self._ops.pread(fd, 8 * keep, 8 * (committed - keep))
        finally:
            self._ops.close(fd)
        tail = [v for (v,) in ENTRY.iter_unpack(data)]
        ordered = all(a < b for a, b in itertools.pairwise(tail))
        if not ordered or (tail and (tail[0] < self.events_from or not belongs(tail[-1]))):
            return False
        self._written, self._tail = committed, tail
        return True

    def make_dir(self) -> None:
        """Create the worker's directory (for a rebuilt index, at load)."""
        directory = os.path.dirname(self.path)
        if self._ops.mkdir(directory):
            self._ops.fsync_dir(os.path.dirname(directory))

    def rebuild(self, ids: list[int]) -> None:
        """Replace the file by ``ids`` (found by reading the event log)."""
        fd = self._ops.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            self._ops.pwrite(fd, b"".join(ENTRY.pack(i) for i in ids), 0)
        finally:
            self._ops.close(fd)
        self._written, self._tail = len(ids), ids[-TAIL:]
