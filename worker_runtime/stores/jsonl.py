"""An append-only JSON-lines log with a sidecar offset index.

``name.jsonl`` holds one JSON value per line; ``name.idx`` holds the byte
offset of every line as a little-endian u64, so entry ``i`` is found with
one small read at ``8 * i``: a page costs O(limit), never O(log length).

The index is derived data: written after the log, never fsynced. Opening
(:meth:`JsonlLog.recover`) checks only its last entry against the log and
re-reads just the lines past it, so start-up does not grow with the log. A
missing or inconsistent index is rebuilt from the log.

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
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..errors import StoreCorrupt
from .fsio import FileOps

__all__ = ["JsonlLog", "LogProblem", "Recovered", "Written", "encode_line"]

T = TypeVar("T")
_OFFSET = struct.Struct("<Q")
_CHUNK = 512  # index entries read at a time while looking for the valid tail
_BAD = object()
_DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


def encode_line(value: Any) -> bytes:
    """One compact JSON line; ASCII-only, so no text can ever split it."""
    return json.dumps(value, separators=(",", ":")).encode("ascii") + b"\n"


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return _BAD


@dataclass(frozen=True, kw_only=True, slots=True)
class LogProblem:
    """Something found while opening a log. ``kind`` is ``torn`` (an incomplete
    last record was cut and kept aside), ``corrupt`` (a bad record before the
    end) or ``index`` (the offset index had to be rebuilt)."""

    kind: str
    file: str
    line: int | None
    message: str


@dataclass(kw_only=True, slots=True)
class Recovered:
    """What :meth:`JsonlLog.recover` found: ``last`` is the last entry's JSON."""

    exists: bool
    last: Any = None
    problems: list[LogProblem] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Written:
    """What a leader appended (and fsynced)."""

    entries: int
    nbytes: int


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

    # -- opening -----------------------------------------------------------------

    def recover(self) -> Recovered:
        """Open the log as a crash left it: cut an incomplete tail, update the index."""
        try:
            fd = self._ops.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return Recovered(exists=False)
        try:
            problems: list[LogProblem] = []
            while True:
                last, again = self._recover(fd, problems)
                if not again:
                    return Recovered(exists=True, last=last, problems=problems)
        finally:
            self._ops.close(fd)

    def _recover(self, fd: int, problems: list[LogProblem]) -> tuple[Any, bool]:
        size = os.fstat(fd).st_size
        known, base, index_bytes = self._indexed(fd, size, problems)
        first = max(known - 1, 0)  # the last indexed entry is read again to check it
        *lines, fragment = self._ops.pread(fd, size - base, base).split(b"\n")
        values = [_parse(line) for line in lines]
        keep = len(values)
        while keep and values[keep - 1] is _BAD:
            keep -= 1  # trailing bad lines are the torn end of the last write
        offsets = [base]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        for i in range(keep):
            if values[i] is _BAD:
                problems.append(self._problem("corrupt", first + i + 1, "is not valid JSON"))
        count = first + keep
        if keep < len(values) or fragment:
            problems.append(
                self._cut(fd, offsets[keep], size, count + 1, "ended in an incomplete record")
            )
        if count != known or index_bytes != 8 * count:
            self._write_index(offsets[: keep + 1], first, count)
        self._count, self._size, self._exists = count, offsets[keep], True
        # Everything from the re-checked entry on was torn: check the one before it.
        again = keep == 0 and first > 0
        return (values[keep - 1] if keep else None), again

    def _indexed(self, fd: int, size: int, problems: list[LogProblem]) -> tuple[int, int, int]:
        """(entries the index gets right, offset of the last of them, index size)."""
        try:
            idx = self._ops.open(self.index_path, os.O_RDONLY)
        except FileNotFoundError:
            if size:
                problems.append(self._problem("index", None, "had no index; rebuilt it"))
            return 0, 0, 0
        try:
            index_bytes = os.fstat(idx).st_size
            n = index_bytes // 8
            while n > 0:  # entries past the end of the log are stale (the log was cut)
                lo = max(0, n - _CHUNK)
                chunk = self._ops.pread(idx, 8 * (n - lo), 8 * lo)
                offsets = [v for (v,) in _OFFSET.iter_unpack(chunk)]
                while offsets and offsets[-1] >= size:
                    offsets.pop()
                if offsets:
                    n = lo + len(offsets)
                    break
                n = lo
        finally:
            self._ops.close(idx)
        if n == 0:
            return 0, 0, index_bytes
        offset = offsets[-1]
        at_line_start = (offset == 0) == (n == 1) and (
            offset == 0 or self._ops.pread(fd, 1, offset - 1) == b"\n"
        )
        if not at_line_start:
            problems.append(self._problem("index", None, "had an inconsistent index; rebuilt it"))
            return 0, 0, index_bytes
        return n, offset, index_bytes

    def _cut(self, fd: int, at: int, size: int, line: int, why: str) -> LogProblem:
        aside = self._ops.keep_aside(self.path, self._ops.pread(fd, size - at, at))
        self._ops.truncate(fd, at)
        self._ops.fsync(fd)
        return self._problem(
            "torn", line, f"{why}: cut {size - at} bytes (kept in {os.path.basename(aside)})"
        )

    def _write_index(self, offsets: list[int], first: int, count: int) -> None:
        idx = self._ops.open(self.index_path, os.O_RDWR | os.O_CREAT)
        try:
            packed = b"".join(_OFFSET.pack(o) for o in offsets[: count - first])
            self._ops.pwrite(idx, packed, 8 * first)
            self._ops.truncate(idx, 8 * count)
        finally:
            self._ops.close(idx)

    def cut_to(self, count: int, why: str) -> LogProblem:
        """Cut every entry from ``count`` on (at open, before any write), kept aside."""
        fd = self._ops.open(self.path, os.O_RDWR)
        try:
            offset = self._offsets(count, 1)[0]
            problem = self._cut(fd, offset, self._size, count + 1, why)
        finally:
            self._ops.close(fd)
        self._write_index([], count, count)
        self._count, self._size = count, offset
        return problem

    def _problem(self, kind: str, line: int | None, what: str) -> LogProblem:
        where = f"{self.rel} line {line}" if line is not None else self.rel
        return LogProblem(kind=kind, file=self.rel, line=line, message=f"{where} {what}")

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
        return [v for (v,) in _OFFSET.iter_unpack(chunk)]

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

    def write(self, items: list[T]) -> Written:
        """Append ``items`` to the file and the index, and fsync the file (not the
        index: it is rebuilt from the log if it falls behind)."""
        lines = [encode_line(self._encode(item)) for item in items]
        offsets: list[int] = []
        position = self._size
        for line in lines:
            offsets.append(position)
            position += len(line)
        self._ops.write(self._fd, b"".join(lines))
        self._ops.pwrite(
            self._index_fd, b"".join(_OFFSET.pack(o) for o in offsets), 8 * self._count
        )
        self._ops.fsync(self._fd)
        return Written(entries=len(items), nbytes=position - self._size)

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
