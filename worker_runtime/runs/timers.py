"""Timers: run deadlines (where a run times out) and delayed output flushes.

One thread runs callbacks at monotonic times for every run of the runtime. At
its deadline a run is aborted as ``timed_out``; if its engine has not returned
a grace period later, ``overdue`` finalizes it anyway so the worker never
stays stuck.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from ..clock import Clock
from ..domain import RunStatus
from ..errors import WorkerRuntimeError
from .job import Job

__all__ = ["Timers"]

log = logging.getLogger("worker_runtime.runs")


class Timers:
    """Callbacks at monotonic times, each belonging to a job. Entries of
    finished jobs are skipped, and pruned as the heap grows."""

    MIN_COMPACT = 256

    def __init__(self, *, clock: Clock, grace_s: float, overdue: Callable[[Job], None]) -> None:
        self._clock = clock
        self._grace_s = grace_s
        self._overdue = overdue
        self._heap: list[tuple[float, int, Job, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._compact_at = self.MIN_COMPACT

    def call_at(self, when: float, job: Job, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the timer thread at ``when`` unless ``job`` has ended."""
        with self._cond:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wr-timers", daemon=True)
                self._thread.start()
            if len(self._heap) >= self._compact_at:
                self._compact()
            heapq.heappush(self._heap, (when, next(self._seq), job, callback))
            self._cond.notify()

    def add_deadline(self, deadline: float, job: Job) -> None:
        """Time ``job`` out at ``deadline``; call ``overdue(job)`` a grace period
        later if its engine ignored the abort."""
        self.call_at(deadline, job, lambda: self._time_out(job))

    def _time_out(self, job: Job) -> None:
        job.signal.abort(RunStatus.TIMED_OUT)
        grace_end = self._clock.monotonic() + self._grace_s
        self.call_at(grace_end, job, lambda: self._overdue(job))

    def _compact(self) -> None:
        # Finished runs' entries would stay until their time, holding their
        # input; drop them now and then so memory follows the active runs only.
        self._heap = [item for item in self._heap if item[2].final_status is None]
        heapq.heapify(self._heap)
        self._compact_at = max(self.MIN_COMPACT, 2 * len(self._heap))

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self._clock.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
                _, _, job, callback = heapq.heappop(self._heap)
            # Not ``job.returned``: an engine that returned but whose end could
            # not be recorded (store or lock failure) still needs finalizing.
            if job.final_status is not None:
                continue
            try:
                callback()
            except WorkerRuntimeError as exc:
                log.error("timer for run %s failed: %s", job.run_id, exc.message)
