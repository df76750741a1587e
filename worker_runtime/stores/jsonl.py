"""An append-only JSON-lines log with a sidecar offset index.

``name.jsonl`` holds one JSON value per line; ``name.idx`` holds the byte
offset of every line as a little-endian u64, so entry ``i`` is found with
one small read at ``8 * i``: a page costs O(limit), never O(log length).

The index is derived data: written after the log, never fsynced; opening a
log after a crash (``jsonl_recovery.py``) checks it and rebuilds what is missing.

The last ``keep`` entries stay in memory too, so the reads that matter most
(a long-poll on the newest events, the end of a transcript) touch no file.

Threading: the owning store calls every method with its mutex held, except
the writing ones (:meth:`JsonlLog.open_append`, :meth:`JsonlLog.write`,
:meth:`JsonlLog.reset`, :meth:`JsonlLog.close_files`), which only the
group-commit leader calls; it keeps its append descriptors open between flushes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import StoreCorrupt
from .fsio import FileOps
from .jsonl_recovery import OFFSET, LogProblem, LogRecovery

__all__ = ["JsonlLog", "LogProblem", "Written", "encode_line"]

T = TypeVar("T")
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


class JsonlLog(LogRecovery, Generic[T]):
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

    @property
    def size(self) -> int:
        """Bytes written to the file."""
        return self._size

    @property
    def count(self) -> int:
        """Entries in the log, staged ones included."""
        return self._count + len(self._staged)

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

    def read_all(self, on_corrupt: Callable[[LogProblem], None] | None = None) -> list[T]:
        """Every entry; a bad one raises ``StoreCorrupt`` unless ``on_corrupt`` takes it."""
        items: list[T] = []
        if self._count:
            data = self._read_bytes(0, self._size)
            for number, line in enumerate(data.split(b"\n")[: self._count], start=1):
                try:
                    items.append(self._decode_line(line, number))
                except StoreCorrupt:
                    if on_corrupt is None:
                        raise
                    on_corrupt(self._problem("corrupt", number, "is not a valid record"))
        items.extend(self._staged)
        return items

    def _read_file(self, start: int, end: int) -> list[T]:
        offsets = self._offsets(start, end - start + 1 if end < self._count else end - start)
        if end == self._count:
            offsets.append(self._size)
        data = self._read_bytes(offsets[0], offsets[-1] - offsets[0])
        base = offsets[0]
        return [
            self._decode_line(data[offsets[i] - base : offsets[i + 1] - base - 1], start + i + 1)
            for i in range(end - start)
        ]

    def _offsets(self, start: int, n: int) -> list[int]:
        idx = self._ops.open(self.index_path, os.O_RDONLY)
        try:
            chunk = self._ops.pread(idx, 8 * n, 8 * start)
        finally:
            self._ops.close(idx)
        if len(chunk) != 8 * n:
            raise StoreCorrupt(
                f"{self.rel}: its index is shorter than the log",
                details={"file": self.rel},
            )
        return [v for (v,) in OFFSET.iter_unpack(chunk)]

    def _read_bytes(self, offset: int, size: int) -> bytes:
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
        lines = [encode_line(self._encode(item)) for item in items]
        offsets: list[int] = []
        position = self._size
        for line in lines:
            offsets.append(position)
            position += len(line)
        return Written(
            entries=len(items),
            nbytes=position - self._size,
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
