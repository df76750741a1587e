"""An append-only JSON-lines log with a sidecar offset index.

``name.jsonl`` holds one JSON value per line; ``name.idx`` holds the byte
offset of every line as a little-endian u64, so entry ``i`` is found with
one small read at ``8 * i``: a page costs O(limit), never O(log length).

The index is derived data: written after the log, never fsynced; opening a
log after a crash (``recovery.py``) checks it and rebuilds what is missing.

The last ``keep`` entries stay in memory too, so the reads that matter most
(a long-poll on the newest events, the end of a transcript) touch no file.

Threading: the owning store calls every method with its mutex held, except
the writing ones (:meth:`JsonlLog.open_append`, :meth:`JsonlLog.write`,
:meth:`JsonlLog.reset`, :meth:`JsonlLog.close_files`), which only the
group-commit leader calls; it keeps its append descriptors open between flushes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ...errors import StoreCorrupt
from .fileops import FileOps
from .recovery import OFFSET, LogFiles, LogProblem, cut, recover, write_index

__all__ = ["JsonlLog", "LogProblem", "Written", "encode_line"]

T = TypeVar("T")
log = logging.getLogger("worker_runtime.stores")
_DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


def encode_line(value: Any) -> bytes:
    """One compact JSON line; ASCII-only, so no text can ever split it."""
    return json.dumps(value, separators=(",", ":")).encode("ascii") + b"\n"


@dataclass(frozen=True, kw_only=True, slots=True)
class Written:
    """Lines a leader appends: their bytes, and their offsets for the index."""

    entries: int
    nbytes: int
    data: bytes
    index: bytes


class JsonlLog(Generic[T]):
    """A log of ``T`` values; ``rel`` is its path under ``root`` (used in messages)."""

    def __init__(
        self,
        root: str,
        rel: str,
        *,
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
        ops: FileOps,
        keep: int = 0,
    ) -> None:
        self.rel = rel
        self.path = os.path.join(root, rel)
        self.index_path = self.path.removesuffix(".jsonl") + ".idx"
        self.files = LogFiles(rel=rel, path=self.path, index_path=self.index_path, ops=ops)
        self._encode = encode
        self._decode = decode
        self._ops = ops
        self._count = 0  # entries written to the file
        self._size = 0  # bytes written to the file
        self._exists = False
        self._staged: list[T] = []  # entries after the written ones, oldest first
        self._keep = keep
        self._tail: list[T] = []  # the last written entries (at most ``keep``)
        self._fd = -1  # the leader's append descriptors, opened on first write
        self._index_fd = -1
        # While a read of several runs of entries goes on (``read_runs``, the
        # store's mutex held): its descriptors of the log and of the index,
        # opened once for all of them instead of once per run.
        self._read_fds: tuple[int, int] | None = None

    @property
    def size(self) -> int:
        """Bytes written to the file."""
        return self._size

    @property
    def count(self) -> int:
        """Entries in the log, staged ones included."""
        return self._count + len(self._staged)

    @property
    def written(self) -> int:
        """Entries in the file (staged ones not included)."""
        return self._count

    # -- reading -------------------------------------------------------------------

    def read(self, start: int, limit: int) -> list[T]:
        """Entries ``start .. start+limit-1`` that exist; O(limit)."""
        end = min(start + limit, self.count)
        in_memory = self._count - len(self._tail)  # the first entry held in memory
        items: list[T] = []
        if start < min(end, in_memory):
            items.extend(self._read_file(start, min(end, in_memory)))
        for i in range(max(start, in_memory), end):
            items.append(
                self._tail[i - in_memory] if i < self._count else self._staged[i - self._count]
            )
        return items

    def read_runs(self, runs: list[tuple[int, int]]) -> list[T]:
        """The entries of each ``(start, limit)`` run, in order: as :meth:`read`,
        with the log and its index opened once for all the runs (a worker's
        events are runs scattered through the runtime's log)."""
        if self._read_fds is not None or not any(
            start < self._count - len(self._tail) for start, _ in runs
        ):
            return [item for start, limit in runs for item in self.read(start, limit)]
        data_fd = self._ops.open(self.path, os.O_RDONLY)
        try:
            index_fd = self._ops.open(self.index_path, os.O_RDONLY)
        except BaseException:
            self._ops.close(data_fd)
            raise
        self._read_fds = (data_fd, index_fd)
        try:
            return [item for start, limit in runs for item in self.read(start, limit)]
        finally:
            self._read_fds = None
            self._ops.close(index_fd)
            self._ops.close(data_fd)

    def read_all(self, on_corrupt: Callable[[LogProblem], None] | None = None) -> list[T]:
        """Every entry; a bad one raises ``StoreCorrupt`` unless ``on_corrupt`` takes it."""
        items: list[T] = []
        for item in self.read_marked():
            if isinstance(item, LogProblem):
                if on_corrupt is None:
                    raise StoreCorrupt(item.message, details={"file": self.rel, "line": item.line})
                on_corrupt(item)
            else:
                items.append(item)
        return items

    def read_marked(self) -> list[T | LogProblem]:
        """Every entry, a bad one as the :class:`LogProblem` saying where it is."""
        items: list[T | LogProblem] = []
        if self._count:
            data = self._read_bytes(0, self._size)
            for number, line in enumerate(data.split(b"\n")[: self._count], start=1):
                try:
                    items.append(self._decode_line(line, number))
                except StoreCorrupt:
                    items.append(self.files.problem("corrupt", number, "is not a valid record"))
        items.extend(self._staged)
        return items

    def _read_file(self, start: int, end: int) -> list[T]:
        """Entries ``start .. end - 1`` from the file: their offsets (one read of the
        index), then their lines (one read of the log), checked to be exactly the
        lines the offsets say, else read again through the rebuilt index."""
        offsets = self._indexed_offsets(start, end)
        lines = self._lines(start, end, offsets)
        if lines is None:
            offsets = self._rebuilt_offsets(start, end)
            base = offsets[0]
            data = self._read_bytes(base, offsets[-1] - base)
            lines = [data[a - base : b - base - 1] for a, b in itertools.pairwise(offsets)]
        return [self._decode_line(line, start + i + 1) for i, line in enumerate(lines)]

    def _checked_offsets(self, start: int, end: int) -> list[int]:
        """Offsets of entries ``start .. end`` (the last one: where ``end - 1`` ends),
        checked against the log: each must start a line."""
        offsets = self._indexed_offsets(start, end)
        if self._lines(start, end, offsets) is None:
            return self._rebuilt_offsets(start, end)
        return offsets

    def _indexed_offsets(self, start: int, end: int) -> list[int]:
        """What the index says of entries ``start .. end`` (unchecked)."""
        offsets = self._offsets(start, end - start + 1 if end < self._count else end - start)
        if end == self._count:
            offsets.append(self._size)
        return offsets

    def _rebuilt_offsets(self, start: int, end: int) -> list[int]:
        """The offsets of entries ``start .. end`` from the rebuilt index. The index
        is derived data, so one that disagrees with the log is rebuilt from it
        (under the store's mutex, for written entries only: a leader's append
        writes past them), never blamed on it."""
        log.warning("%s: its offset index disagrees with the log; rebuilding it", self.rel)
        return self._rebuild_index()[start : end + 1]

    def _lines(self, start: int, end: int, offsets: list[int]) -> list[bytes] | None:
        """The lines (without their newline) of entries ``start .. end - 1`` if
        ``offsets`` has one for each and for where the last ends, and each starts
        a line, else None. One read."""
        if len(offsets) != end - start + 1:
            return None  # the index is short
        first, last = offsets[0], offsets[-1]
        if (first == 0) != (start == 0) or last > self._size or last <= first:
            return None
        before = 1 if first else 0  # the newline ending the line before
        data = self._read_bytes(first - before, last - first + before)
        if before and data[:1] != b"\n":
            return None
        lines = data[before:].split(b"\n")
        if len(lines) != len(offsets) or lines[-1]:
            return None
        for i in range(len(offsets) - 1):
            if len(lines[i]) != offsets[i + 1] - offsets[i] - 1:
                return None
        lines.pop()
        return lines

    def _rebuild_index(self) -> list[int]:
        """Every written entry's offset (and the end), from the log; written to the index."""
        data = self._read_bytes(0, self._size)
        offsets = [0]
        for line in data.split(b"\n")[:-1]:
            offsets.append(offsets[-1] + len(line) + 1)
        if len(offsets) != self._count + 1 or offsets[-1] != self._size:
            raise StoreCorrupt(
                f"{self.rel} has {len(offsets) - 1} lines where {self._count} were written",
                details={"file": self.rel},
            )
        idx = self._ops.open(self.index_path, os.O_WRONLY | os.O_CREAT)
        try:
            self._ops.pwrite(idx, b"".join(OFFSET.pack(o) for o in offsets[:-1]), 0)
        finally:
            self._ops.close(idx)
        return offsets

    def _offsets(self, start: int, n: int) -> list[int]:
        if self._read_fds is not None:
            chunk = self._ops.pread(self._read_fds[1], 8 * n, 8 * start)
        else:
            idx = self._ops.open(self.index_path, os.O_RDONLY)
            try:
                chunk = self._ops.pread(idx, 8 * n, 8 * start)
            finally:
                self._ops.close(idx)
        return [v for (v,) in OFFSET.iter_unpack(chunk[: len(chunk) // 8 * 8])]

    def _read_bytes(self, offset: int, size: int) -> bytes:
        if self._read_fds is not None:
            return self._ops.pread(self._read_fds[0], size, offset)
        fd = self._ops.open(self.path, os.O_RDONLY)
        try:
            return self._ops.pread(fd, size, offset)
        finally:
            self._ops.close(fd)

    def _decode_line(self, line: bytes, number: int) -> T:
        try:
            return self._decode(json.loads(line))
        except _DECODE_ERRORS:
            raise StoreCorrupt(
                f"{self.rel} line {number}: not a valid record",
                details={"file": self.rel, "line": number},
            ) from None

    # -- writing ---------------------------------------------------------------------

    def append(self, item: T) -> None:
        """Stage ``item``; it is readable now and written by the next flush."""
        self._staged.append(item)

    def take(self) -> list[T]:
        """The staged entries for a leader to write (they stay readable meanwhile)."""
        return list(self._staged)

    def open_append(self) -> bool:
        """Open (once) the descriptors a leader appends with; True if this created the file."""
        if self._fd >= 0:
            return False
        created = not self._exists and not os.path.exists(self.path)
        fd = self._ops.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self._index_fd = self._ops.open(self.index_path, os.O_WRONLY | os.O_CREAT)
        except BaseException:
            self._ops.close(fd)
            raise
        self._fd = fd
        return created

    def prepare(self, items: list[T]) -> Written:
        """Encode ``items`` for :meth:`write` (the leader, holding no lock)."""
        return self._encoded(items, self._size)

    def _encoded(self, items: list[T], position: int) -> Written:
        lines = [encode_line(self._encode(item)) for item in items]
        offsets: list[int] = []
        start = position
        for line in lines:
            offsets.append(position)
            position += len(line)
        return Written(
            entries=len(items),
            nbytes=position - start,
            data=b"".join(lines),
            index=b"".join(OFFSET.pack(o) for o in offsets),
        )

    def write(self, prepared: Written) -> None:
        """Append ``prepared`` to the file and the index, and fsync the file (not
        the index: it is rebuilt from the log if it falls behind)."""
        self._ops.write(self._fd, prepared.data)
        self._ops.pwrite(self._index_fd, prepared.index, 8 * self._count)
        self._ops.fsync(self._fd)

    def advance(self, written: Written) -> None:
        """Mark ``written`` as in the file (after the leader's flush succeeded)."""
        if self._keep:
            self._tail.extend(self._staged[: written.entries])
            del self._tail[: -self._keep]
        del self._staged[: written.entries]
        self._count += written.entries
        self._size += written.nbytes
        self._exists = True

    def reset(self) -> None:
        """Empty the log and fsync it (the leader's, for the commit journal)."""
        self.open_append()
        self._ops.truncate(self._fd, 0)
        self._ops.truncate(self._index_fd, 0)
        self._ops.fsync(self._fd)
        self._count = self._size = 0
        self._tail.clear()

    def close_files(self) -> None:
        """Close the leader's descriptors (they are reopened on the next write)."""
        fds = [fd for fd in (self._fd, self._index_fd) if fd >= 0]
        self._fd = self._index_fd = -1
        for fd in fds:
            self._ops.close(fd)

    @property
    def has_open_files(self) -> bool:
        return self._fd >= 0

    # -- opening and compacting (the store's, before or after any flush) ------------

    def recover(self) -> list[LogProblem]:
        """Open the log as a crash left it: cut an incomplete tail, update the index."""
        found = recover(self.files)
        self._count, self._size, self._exists = found.count, found.size, found.exists
        return found.problems

    def cut_to(self, count: int, why: str) -> LogProblem:
        """Cut every entry from ``count`` on (at open, before any write), kept aside."""
        offset = self._checked_offsets(count, count + 1)[0] if count < self._count else self._size
        fd = self._ops.open(self.path, os.O_RDWR)
        try:
            problem = cut(self.files, fd, offset, self._size, count + 1, why)
        finally:
            self._ops.close(fd)
        write_index(self.files, [], count, count)
        self._count, self._size = count, offset
        return problem

    def rewrite(self, items: list[T]) -> None:
        """Replace the written entries by ``items`` atomically (no flush may run;
        staged entries stay staged, to be appended after them): temp files,
        fsync, rename, fsync the directory.

        The old index is removed (durably) before the log is replaced, and the
        new one put in place after it (durably): a crash in between leaves a log
        without an index, which opening rebuilds, never a log beside another
        log's index (whose last offset might start a line by chance)."""
        self.close_files()
        written = self._encoded(items, 0)
        directory = os.path.dirname(self.path)
        self._ops.write_synced(self.index_path + ".tmp", written.index)
        self._ops.write_synced(self.path + ".tmp", written.data)
        if os.path.lexists(self.index_path):
            self._ops.unlink(self.index_path)
            self._ops.fsync_dir(directory)
        self._ops.replace(self.path + ".tmp", self.path)
        self._ops.fsync_dir(directory)
        self._ops.replace(self.index_path + ".tmp", self.index_path)
        self._ops.fsync_dir(directory)
        self._count, self._size, self._exists = written.entries, written.nbytes, True
        self._tail = items[-self._keep :] if self._keep else []
