"""Encoded answers kept for unchanged records: the read path's cache.

A read whose answer depends only on one worker's record (``GetWorker``, a
``GetTranscript`` page: transcript entries never change once written) names
that record as its **version**. Records are frozen and replaced on every
change, so the record object itself is the version: while the worker's
current record *is* the one an answer was made from, the answer is current.
Nothing is invalidated by hand and nothing can go stale.

The version is read *before* the answer is made, so an answer stored under
a version was made from that record or a newer one; a newer one has already
replaced the version, which then never matches again. And an answer is
stored only after the dispatcher's ``sync``, so a hit serves only durable
state. The cache keeps encoded bytes (the transport's own encoding, named by
its ``encode`` function) up to a byte budget, oldest out first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import commands as c
from .handlers import Context

__all__ = ["DEFAULT_BUDGET_BYTES", "VERSIONS", "AnswerCache", "Version"]

DEFAULT_BUDGET_BYTES = 8 << 20
"""Bytes of encoded answers one runtime keeps (about 8,000 worker answers)."""

Version = Callable[[Context, Any], object | None]
"""``version(ctx, command)``: what the command's answer is made from, compared
by identity; None when there is nothing to cache (an unknown worker)."""


def _worker_record(ctx: Context, command: c.GetWorker | c.GetTranscript) -> object | None:
    return ctx.state.current(command.worker_id)


VERSIONS: Mapping[type[c.Command[Any]], Version] = {
    c.GetWorker: _worker_record,
    c.GetTranscript: _worker_record,
}
"""The commands whose answers are cached, and their versions."""


class AnswerCache:
    """Encoded answers by ``(command, encode)``, each with the version it was made from."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._size = 0
        self._entries: dict[tuple[Any, Any], tuple[object, bytes]] = {}
        # Reads need no lock (one dict lookup); writers take it to evict.
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, Any], version: object) -> bytes | None:
        """The answer stored under ``key`` if it was made from ``version``."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] is version:
            return entry[1]
        return None

    def put(self, key: tuple[Any, Any], version: object, body: bytes) -> None:
        """Keep ``body`` as the answer made from ``version`` (the entry holds
        ``version``, so its identity is never reused while it is compared)."""
        if len(body) > self._budget // 16:
            return  # a huge page would push out many small answers
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old[1])
            self._entries[key] = (version, body)
            self._size += len(body)
            while self._size > self._budget:
                oldest = next(iter(self._entries))
                self._size -= len(self._entries.pop(oldest)[1])

    def __len__(self) -> int:
        return len(self._entries)
