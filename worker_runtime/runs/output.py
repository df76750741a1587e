"""A run's output: engine chunks coalesced into assistant transcript entries."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..clock import Clock
from .job import Job

__all__ = ["RunOutput"]

Schedule = Callable[[float, Job, Callable[[], None]], None]
"""``schedule(when, job, callback)``: run ``callback`` at monotonic ``when``."""


class RunOutput:
    """Coalesces engine output into assistant transcript entries.

    Streaming engines emit many small chunks; one entry per chunk would bloat
    the transcript, so chunks are joined until 4 KiB or 0.2 s have passed.
    A chunk is never held longer than that: if the engine goes quiet, the
    timer thread flushes it. Output past ``max_chars`` is cut with a marker.
    Each joined text goes to ``sink``, which appends it if the run is still
    active.
    """

    FLUSH_CHARS = 4096
    FLUSH_SECONDS = 0.2

    def __init__(
        self,
        job: Job,
        *,
        clock: Clock,
        max_chars: int,
        schedule: Schedule,
        sink: Callable[[str], None],
    ) -> None:
        self._job = job
        self._clock = clock
        self._max_chars = max_chars
        self._schedule = schedule
        self._sink = sink
        self._parts: list[str] = []
        self._size = 0
        self._total = 0
        self._truncated = False
        self._since = clock.monotonic()
        self._timer_set = False
        # The engine's thread and the timer thread both flush; one at a time,
        # so entries keep the order the engine emitted them in.
        self._lock = threading.Lock()

    def write(self, chunk: str) -> None:
        """The engine's ``emit``: buffer ``chunk``, flushing when due."""
        with self._lock:
            self._write(chunk)

    def _write(self, chunk: str) -> None:
        if not chunk or self._truncated:
            return
        room = self._max_chars - self._total
        if len(chunk) > room:
            chunk = chunk[:room] + "\n[output truncated]"
            self._truncated = True
        self._parts.append(chunk)
        self._size += len(chunk)
        self._total += len(chunk)
        now = self._clock.monotonic()
        if (
            self._truncated
            or self._size >= self.FLUSH_CHARS
            or now - self._since >= self.FLUSH_SECONDS
        ):
            self._flush()
        elif not self._timer_set:
            self._timer_set = True
            self._schedule(self._since + self.FLUSH_SECONDS, self._job, self.flush)

    def flush(self) -> None:
        """Hand what is buffered to the sink as one text."""
        with self._lock:
            self._timer_set = False
            self._flush()

    def _flush(self) -> None:
        self._since = self._clock.monotonic()
        if not self._parts:
            return
        text, self._parts, self._size = "".join(self._parts), [], 0
        self._sink(text)
