"""Opening a log as a crash left it: cut a torn tail, check and rebuild the index.

Only the last indexed entry is checked against the log and only the lines
past it are read, so opening does not grow with the log's length. A missing
or inconsistent index is rebuilt from the log (reading all of it, once).
Trailing lines that are not valid JSON are the torn end of the last write:
they are cut and kept aside (``<file>.torn-<ns>``); a bad line before the end
is reported as corrupt.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from .fileops import FileOps

__all__ = ["OFFSET", "LogFiles", "LogProblem", "Recovered", "cut", "recover", "write_index"]

OFFSET = struct.Struct("<Q")  # one index entry: a line's byte offset
_CHUNK = 512  # index entries read at a time while looking for the valid tail
_BAD = object()


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return _BAD


@dataclass(frozen=True, kw_only=True, slots=True)
class LogProblem:
    """Something found while opening a log. ``kind`` is ``torn`` (an incomplete
    or uncommitted end was cut and kept aside), ``corrupt`` (a bad record before
    the end) or ``index`` (the offset index had to be rebuilt)."""

    kind: str
    file: str
    line: int | None
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LogFiles:
    """Where one log lives: ``rel`` (its name in messages), the log and its index."""

    rel: str
    path: str
    index_path: str
    ops: FileOps

    def problem(self, kind: str, line: int | None, what: str) -> LogProblem:
        where = f"{self.rel} line {line}" if line is not None else self.rel
        return LogProblem(kind=kind, file=self.rel, line=line, message=f"{where} {what}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Recovered:
    """A log as opening left it: its entries, its bytes, and what was found."""

    count: int
    size: int
    exists: bool
    problems: list[LogProblem]


def recover(files: LogFiles) -> Recovered:
    """Open the log as a crash left it: cut an incomplete tail, update the index."""
    try:
        fd = files.ops.open(files.path, os.O_RDWR)
    except FileNotFoundError:
        return Recovered(count=0, size=0, exists=False, problems=[])
    try:
        problems: list[LogProblem] = []
        while True:
            count, size, again = _recover(files, fd, problems)
            if not again:
                return Recovered(count=count, size=size, exists=True, problems=problems)
    finally:
        files.ops.close(fd)


def _recover(files: LogFiles, fd: int, problems: list[LogProblem]) -> tuple[int, int, bool]:
    """One pass: (count, size, True if it must be repeated: every line it read was torn)."""
    ops = files.ops
    size = os.fstat(fd).st_size
    known, base, index_bytes = _indexed(files, fd, size, problems)
    first = max(known - 1, 0)  # the last indexed entry is read again to check it
    *lines, fragment = ops.pread(fd, size - base, base).split(b"\n")
    values = [_parse(line) for line in lines]
    keep = len(values)
    while keep and values[keep - 1] is _BAD:
        keep -= 1  # trailing bad lines are the torn end of the last write
    offsets = [base]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    for i in range(keep):
        if values[i] is _BAD:
            problems.append(files.problem("corrupt", first + i + 1, "is not valid JSON"))
    count = first + keep
    if keep < len(values) or fragment:
        problems.append(
            cut(files, fd, offsets[keep], size, count + 1, "ended in an incomplete record")
        )
    if count != known or index_bytes != 8 * count:
        write_index(files, offsets[: keep + 1], first, count)
    # Everything from the re-checked entry on was torn: check the one before it.
    return count, offsets[keep], keep == 0 and first > 0


def _indexed(
    files: LogFiles, fd: int, size: int, problems: list[LogProblem]
) -> tuple[int, int, int]:
    """(entries the index gets right, offset of the last of them, index size)."""
    ops = files.ops
    try:
        idx = ops.open(files.index_path, os.O_RDONLY)
    except FileNotFoundError:
        if size:
            problems.append(files.problem("index", None, "had no index; rebuilt it"))
        return 0, 0, 0
    try:
        index_bytes = os.fstat(idx).st_size
        n = index_bytes // 8
        while n > 0:  # entries past the end of the log are stale (the log was cut)
            lo = max(0, n - _CHUNK)
            chunk = ops.pread(idx, 8 * (n - lo), 8 * lo)
            offsets = [v for (v,) in OFFSET.iter_unpack(chunk)]
            while offsets and offsets[-1] >= size:
                offsets.pop()
            if offsets:
                n = lo + len(offsets)
                break
            n = lo
    finally:
        ops.close(idx)
    if n == 0:
        return 0, 0, index_bytes
    offset = offsets[-1]
    at_line_start = (offset == 0) == (n == 1) and (
        offset == 0 or ops.pread(fd, 1, offset - 1) == b"\n"
    )
    if not at_line_start:
        problems.append(files.problem("index", None, "had an inconsistent index; rebuilt it"))
        return 0, 0, index_bytes
    return n, offset, index_bytes


def cut(files: LogFiles, fd: int, at: int, size: int, line: int, why: str) -> LogProblem:
    """Cut the log at byte ``at`` (of ``size``), keeping the cut bytes aside."""
    ops = files.ops
    kept = _keep_aside(files, ops.pread(fd, size - at, at))
    ops.truncate(fd, at)
    ops.fsync(fd)
    return files.problem("torn", line, f"{why}: cut {size - at} bytes ({kept})")


def _keep_aside(files: LogFiles, data: bytes) -> str:
    """Keep cut bytes next to the log; says where. On a full disk they cannot be
    kept, and the cut goes on without them: they were never committed, and a
    store that cannot cut them could never open again (a failed flush on a full
    disk leaves such bytes behind; cutting them frees that space)."""
    try:
        aside = files.ops.keep_aside(files.path, data)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        return f"not kept: {exc.strerror}"
    return f"kept in {os.path.basename(aside)}"


def write_index(files: LogFiles, offsets: list[int], first: int, count: int) -> None:
    """Write the offsets of entries ``first ..`` and end the index at ``count`` entries."""
    ops = files.ops
    idx = ops.open(files.index_path, os.O_RDWR | os.O_CREAT)
    try:
        packed = b"".join(OFFSET.pack(o) for o in offsets[: count - first])
        ops.pwrite(idx, packed, 8 * first)
        ops.truncate(idx, 8 * count)
    finally:
        ops.close(idx)
