"""Group commit: many threads waiting for durability share one flush.

Writers stage changes under a mutex and bump a generation number. A thread
that needs its writes durable calls :meth:`GroupCommit.sync`: if nobody is
flushing it becomes the leader, takes everything staged so far and flushes
it without the mutex; threads arriving meanwhile wait on a condition until a
flush covering their generation is done, and one of them leads the next
flush. Under load a flush covers many writers at the cost of one.

If an ``outer`` lock is set (the runtime's, held while it stages one
operation's writes), the leader takes it around ``take``: a batch then ends
between two operations, never inside one, so what a flush commits is always
a consistent state.

A failed flush is never retried: after a failed fsync the kernel may have
dropped the data, so the failure sticks and every later stage raises
:class:`~worker_runtime.errors.RuntimeUnavailable` (or what ``failed`` makes of
the error, such as ``StoreCorrupt`` for a planted link), as does the sync of a
thread whose own writes were not flushed. A thread that staged nothing since
its last sync (a read) still gets its answer: a full disk stops
writes, not reads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ...errors import RuntimeUnavailable

__all__ = ["GroupCommit", "could_not_write"]

B = TypeVar("B")
log = logging.getLogger("worker_runtime.stores")


def could_not_write(exc: OSError) -> RuntimeUnavailable:
    """What a flush failed with ``exc`` answers from then on."""
    return RuntimeUnavailable(
        f"it could not write: {exc.strerror or type(exc).__name__} (errno {exc.errno})"
    )


class GroupCommit(Generic[B]):
    """Leader/follower flushing around ``take`` (mutex held), ``flush`` (mutex
    released) and ``done`` (mutex held, only after a successful flush)."""

    def __init__(
        self,
        mutex: threading.Lock,
        *,
        take: Callable[[], B],
        flush: Callable[[B], None],
        done: Callable[[B], None],
        failed: Callable[[OSError], RuntimeUnavailable] = could_not_write,
    ) -> None:
        self._cond = threading.Condition(mutex)
        self._take = take
        self._flush = flush
        self._done = done
        self._failed = failed
        self._staged = 0
        self._durable = 0
        self._flushing = False
        self._failure: RuntimeUnavailable | None = None
        self._mine = threading.local()  # the generation of this thread's last write
        self.outer: contextlib.AbstractContextManager[Any] | None = None
        self.between: Callable[[], None] | None = None
        """Run by a leader after its flush, with no lock held and no other flush
        running (the fs store compacts its idempotency log there). It must not
        raise an ``OSError``: a failure there is the next flush's."""
        self.flushes = 0  # how many flushes ran (for tests and benchmarks)

    def check(self) -> None:
        """Raise ``RuntimeUnavailable`` if a flush has failed (mutex held)."""
        failure = self._failure
        if failure is not None:
            raise type(failure)(
                f"the store accepts no more writes: {failure.message}",
                details={**failure.details, "retry_after_s": 1},
            )

    def close(self, reason: str) -> None:
        """Refuse every later stage and sync, once a flush under way has finished."""
        with self._cond:
            while self._flushing:
                self._cond.wait()
            self._failure = self._failure or RuntimeUnavailable(reason)

    def staged(self) -> None:
        """Count one staged write (mutex held); refused after a failure."""
        self.check()
        self._staged += 1
        self._mine.generation = self._staged

    def sync(self) -> None:
        """Return once every write staged before the call is durable."""
        with self._cond:
            target = self._staged
            mine = int(getattr(self._mine, "generation", 0))
            # This thread is told once that its writes failed; its later syncs
            # (reads, on a pool thread) concern only what it stages afterwards.
            self._mine.generation = 0
            while True:
                if self._failure is not None and mine <= self._durable:
                    return
                self.check()
                if self._durable >= target:
                    return
                if self._flushing:
                    self._cond.wait()
                else:
                    self._lead()

    @property
    def failure(self) -> str | None:
        """Why the store accepts no more writes, or None."""
        return self._failure.message if self._failure is not None else None

    def _lead(self) -> None:
        self._flushing = True
        failure: RuntimeUnavailable | None = RuntimeUnavailable("the flush was interrupted")
        generation = self._durable
        batch: B | None = None
        self._cond.release()
        try:
            # Lock order as when staging: the outer lock first, then the mutex.
            with self.outer or contextlib.nullcontext(), self._cond:
                generation = self._staged
                batch = self._take()
            self._flush(batch)
            failure = None
        except OSError as exc:
            failure = self._failed(exc)
            log.error("store flush failed: %s", exc)
        finally:
            # Any other exception is a bug: it propagates, and the sticky failure
            # set here still stops every writer from assuming durability.
            self._cond.acquire()
            self._flushing = False
            self.flushes += 1
            if failure is None:
                assert batch is not None
                self._done(batch)
                self._durable = generation
            else:
                self._failure = failure
            self._cond.notify_all()
        if failure is not None:
            self.check()
        if self.between is not None:
            self._between(self.between)

    def _between(self, work: Callable[[], None]) -> None:
        """Run ``work`` after a successful flush, before the next one can start,
        with the mutex released (staging and reads go on meanwhile)."""
        self._flushing = True
        self._cond.release()
        try:
            work()
        finally:
            self._cond.acquire()
            self._flushing = False
            self._cond.notify_all()
