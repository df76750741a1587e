"""The state table: the workers' records under one lock, and the small verbs on them.

:class:`StateTable` is the runtime's **unit of work**. A handler or a run
changes state inside ``with state.locked():`` (every write is staged in the
store under that one hold) and the dispatcher makes the writes durable with
``state.sync()`` after the lock is released, so concurrent operations share one
flush. Nothing outside this module touches the records, the lock or the
counters directly.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .clock import Clock, new_id
from .domain import (
    USAGE_FIELD,
    Diagnostic,
    Event,
    Role,
    RunStatus,
    RuntimeRecord,
    Severity,
    TranscriptEntry,
    Usage,
    WorkerRecord,
    WorkerRef,
    WorkerStatus,
)
from .errors import OperationTimeout, RuntimeUnavailable, StoreCorrupt, WorkerNotFound
from .sharing import Sharing
from .stores import Store, StoreState
from .waits import POLL_S, abandoned
from .worker_index import WorkerIndex

__all__ = ["StateTable"]

_NO_DATA: dict[str, str | int | None] = {}

_DELETED_KEPT = 1024
"""Deleted ids whose ``worker_deleted`` event the table remembers (the newest
deletes; an older one is forgotten first): a follower whose worker is deleted
under its wait, or between two of its polls, is answered with that event
instead of ``worker_not_found``. One is an event and an int, a few hundred bytes."""


class StateTable:
    """One runtime's in-memory state: records, counters, status, and the lock.

    Methods marked "(lock held)" must be called inside :meth:`locked`; the
    lock is re-entrant, so a verb may call another.
    """

    def __init__(self, *, store: Store, clock: Clock, operation_timeout_s: float) -> None:
        self._store = store
        self._clock = clock
        self._timeout_s = operation_timeout_s
        self.runtime_id = store.runtime_id
        # Re-entrant: the dispatcher holds it across a short handler and the
        # idempotency record, so both land in the same store commit.
        self._lock = threading.RLock()
        store.bind_lock(self._lock)  # so a group flush never splits an operation
        # Long-pollers and second stoppers wait on this; every change that may
        # end their wait notifies it.
        self._changed = threading.Condition(self._lock)
        # The records, with their counts and creation order kept as they change.
        self._workers = WorkerIndex()
        # Equal values shared between records: an idle worker costs less memory.
        self._sharing = Sharing(clock, self.runtime_id)
        self._stopping: set[str] = set()
        self._last_event_id = 0
        # Each worker's newest event id: what a wait on one worker's events
        # compares its cursor with, without reading the log.
        self._last_event_of: dict[str, int] = {}
        # The ``worker_deleted`` event of each deleted id (oldest delete first),
        # with the id of the worker's event before it, until the id is created
        # again; at most ``_DELETED_KEPT``, in memory only.
        self._deleted: dict[str, tuple[Event, int]] = {}
        self._diagnostic_count = 0
        self._last_diagnostic_id = 0
        self._status = "running"
        self._unavailable_reason = ""
        self._waiters = 0
        # Reserved ids of workers the store quarantined, with why (naming the file).
        self._quarantined: dict[str, str] = {}
        # Finished runs by final status, kept as they end (never recounted).
        self._run_totals: dict[RunStatus, int] = {}
        self.started_at = ""
        self.sync_observer: Callable[[float], None] | None = None
        """Called with the seconds each store sync took (the HTTP adapter's metrics)."""

    # -- the unit of work --------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock, or fail with ``operation_timeout`` past the deadline."""
        if not self._lock.acquire(timeout=self._timeout_s):
            raise OperationTimeout(
                "the runtime state was busy past the operation deadline",
                details={"timeout_s": self._timeout_s},
            )
        try:
            yield
        finally:
            self._lock.release()

    def sync(self) -> None:
        """Make every staged write durable; a failure makes the runtime unavailable."""
        observer = self.sync_observer
        if observer is None:  # every dispatch syncs: no clock read unless timed
            self._sync()
            return
        started = time.perf_counter()
        try:
            self._sync()
        finally:
            observer(time.perf_counter() - started)

    def _sync(self) -> None:
        try:
            self._store.sync()
        except RuntimeUnavailable as exc:
            with self._lock:
                if self._status != "stopping":  # a closed runtime stays closed
                    self._status = "unavailable"
                self._unavailable_reason = exc.message
            raise

    def wait_changed(self, timeout: float) -> None:
        """Release the lock until the state changes or ``timeout`` passes (lock held)."""
        self._waiters += 1
        try:
            self._changed.wait(timeout)
        finally:
            self._waiters -= 1

    def wait_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Wait (lock held) until ``done()``, the monotonic ``deadline``, the
        runtime stopping, or the caller hanging up (:func:`waits.abandoned`,
        looked at every ``POLL_S`` seconds at least)."""
        while not done() and self._status == "running" and not abandoned():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            self.wait_changed(min(remaining, POLL_S))

    def waiting(self) -> int:
        """How many threads are in :meth:`wait_changed` (long-polls, second stops)."""
        return self._waiters

    # -- status ------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``running``, ``stopping`` (closed or closing) or ``unavailable``."""
        return self._status

    def begin_shutdown(self) -> bool:
        """Mark the runtime stopping and answer every waiter; False if it already was."""
        with self._lock:
            if self._status == "stopping":
                return False
            self._status = "stopping"
            self._changed.notify_all()
            return True

    def check_available(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the runtime accepts changes (lock held)."""
        if self._status != "running":
            why = f": {self._unavailable_reason}" if self._status == "unavailable" else ""
            raise RuntimeUnavailable(
                f"the runtime is {self._status}{why}", details={"retry_after_s": 1}
            )

    # -- counters ----------------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        return self._last_event_id

    @property
    def diagnostic_count(self) -> int:
        return self._diagnostic_count

    def run_totals(self) -> dict[RunStatus, int]:
        """Finished runs by final status since the store began (lock held)."""
        return dict(self._run_totals)

    def count_finished(self, status: RunStatus) -> None:
        """Count a run that ended with ``status`` (lock held)."""
        self._run_totals[status] = self._run_totals.get(status, 0) + 1

    def queued_count(self) -> int:
        """Runs waiting in workers' queues (lock held): kept as records change, O(1)."""
        return self._workers.queued

    def ids_with_queue(self) -> list[str]:
        """Workers with queued runs, in creation order (lock held)."""
        return [record.worker_id for record in self._workers.records() if record.queued]

    def last_event_of(self, worker_id: str) -> int:
        """The id of the worker's newest event, 0 if none (lock held)."""
        return self._last_event_of.get(worker_id, 0)

    def counts(self) -> dict[WorkerStatus, int]:
        """Workers by status (lock held): kept as records change, O(1)."""
        return self._workers.counts()

    def recount(self) -> dict[WorkerStatus, int]:
        """Workers by status counted from every record: O(n), for tests and
        audits (it must always equal :meth:`counts`)."""
        counts = dict.fromkeys(WorkerStatus, 0)
        for record in self._workers.records():
            counts[record.status] += 1
        return counts

    def __len__(self) -> int:
        return len(self._workers)

    # -- workers -----------------------------------------------------------------

    def ref(self, worker_id: str) -> WorkerRef:
        """The worker's ref (shared: an operation usually names one worker several times)."""
        return self._sharing.ref(worker_id)

    def find(self, worker_id: str) -> WorkerRecord | None:
        """The worker's record, or None (lock held)."""
        return self._workers.get(worker_id)

    def current(self, worker_id: str) -> WorkerRecord | None:
        """The worker's current record, or None, read without the lock: one dict
        read is atomic and records are immutable (the answer cache's version)."""
        return self._workers.get(worker_id)

    def check_not_quarantined(self, worker_id: str) -> None:
        """Raise ``StoreCorrupt`` if the store quarantined this id: it stays reserved
        (even for a create) until an operator removes the damaged files."""
        why = self._quarantined.get(worker_id)
        if why is not None:
            raise StoreCorrupt(why, details={"worker_id": worker_id})

    def worker(self, worker_id: str) -> WorkerRecord:
        """The worker's record (lock held), or ``WorkerNotFound`` (``StoreCorrupt``
        for a quarantined id)."""
        record = self._workers.get(worker_id)
        if record is None:
            raise self._not_found(worker_id)
        return record

    def deleted_event(self, worker_id: str, cursor: int) -> Event:
        """The ``worker_deleted`` event of ``worker_id``, a worker no longer in the
        table, for a read of its events from ``cursor`` (lock held): when that
        event is all the read would have found, i.e. ``cursor`` is past every
        earlier event of the worker and not past the delete. Else the error
        :meth:`worker` raises: an answer of the delete alone would hide the
        events in between. Remembered from the delete until the id is created
        again or ``_DELETED_KEPT`` newer deletes, in memory only (a restart
        forgets it)."""
        deleted = self._deleted.get(worker_id)
        if deleted is None or worker_id in self._workers:
            raise self._not_found(worker_id)
        event, before = deleted
        if not before < cursor <= event.event_id:
            raise self._not_found(worker_id)
        return event

    def _not_found(self, worker_id: str) -> StoreCorrupt | WorkerNotFound:
        why = self._quarantined.get(worker_id)
        if why is not None:
            return StoreCorrupt(why, details={"worker_id": worker_id})
        return WorkerNotFound(
            f"no worker {worker_id!r} in runtime {self.runtime_id!r}",
            details={"worker_id": worker_id},
        )

    def fresh_worker_id(self) -> str:
        """A generated worker id no worker has (lock held)."""
        while (worker_id := new_id("w")) in self._workers:
            pass
        return worker_id

    def page(
        self, *, after: str | None, status: WorkerStatus | None, limit: int
    ) -> tuple[list[WorkerRecord], bool]:
        """Up to ``limit`` workers in creation order past ``after`` (a known id),
        only those in ``status`` if given, and whether more follow (lock held):
        O(log n + limit)."""
        return self._workers.page(after=after, status=status, limit=limit)

    def scan_page(
        self, *, after: str | None, status: WorkerStatus | None, limit: int
    ) -> tuple[list[WorkerRecord], bool]:
        """:meth:`page` by a full scan: O(n), the reference it is tested against."""
        return self._workers.scan_page(after=after, status=status, limit=limit)

    def add_worker(self, record: WorkerRecord) -> None:
        """Store a new worker's record (lock held); an earlier worker of the same
        id is forgotten for good (its ``worker_deleted`` event too)."""
        record = self._sharing.record(record)
        self._store.put_worker(record)
        self._put(record)
        self._deleted.pop(record.worker_id, None)

    def drop_worker(self, worker_id: str, deleted: Event, *, before: int) -> None:
        """Delete the worker, its transcript and runs (lock held); ``deleted`` is
        its ``worker_deleted`` event and ``before`` the id of its newest event
        before that one (see :meth:`deleted_event`). Its id is free again. Its
        finished runs stay in the totals: they are counters, which never go
        down (a Prometheus scrape would read a drop as a reset)."""
        self.remove_worker(worker_id)
        self._store.delete_worker(worker_id)
        self._last_event_of.pop(worker_id, None)
        self._deleted[worker_id] = (deleted, before)  # never there: add_worker took it out
        if len(self._deleted) > _DELETED_KEPT:
            del self._deleted[next(iter(self._deleted))]

    def save_worker(self, record: WorkerRecord, **changes: Any) -> WorkerRecord:
        """Store ``record`` with ``changes`` applied and a new ``updated_at`` (lock held)."""
        record = dataclasses.replace(record, **changes, updated_at=self._sharing.now())
        self._store.put_worker(record)
        self._put(record)
        return record

    def remove_worker(self, worker_id: str) -> WorkerRecord | None:
        """Forget a worker (lock held): its record, its place in the indexes and
        its count. The table's half of a delete; the store keeps its files until
        a delete verb of its own removes them. Returns the record, or None."""
        record = self._workers.remove(worker_id)
        if record is not None:
            self._stopping.discard(worker_id)
        return record

    def _put(self, record: WorkerRecord) -> None:
        """Make ``record`` the worker's current one: the only place a record
        enters the table (the index keeps its counts and order in step)."""
        self._workers.put(record)

    def append_entry(
        self,
        record: WorkerRecord,
        *,
        event: str,
        role: Role,
        content: str,
        run_id: str,
        usage: Usage,
        data: dict[str, str | int | None] | None = None,
        at: str | None = None,
        **changes: Any,
    ) -> tuple[WorkerRecord, TranscriptEntry]:
        """Append a transcript entry announced by event ``event`` (with ``data``,
        at time ``at`` or now), and save the worker with its new length,
        ``usage`` and ``changes`` (lock held)."""
        announced = self._event(event, record.worker_id, run_id, data or {}, at)
        entry = TranscriptEntry(
            sequence=record.transcript_len,
            role=role,
            content=content,
            event_id=announced.event_id,
            created_at=announced.created_at,
            run_id=run_id,
        )
        self._store.append_transcript(record.worker_id, entry)
        record = self.save_worker(
            record,
            **changes,
            transcript_len=record.transcript_len + 1,
            last_event_id=announced.event_id,
            usage=usage,
        )
        return record, entry

    def announce(
        self,
        record: WorkerRecord,
        type_: str,
        run_id: str | None = None,
        data: dict[str, str | int | None] | None = None,
        **changes: Any,
    ) -> Event:
        """Emit event ``type_`` about ``record``'s worker and save the worker with
        ``changes`` and that event as its last (lock held): the "emit, then save"
        of every change a worker's record shows."""
        event = self._event(type_, record.worker_id, run_id, data or {}, None)
        self.save_worker(record, **changes, last_event_id=event.event_id)
        return event

    # -- stopping workers --------------------------------------------------------

    def is_stopping(self, worker_id: str) -> bool:
        return worker_id in self._stopping

    def begin_stop(self, worker_id: str) -> None:
        """Refuse new input to the worker while its stop winds down (lock held)."""
        self._stopping.add(worker_id)

    def end_stop(self, worker_id: str) -> None:
        """The stop is over; wake a second stop waiting on this one (lock held)."""
        self._stopping.discard(worker_id)
        self._changed.notify_all()

    def await_stop(self, worker_id: str, timeout_s: float) -> None:
        """Wait (lock held) for a stop already in progress, so that a second stop
        answers "already stopped" only once the worker really is stopped."""
        deadline = self._clock.monotonic() + timeout_s
        while worker_id in self._stopping:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise OperationTimeout(
                    f"worker {worker_id!r} is still stopping", details={"worker_id": worker_id}
                )
            self.wait_changed(remaining)

    # -- logs --------------------------------------------------------------------

    def emit(
        self,
        type_: str,
        worker_id: str | None = None,
        run_id: str | None = None,
        **data: str | int | None,
    ) -> Event:
        """Append an event with the next id and wake long-pollers (lock held)."""
        return self._event(type_, worker_id, run_id, data, None)

    def _event(
        self,
        type_: str,
        worker_id: str | None,
        run_id: str | None,
        data: dict[str, str | int | None],
        at: str | None,
    ) -> Event:
        event = Event(
            event_id=self._last_event_id + 1,
            type=type_,
            created_at=at or self._sharing.now(),
            worker_ref=self.ref(worker_id) if worker_id else None,
            run_id=run_id,
            # Most events carry no data: they share one empty dict (events are
            # immutable; nothing ever mutates their data).
            data=data or _NO_DATA,
        )
        self._store.append_event(event)
        self._last_event_id = event.event_id
        if worker_id:
            self._last_event_of[worker_id] = event.event_id
        self._changed.notify_all()
        return event

    def diagnose(
        self, severity: Severity, code: str, message: str, worker_id: str | None = None
    ) -> Diagnostic:
        """Record a diagnostic (lock held)."""
        self._last_diagnostic_id += 1
        diagnostic = Diagnostic(
            id=self._last_diagnostic_id,
            severity=severity,
            code=code,
            message=message,
            created_at=self._sharing.now(),
            worker_ref=self.ref(worker_id) if worker_id else None,
        )
        self._store.append_diagnostic(diagnostic)
        self._diagnostic_count += 1
        return diagnostic

    # -- start-up ----------------------------------------------------------------

    def restore(self, loaded: StoreState, *, display_name: str | None) -> list[WorkerRecord]:
        """Take over what the store loaded (lock held); returns the workers whose
        run was active, or who had runs queued, when the last process stopped,
        for the runs to recover."""
        self._last_event_id = loaded.last_event_id
        self._diagnostic_count = loaded.diagnostic_count
        self._last_diagnostic_id = loaded.last_diagnostic_id
        self._quarantined = dict(loaded.quarantined)
        if loaded.runtime is None:
            self._store.put_runtime(
                RuntimeRecord(
                    runtime_id=self.runtime_id,
                    display_name=display_name,
                    created_at=self._clock.now(),
                )
            )
        for code, message, worker_id in loaded.new_diagnostics:
            self.diagnose(Severity.WARNING, code, message, worker_id)
        for record in loaded.workers:  # in creation order
            self._put(record)
            self._last_event_of[record.worker_id] = record.last_event_id
            for status, field in USAGE_FIELD.items():
                self._run_totals[status] = self._run_totals.get(status, 0) + getattr(
                    record.usage, field
                )
        return [r for r in loaded.workers if r.active_run is not None or r.queued]
