"""The in-memory store: the reference implementation, and the embedded default.

Nothing survives the process; ``sync`` has nothing to flush.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..domain import Diagnostic, Event, Run, RuntimeRecord, TranscriptEntry, WorkerRecord
from .base import IdempotencyRecord, Store, StoreState, page_after
from .history import RunHistory
from .idempotency import fresh_idempotency, put_fresh_idempotency

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    kind = "memory"

    def __init__(self, runtime_id: str) -> None:
        self.runtime_id = runtime_id
        self._runtime: RuntimeRecord | None = None
        self._workers: dict[str, WorkerRecord] = {}
        self._transcripts: dict[str, list[TranscriptEntry]] = {}
        self._runs: dict[str, RunHistory] = {}
        # Event ids are contiguous from 1, so an event's index is its id - 1.
        self._events: list[Event] = []
        # Each worker's event ids, increasing: a filtered page is a bisect and a slice.
        self._worker_events: dict[str, list[int]] = {}
        self._diagnostics: list[Diagnostic] = []
        self._idempotency: dict[str, IdempotencyRecord] = {}

    def load(self) -> StoreState:
        return StoreState(
            runtime=self._runtime,
            workers=list(self._workers.values()),
            last_event_id=self._events[-1].event_id if self._events else 0,
            diagnostic_count=len(self._diagnostics),
            last_diagnostic_id=self._diagnostics[-1].id if self._diagnostics else 0,
        )

    def put_runtime(self, record: RuntimeRecord) -> None:
        self._runtime = record

    def put_worker(self, record: WorkerRecord) -> None:
        # A transcript list is made by the first entry: an idle worker has none.
        self._workers[record.worker_id] = record

    def append_transcript(self, worker_id: str, entry: TranscriptEntry) -> None:
        self._transcripts.setdefault(worker_id, []).append(entry)

    def read_transcript(self, worker_id: str, start: int, limit: int) -> list[TranscriptEntry]:
        entries = self._transcripts.get(worker_id)
        return entries[start : start + limit] if entries is not None else []

    def put_run(self, worker_id: str, run: Run) -> None:
        self._runs.setdefault(worker_id, RunHistory()).put(run)

    def get_run(self, worker_id: str, run_id: str) -> Run | None:
        history = self._runs.get(worker_id)
        return history.get(run_id) if history else None

    def list_runs(self, worker_id: str, after: str | None, limit: int) -> list[Run]:
        history = self._runs.get(worker_id)
        return history.page(after, limit) if history else []

    def append_event(self, event: Event) -> None:
        self._events.append(event)
        if event.worker_ref is not None:
            self._worker_events.setdefault(event.worker_ref.worker_id, []).append(event.event_id)

    def read_events(self, cursor: int, limit: int, worker_id: str | None = None) -> list[Event]:
        if not self._events:
            return []
        first = self._events[0].event_id
        if worker_id is None:
            index = max(cursor - first, 0)
            return self._events[index : index + limit]
        ids = self._worker_events.get(worker_id, [])
        begin = bisect.bisect_left(ids, cursor)
        return [self._events[event_id - first] for event_id in ids[begin : begin + limit]]

    def delete_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
        self._transcripts.pop(worker_id, None)
        self._runs.pop(worker_id, None)
        self._worker_events.pop(worker_id, None)

    def append_diagnostic(self, diagnostic: Diagnostic) -> None:
        self._diagnostics.append(diagnostic)

    def read_diagnostics(self, after: int = 0, limit: int | None = None) -> Sequence[Diagnostic]:
        return page_after(self._diagnostics, after, limit)

    def get_idempotency(self, key: str) -> IdempotencyRecord | None:
        return fresh_idempotency(self._idempotency, key, self.expiry)

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        put_fresh_idempotency(self._idempotency, record, self.expiry)

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None
