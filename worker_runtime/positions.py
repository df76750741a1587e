"""An ordered set of small non-negative ints (creation positions), paged in O(limit).

:class:`PositionSet` keeps its members sorted in chunks of at most ``2 * LOAD``
(the layout of a B-tree's leaves, one level deep): adding or removing a
member costs a binary search over the chunks' last members plus a move
inside one chunk, and :meth:`PositionSet.after` finds the first member past a
position by the same search and then walks forward. Nothing copies the whole
set, so a page costs the same at 20,000 members as at 200.

The state table keeps one set for every worker and one per status, so a
filtered ``ListWorkers`` page walks only the workers it returns.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

__all__ = ["PositionSet"]

LOAD = 256
"""Chunks split past ``2 * LOAD`` members: small enough that a move inside one
is a short ``memmove``, large enough that the chunk index stays tiny."""


class PositionSet:
    """A sorted set of ints with O(log n) add/discard and O(log n + k) paging.

    Not thread-safe: the state table calls it with its lock held.
    """

    __slots__ = ("_chunks", "_len", "_maxes")

    def __init__(self) -> None:
        self._chunks: list[list[int]] = []
        self._maxes: list[int] = []  # the last member of each chunk
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, value: int) -> bool:
        i = bisect_left(self._maxes, value)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, value)
        return j < len(chunk) and chunk[j] == value

    def add(self, value: int) -> None:
        """Add ``value`` (a member already present is left alone)."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([value])
            maxes.append(value)
            self._len = 1
            return
        if value > maxes[-1]:
            # The common case (a new worker is the newest): append to the last chunk.
            i = len(maxes) - 1
            self._chunks[i].append(value)
            maxes[i] = value
        else:
            i = bisect_left(maxes, value)
            chunk = self._chunks[i]
            j = bisect_left(chunk, value)
            if chunk[j] == value:
                return
            insort(chunk, value)
        self._len += 1
        chunk = self._chunks[i]
        if len(chunk) > 2 * LOAD:
            self._chunks[i : i + 1] = [chunk[:LOAD], chunk[LOAD:]]
            maxes[i : i + 1] = [chunk[LOAD - 1], chunk[-1]]

    def discard(self, value: int) -> None:
        """Remove ``value`` if it is a member."""
        maxes = self._maxes
        i = bisect_left(maxes, value)
        if i == len(maxes):
            return
        chunk = self._chunks[i]
        j = bisect_left(chunk, value)
        if chunk[j] != value:
            return
        del chunk[j]
        self._len -= 1
        if chunk:
            maxes[i] = chunk[-1]
        else:
            del self._chunks[i]
            del maxes[i]

    def after(self, position: int, limit: int) -> list[int]:
        """Up to ``limit`` members greater than ``position``, in order."""
        maxes = self._maxes
        i = bisect_right(maxes, position)
        found: list[int] = []
        chunks = self._chunks
        while i < len(chunks) and len(found) < limit:
            chunk = chunks[i]
            j = bisect_right(chunk, position) if not found else 0
            found += chunk[j : j + limit - len(found)]
            i += 1
        return found

    def __iter__(self) -> Iterator[int]:
        for chunk in self._chunks:
            yield from chunk
