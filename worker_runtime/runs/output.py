"""A run's output: engine chunks streamed as ``run_output`` events, kept for the reply.

The engine calls :meth:`RunOutput.write` with each chunk. Chunks are joined
and handed to ``sink(text, offset)`` (the lifecycle emits one ``run_output``
event per call) at most once per :data:`RunOutput.FLUSH_SECONDS` per run: a
chunk arriving after a quiet spell goes out at once, one arriving sooner waits
for the timer thread, which flushes it at the end of the spell, so a quiet
engine is never held longer than that. Every character also goes into the
reply, which :meth:`drain` hands over when the run ends (SPEC section 7: one
assistant entry per run). Output past ``max_chars`` is cut with a marker.

Lock order: the state lock, then this object's lock. ``write`` takes only its
own lock and calls ``flush`` (which takes both, in that order) after
releasing it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from ..clock import Clock
from ..errors import WorkerRuntimeError
from .job import Job

log = logging.getLogger("worker_runtime.runs")

__all__ = ["TRUNCATED", "RunOutput"]

Schedule = Callable[[float, Job, Callable[[], None]], None]
"""``schedule(when, job, callback)``: run ``callback`` at monotonic ``when``."""

TRUNCATED = "\n[output truncated]"
"""The marker that ends a reply cut at ``max_output_chars``."""


class RunOutput:
    """Streams one run's output and keeps its whole reply."""

    FLUSH_SECONDS = 0.05

    def __init__(
        self,
        job: Job,
        *,
        clock: Clock,
        max_chars: int,
        schedule: Schedule,
        locked: Callable[[], AbstractContextManager[None]],
        sink: Callable[[str, int], None],
        sync: Callable[[], None],
    ) -> None:
        self._job = job
        self._clock = clock
        self._max_chars = max_chars
        self._schedule = schedule
        self._locked = locked
        self._sink = sink
        self._sync = sync
        self._reply: list[str] = []
        self._pending: list[str] = []
        self._total = 0
        self._sent = 0
        self._truncated = False
        self._last_flush = float("-inf")
        self._timer_set = False
        self._lock = threading.Lock()

    def write(self, chunk: str) -> None:
        """The engine's ``emit``: keep ``chunk``, and stream it when due."""
        with self._lock:
            if not chunk or self._truncated:
                return
            room = self._max_chars - self._total
            if len(chunk) > room:
                chunk = chunk[:room] + TRUNCATED
                self._truncated = True
            self._reply.append(chunk)
            self._pending.append(chunk)
            self._total += len(chunk)
            due = self._last_flush + self.FLUSH_SECONDS
            now_due = self._clock.monotonic() >= due
            if not now_due and not self._timer_set:
                self._timer_set = True
                self._schedule(due, self._job, self.flush)
        if now_due:
            self.flush()

    def flush(self) -> None:
        """Stream what is pending as one piece (takes the state lock), and make it
        durable: after a crash, the interrupted run's reply is rebuilt from these
        events. The sync is outside the lock, so concurrent runs share a flush."""
        with self._locked(), self._lock:
            self._timer_set = False
            streamed = self._flush()
        if streamed:
            try:
                self._sync()
            except WorkerRuntimeError as exc:  # the store failed: the run's end says so
                log.error("output of run %s could not be made durable: %s", self._job.run_id, exc)

    def _flush(self) -> bool:
        """Stream what is pending (both locks held); whether there was any."""
        if not self._pending:
            return False
        text, self._pending = "".join(self._pending), []
        self._last_flush = self._clock.monotonic()
        offset, self._sent = self._sent, self._sent + len(text)
        self._sink(text, offset)
        return True

    def drain(self) -> str:
        """At the run's end (state lock held): stream what is pending, stop
        streaming, and return the whole reply (which the events spell out)."""
        with self._lock:
            self._flush()
            self._truncated = True  # late chunks of a forced end are dropped
            return "".join(self._reply)

    def pieces(self) -> Iterator[str]:
        """The reply's pieces so far (for tests and diagnostics)."""
        with self._lock:
            yield from list(self._reply)
