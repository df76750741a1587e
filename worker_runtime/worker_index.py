"""The workers' records by id, and what is kept in step with them as they change.

:class:`WorkerIndex` is the state table's: it holds every worker's current
record with the figures a read must not recount — workers by status, runs
queued in all workers' queues — and the ordered creation positions a
``ListWorkers`` page walks in O(log n + limit). It takes no lock; the state
table's lock guards it, and nothing else holds one.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable

from .domain import WorkerRecord, WorkerStatus
from .positions import PositionSet

__all__ = ["WorkerIndex"]


class WorkerIndex:
    """Current records by worker id, counts by status, and creation order."""

    def __init__(self) -> None:
        self._records: dict[str, WorkerRecord] = {}
        self._counts: dict[WorkerStatus, int] = dict.fromkeys(WorkerStatus, 0)
        self._queued = 0
        # A worker's creation position is its index in ``_ids`` (None once removed).
        self._ids: list[str | None] = []
        self._position: dict[str, int] = {}
        self._all = PositionSet()
        self._by_status: dict[WorkerStatus, PositionSet] = {s: PositionSet() for s in WorkerStatus}

    def get(self, worker_id: str) -> WorkerRecord | None:
        """The worker's record, or None: one dict read (atomic, records immutable)."""
        return self._records.get(worker_id)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> Iterable[WorkerRecord]:
        """Every record, in creation order."""
        return self._records.values()

    def counts(self) -> dict[WorkerStatus, int]:
        """Workers by status: kept as records change, O(1)."""
        return dict(self._counts)

    @property
    def queued(self) -> int:
        """Runs waiting in every worker's queue: kept as records change, O(1)."""
        return self._queued

    def put(self, record: WorkerRecord) -> None:
        """Make ``record`` the worker's current one, keeping the counts and the
        positions in step: the only place a record enters the index."""
        worker_id = record.worker_id
        old = self._records.get(worker_id)
        self._records[worker_id] = record
        self._queued += len(record.queued) - (len(old.queued) if old is not None else 0)
        if old is None:
            position = len(self._ids)
            self._ids.append(worker_id)
            self._position[worker_id] = position
            self._all.add(position)
            self._by_status[record.status].add(position)
            self._counts[record.status] += 1
        elif old.status is not record.status:
            position = self._position[worker_id]
            self._by_status[old.status].discard(position)
            self._by_status[record.status].add(position)
            self._counts[old.status] -= 1
            self._counts[record.status] += 1

    def remove(self, worker_id: str) -> WorkerRecord | None:
        """Forget a worker: its record, its position and its counts. Returns the
        record, or None if there was none."""
        record = self._records.pop(worker_id, None)
        if record is None:
            return None
        position = self._position.pop(worker_id)
        self._ids[position] = None
        self._all.discard(position)
        self._by_status[record.status].discard(position)
        self._counts[record.status] -= 1
        self._queued -= len(record.queued)
        return record

    def page(
        self, *, after: str | None, status: WorkerStatus | None, limit: int
    ) -> tuple[list[WorkerRecord], bool]:
        """Up to ``limit`` workers in creation order past ``after`` (a known id),
        only those in ``status`` if given, and whether more follow.

        O(log n + limit): read from the ordered positions (all workers, or those
        in ``status``)."""
        begin = self._position[after] if after is not None else -1
        index = self._all if status is None else self._by_status[status]
        # One more than asked tells whether another page follows.
        positions = index.after(begin, limit + 1)
        ids, records = self._ids, self._records
        page = [records[typing.cast(str, ids[p])] for p in positions[:limit]]
        return page, len(positions) > limit

    def scan_page(
        self, *, after: str | None, status: WorkerStatus | None, limit: int
    ) -> tuple[list[WorkerRecord], bool]:
        """:meth:`page` by a full scan of the records in creation order: O(n),
        the reference the positions are tested against."""
        ids = list(self._records)
        begin = ids.index(after) + 1 if after is not None else 0
        records = [self._records[w] for w in ids[begin:]]
        matching = [r for r in records if status is None or r.status == status]
        return matching[:limit], len(matching) > limit
