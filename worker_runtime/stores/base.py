"""The store interface: where a runtime keeps what must outlive a request.

A store holds one runtime's records (the runtime, its workers, finished runs)
and logs (events, per-worker transcripts, diagnostics, idempotency keys).
The runtime calls it with its own lock held, so a store needs no locking of
its own for writes, but reads may come from any thread.

Writes are *staged*: once a write method returns, later reads see it, but it
is durable only after :meth:`Store.sync` returns. The runtime acknowledges an
operation only after ``sync``, which it calls without its lock held, so
concurrent operations can share one flush (group commit). Any I/O failure is
raised as :class:`~worker_runtime.errors.RuntimeUnavailable` and never
swallowed; after a failed ``sync`` the store refuses further writes.
"""

from __future__ import annotations

import bisect
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from ..clock import Clock
from ..domain import Diagnostic, Event, Run, RuntimeRecord, TranscriptEntry, WorkerRecord

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL_S",
    "IdempotencyExpiry",
    "IdempotencyRecord",
    "Store",
    "StoreState",
    "page_after",
]

DEFAULT_IDEMPOTENCY_TTL_S = 86400.0


def page_after(
    diagnostics: Sequence[Diagnostic], after: int, limit: int | None
) -> list[Diagnostic]:
    """The slice of ``diagnostics`` (ids increasing) with ``id > after``: O(log n + limit)."""
    begin = bisect.bisect_right(diagnostics, after, key=lambda d: d.id)
    end = len(diagnostics) if limit is None else begin + limit
    return list(diagnostics[begin:end])


@dataclass(frozen=True, kw_only=True, slots=True)
class IdempotencyRecord:
    """The first successful answer to a command sent with an idempotency key."""

    key: str
    fingerprint: str
    command: str
    result: dict[str, Any]
    created_at: str


@dataclass(frozen=True, slots=True)
class IdempotencyExpiry:
    """When idempotency records expire: ``ttl_s`` after ``created_at``, by ``clock``
    (the runtime's, so tests move time without sleeping)."""

    clock: Clock
    ttl_s: float

    def cutoff(self) -> datetime:
        """Records created before this have expired."""
        try:
            return _parse_time(self.clock.now()) - timedelta(seconds=self.ttl_s)
        except OverflowError:  # a TTL longer than the calendar: nothing expires
            return datetime.min.replace(tzinfo=UTC)

    def expired(self, record: IdempotencyRecord, cutoff: datetime | None = None) -> bool:
        try:
            created = _parse_time(record.created_at)
        except ValueError:
            return True  # an unreadable time cannot prove the record is still fresh
        return created < (cutoff or self.cutoff())


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(kw_only=True, slots=True)
class StoreState:
    """What :meth:`Store.load` found: everything the runtime keeps in memory.

    ``workers`` is in creation order. ``diagnostics`` lists problems the store
    met while loading (a torn log tail, a corrupt record) that the runtime has
    not yet recorded; the runtime appends them to the diagnostics log.
    """

    runtime: RuntimeRecord | None = None
    workers: list[WorkerRecord] = field(default_factory=list)
    last_event_id: int = 0
    diagnostic_count: int = 0
    last_diagnostic_id: int = 0
    new_diagnostics: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(code, message, worker_id or None) for problems found while loading."""
    quarantined: dict[str, str] = field(default_factory=dict)
    """Worker ids the store set aside as damaged, each with a message naming the
    file: the ids stay reserved (every command on one is ``store_corrupt``)
    until an operator removes the quarantined files."""


class Store(ABC):
    """Abstract store; :class:`MemoryStore` is the reference implementation."""

    kind: ClassVar[str]
    runtime_id: str
    expiry: IdempotencyExpiry = IdempotencyExpiry(Clock(), DEFAULT_IDEMPOTENCY_TTL_S)
    """Set by :meth:`bind_clock`; until then, the wall clock and the default TTL."""

    @abstractmethod
    def load(self) -> StoreState:
        """Read back what is stored (called once, before any write)."""

    @abstractmethod
    def put_runtime(self, record: RuntimeRecord) -> None:
        """Replace the runtime record atomically."""

    @abstractmethod
    def put_worker(self, record: WorkerRecord) -> None:
        """Replace one worker's record atomically (create it if new)."""

    @abstractmethod
    def append_transcript(self, worker_id: str, entry: TranscriptEntry) -> None:
        """Append ``entry``; its ``sequence`` is the worker's current length."""

    @abstractmethod
    def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptEntry]:
        """Entries ``start .. start+limit-1`` (fewer at the end); O(limit)."""

    @abstractmethod
    def put_run(self, worker_id: str, run: Run) -> None:
        """Record a version of a run: called for EVERY version (queued, running,
        process group recorded, finished). The latest version wins; a run's place
        in the worker's history is where it was first put."""

    @abstractmethod
    def get_run(self, worker_id: str, run_id: str) -> Run | None:
        """The latest version of a run of this worker (any status), or None."""

    @abstractmethod
    def list_runs(self, worker_id: str, after: str | None, limit: int) -> list[Run]:
        """The latest version of each run of this worker, oldest first (by first
        put), starting after run ``after`` (exclusive; None: from the first), at
        most ``limit``. ``after`` that is not a run of this worker gives ``[]``
        (the handler checks it with :meth:`get_run` first). O(log n + limit) or
        O(limit) per call, never O(history).

        The fs store pages through each worker's run index (``runs.order`` and
        ``runs.ids``, written at checkpoints): O(limit) after a clean restart;
        after a crash, a first read also reads the runs written since that
        worker's last checkpoint.
        """

    @abstractmethod
    def append_event(self, event: Event) -> None:
        """Append ``event``; ids arrive strictly increasing. An event whose
        ``worker_ref`` names a worker is also indexed under that worker id (see
        :meth:`read_events`), even before the worker's record is put (a
        ``worker_created`` event comes first)."""

    @abstractmethod
    def read_events(self, cursor: int, limit: int, worker_id: str | None = None) -> list[Event]:
        """Up to ``limit`` events with ``event_id >= cursor``, oldest first; O(limit).

        With ``worker_id``: only the events whose ``worker_ref.worker_id`` is that
        worker, at a cost that does not grow with other workers' events (a
        per-worker index). After :meth:`delete_worker` the worker's index starts
        again empty: its older events stay in the runtime-wide log only. Emit
        ``worker_deleted`` *before* calling :meth:`delete_worker` (in the same
        operation): an event naming an id the store holds no record of starts a
        new index for that id, which the fs store keeps in memory only until the
        id's record is put again.
        """

    @abstractmethod
    def append_diagnostic(self, diagnostic: Diagnostic) -> None:
        """Append a diagnostic record."""

    @abstractmethod
    def read_diagnostics(self, after: int = 0, limit: int | None = None) -> Sequence[Diagnostic]:
        """Diagnostics with ``id > after``, oldest first, at most ``limit`` (all if None)."""

    @abstractmethod
    def get_idempotency(self, key: str) -> IdempotencyRecord | None:
        """The stored answer for ``key``, or None (also once it has expired)."""

    @abstractmethod
    def put_idempotency(self, record: IdempotencyRecord) -> None:
        """Remember the first answer for ``record.key`` (replacing an expired one).
        Expired records are compacted away (dropped from memory, and from files
        at checkpoints)."""

    @abstractmethod
    def delete_worker(self, worker_id: str) -> None:
        """Remove the worker's record, transcript, runs and event index (the
        runtime-wide event log keeps its lines). Staged like every write, durable
        after :meth:`sync`; unknown ids are ignored. The id may then be put again
        and starts fresh and empty. The fs store makes it crash-safe: a delete cut
        by a crash either happened or did not."""

    @abstractmethod
    def sync(self) -> None:
        """Block until every write staged so far is durable."""

    def bind_clock(self, clock: Clock, idempotency_ttl_s: float) -> None:
        """Called once by the runtime: idempotency records expire ``idempotency_ttl_s``
        after they were made, by ``clock``; an expired key is unknown again."""
        self.expiry = IdempotencyExpiry(clock, idempotency_ttl_s)

    def bind_lock(self, lock: contextlib.AbstractContextManager[Any]) -> None:  # noqa: B027 - optional hook
        """Called once by the runtime with the lock it holds while it stages an
        operation's writes. A store that flushes in groups takes it briefly to
        cut a batch between two operations, never inside one (the runtime
        never holds it while calling ``sync``)."""

    @abstractmethod
    def close(self) -> None:
        """Make everything durable and release the store (locks, files)."""
