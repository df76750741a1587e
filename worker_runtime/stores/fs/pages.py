"""Diagnostics paged by id, with unreadable lines kept in place.

One bad line in ``diagnostics.jsonl`` must fail only the pages that would
hold it, not every page: a bad line sorts just after the id before it, so a
page starting past that id (or ending before it) never touches it.
"""

from __future__ import annotations

import bisect

from ...domain import Diagnostic
from ...errors import StoreCorrupt
from .recovery import LogProblem

__all__ = ["DiagnosticPages"]


class DiagnosticPages:
    """Every diagnostic in id order; a bad line is a :class:`LogProblem` in its place."""

    def __init__(self, entries: list[Diagnostic | LogProblem]) -> None:
        self._entries: list[Diagnostic | LogProblem] = []
        self._keys: list[float] = []
        for entry in entries:
            self.append(entry)

    def append(self, entry: Diagnostic | LogProblem) -> None:
        previous = self._keys[-1] if self._keys else 0.0
        if isinstance(entry, LogProblem):
            self._keys.append(int(previous) + 0.5)  # after the id before it
        else:
            self._keys.append(float(entry.id))
        self._entries.append(entry)

    def page(self, after: int, limit: int | None) -> list[Diagnostic]:
        """Diagnostics with ``id > after``, at most ``limit``: O(log n + limit).
        ``StoreCorrupt`` naming the file and line if the page holds a bad line."""
        begin = bisect.bisect_right(self._keys, after)
        end = len(self._entries) if limit is None else begin + limit
        page: list[Diagnostic] = []
        for entry in self._entries[begin:end]:
            if isinstance(entry, LogProblem):
                raise StoreCorrupt(entry.message, details={"file": entry.file, "line": entry.line})
            page.append(entry)
        return page
