"""A worker's FIFO of queued runs (``on_busy: "enqueue"``), as pure helpers.

The queue is ``WorkerRecord.queued``: run ids, oldest first, each naming a
``queued`` run record that holds its input (``Run.pending``) until the run
starts. The lifecycle changes it (enqueue, start the next, cancel one, clear on
stop); these helpers say what the queue and the worker's status become.
"""

from __future__ import annotations

from ..domain import WorkerRecord, WorkerStatus
from ..errors import WorkerBusy

__all__ = ["check_room", "status_after", "without"]


def check_room(record: WorkerRecord, max_queued_runs: int) -> None:
    """Raise ``WorkerBusy`` with ``details.queue_full`` if the queue has no room."""
    if len(record.queued) >= max_queued_runs:
        raise WorkerBusy(
            f"worker {record.worker_id!r} has {len(record.queued)} runs queued, the maximum",
            details={
                "worker_id": record.worker_id,
                "queue_full": True,
                "max_queued_runs": max_queued_runs,
            },
        )


def without(queued: tuple[str, ...], run_id: str) -> tuple[str, ...]:
    """The queue with ``run_id`` taken out (order kept)."""
    return tuple(r for r in queued if r != run_id)


def status_after(record: WorkerRecord, *, active: bool, queued: tuple[str, ...]) -> WorkerStatus:
    """The worker's status once its runs are as given: stopped stays stopped
    (terminal); else running while a run is active or queued."""
    if record.status is WorkerStatus.STOPPED:
        return WorkerStatus.STOPPED
    return WorkerStatus.RUNNING if active or queued else WorkerStatus.IDLE
