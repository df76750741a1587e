"""The run pool: a bounded set of threads that execute jobs, and each worker's job.

Runs never execute on the caller's thread, so a server thread is never held by
an engine. A worker has at most one job today; this per-worker slot is where a
FIFO of queued inputs goes when runs gain a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .job import Job

__all__ = ["RunPool"]


class RunPool:
    """Executes ``execute(job)`` on ``max_workers`` threads; tracks each worker's job.

    The job table is changed only with the state lock held (by the lifecycle),
    so it needs no lock of its own.
    """

    def __init__(self, max_workers: int, execute: Callable[[Job], None]) -> None:
        self._execute = execute
        self._jobs: dict[str, Job] = {}
        self._threads = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wr-run")

    def submit(self, job: Job) -> None:
        """Make ``job`` its worker's job and queue it for a thread (lock held)."""
        self._jobs[job.worker_id] = job
        self._threads.submit(self._run, job)

    def active(self, worker_id: str) -> Job | None:
        """The worker's job, running or waiting for a thread."""
        return self._jobs.get(worker_id)

    def pop(self, worker_id: str, run_id: str) -> Job | None:
        """Forget the worker's job if it is run ``run_id`` (lock held)."""
        job = self._jobs.get(worker_id)
        if job is None or job.run_id != run_id:
            return None
        return self._jobs.pop(worker_id)

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def count(self) -> int:
        return len(self._jobs)

    def shutdown(self) -> None:
        """Drop jobs not yet started and let the threads end."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> None:
        try:
            self._execute(job)
        finally:
            job.returned.set()
