"""Runs: execute inputs on a bounded pool, enforce deadlines, cancel for real.

Each accepted input becomes a :class:`Job` on a fixed-size thread pool (runs
never execute on the caller's thread, so a server thread is never held by an
engine). A single watchdog thread enforces deadlines: at the deadline it
aborts the run; if the engine has not returned a grace period later, the run
is finalized anyway so the worker never stays stuck.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .domain import Event, RunStatus, Severity, TranscriptEntry, WorkerIntent, WorkerStatus
from .engines import Engine, EngineFailure, RunContext, RunSignal
from .errors import WorkerRuntimeError
from .output import RunOutput

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["Ended", "Job", "RunManager", "cancel_active_run", "finish_run"]

log = logging.getLogger("worker_runtime.runs")

_USAGE_FIELD = {
    RunStatus.COMPLETED: "runs_completed",
    RunStatus.FAILED: "runs_failed",
    RunStatus.CANCELLED: "runs_cancelled",
    RunStatus.TIMED_OUT: "runs_timed_out",
    RunStatus.INTERRUPTED: "runs_interrupted",
}


@dataclass(kw_only=True, eq=False)
class Job:
    """One run in flight: what to execute and how to stop it."""

    worker_id: str
    run_id: str
    engine: Engine
    timeout_s: float
    entry: TranscriptEntry
    intent: WorkerIntent
    signal: RunSignal = field(default_factory=RunSignal)
    returned: threading.Event = field(default_factory=threading.Event)
    abort_error: str | None = None
    """The cancel's message (with the caller's reason), set with the signal."""
    final_event_id: int | None = None
    final_status: RunStatus | None = None


def finish_run(
    rt: Runtime, worker_id: str, run_id: str, status: RunStatus, error: str | None
) -> Event | None:
    """End the worker's active run ``run_id`` with ``status`` (lock held).

    Returns the run's final event, or None if that run was no longer active
    (someone else finished it first).
    """
    record = rt.workers.get(worker_id)
    if record is None or record.active_run is None or record.active_run.run_id != run_id:
        return None
    run = dataclasses.replace(
        record.active_run, status=status, finished_at=rt.clock.now(), error=error
    )
    rt.store.put_run(worker_id, run)
    event = rt.emit(f"run_{status.value}", worker_id, run_id, status=status.value, error=error)
    usage_field = _USAGE_FIELD[status]
    usage = dataclasses.replace(
        record.usage, **{usage_field: getattr(record.usage, usage_field) + 1}
    )
    rt.save_worker(
        record,
        # Stopped is terminal: ending a run never brings a worker back.
        status=record.status if record.status is WorkerStatus.STOPPED else WorkerStatus.IDLE,
        active_run=None,
        last_run=run,
        last_error=error if status is not RunStatus.COMPLETED else record.last_error,
        usage=usage,
        last_event_id=event.event_id,
    )
    if status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        severity = Severity.ERROR if status is RunStatus.FAILED else Severity.WARNING
        rt.diagnose(severity, f"run_{status.value}", f"run {run_id}: {error}", worker_id)
    job = rt.runs.pop(worker_id, run_id)
    if job is not None:
        job.final_event_id = event.event_id
        job.final_status = status
    return event


@dataclass(frozen=True, kw_only=True, slots=True)
class Ended:
    """How a cancelled run ended: its final status and the event that said so."""

    run_id: str
    status: RunStatus | None
    event_id: int | None


def cancel_active_run(
    rt: Runtime, worker_id: str, reason: str | None, *, only_run_id: str | None = None
) -> Ended | None:
    """Abort the worker's active run and wait (bounded) until it has ended.

    Call without the lock. Returns None if no run was active, or if
    ``only_run_id`` is given and the active run is another one.
    """
    why = f"cancelled: {reason}" if reason else "cancelled"
    with rt.locked():
        run = rt.worker(worker_id).active_run
        if run is None or only_run_id not in (None, run.run_id):
            return None
        job = rt.runs.active(worker_id)
        if job is not None and job.signal.abort(RunStatus.CANCELLED):
            job.abort_error = why
        if job is None or run.status is RunStatus.QUEUED:
            # Never started (or left over from recovery): nothing to stop, end it now.
            event = finish_run(rt, worker_id, run.run_id, RunStatus.CANCELLED, why)
            return Ended(
                run_id=run.run_id,
                status=RunStatus.CANCELLED,
                event_id=event.event_id if event else None,
            )
    rt.runs.settle(job)
    return Ended(run_id=run.run_id, status=job.final_status, event_id=job.final_event_id)


class RunManager:
    """The run pool and the watchdog of one runtime."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._jobs: dict[str, Job] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=rt.config.max_concurrent_runs, thread_name_prefix="wr-run"
        )
        self.timers = Timers(self)

    def submit(self, job: Job) -> None:
        """Queue ``job`` (lock held)."""
        self._jobs[job.worker_id] = job
        self._pool.submit(self._execute, job)

    def active(self, worker_id: str) -> Job | None:
        return self._jobs.get(worker_id)

    def pop(self, worker_id: str, run_id: str) -> Job | None:
        job = self._jobs.get(worker_id)
        if job is None or job.run_id != run_id:
            return None
        return self._jobs.pop(worker_id)

    def count(self) -> int:
        return len(self._jobs)

    def settle(self, job: Job) -> None:
        """Wait up to the grace period for an aborted engine to return, then
        finalize the run with the signal's reason whether or not it did."""
        if not job.returned.wait(self._rt.config.cancel_grace_s):
            log.warning("engine for run %s did not stop within the grace period", job.run_id)
        with self._rt.locked():
            reason = job.signal.reason or RunStatus.CANCELLED
            finish_run(self._rt, job.worker_id, job.run_id, reason, _abort_message(reason, job))
        self._rt.sync()

    def shutdown(self) -> None:
        """Cancel every active run and stop the pool and the watchdog."""
        rt, why = self._rt, "cancelled: the runtime is shutting down"
        with rt.locked():  # run threads change ``_jobs`` under this lock
            jobs = list(self._jobs.values())
            for job in jobs:
                job.signal.abort(RunStatus.CANCELLED)
                run = rt.workers[job.worker_id].active_run
                if run is not None and run.status is RunStatus.QUEUED:
                    finish_run(rt, job.worker_id, job.run_id, RunStatus.CANCELLED, why)
        # One grace period for all engines, not one each.
        deadline = rt.clock.monotonic() + rt.config.cancel_grace_s
        for job in jobs:
            job.returned.wait(max(deadline - rt.clock.monotonic(), 0.0))
            with rt.locked():
                reason = job.signal.reason or RunStatus.CANCELLED
                finish_run(rt, job.worker_id, job.run_id, reason, why)
        rt.sync()
        self.timers.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _execute(self, job: Job) -> None:
        try:
            if self._start(job):
                status, error = self._call_engine(job)
                with self._rt.locked():
                    reason = job.signal.reason
                    if reason is not None:
                        status, error = reason, _abort_message(reason, job)
                    ended = finish_run(self._rt, job.worker_id, job.run_id, status, error)
                # Whoever finalized the run first synced it; the store may be
                # closed by now if that was the runtime shutting down.
                if ended is not None:
                    self._rt.sync()
        except WorkerRuntimeError as exc:  # store failure or lock timeout: already typed
            log.error("run %s could not be recorded: %s", job.run_id, exc.message)
        finally:
            job.returned.set()

    def _start(self, job: Job) -> bool:
        rt = self._rt
        with rt.locked():
            record = rt.workers.get(job.worker_id)
            run = record.active_run if record else None
            if record is None or run is None or run.run_id != job.run_id or job.signal.is_set():
                return False
            run = dataclasses.replace(run, status=RunStatus.RUNNING, started_at=rt.clock.now())
            event = rt.emit("run_started", job.worker_id, job.run_id)
            rt.save_worker(record, active_run=run, last_event_id=event.event_id)
            self.timers.add_deadline(rt.clock.monotonic() + job.timeout_s, job)
        return True

    def _call_engine(self, job: Job) -> tuple[RunStatus, str | None]:
        rt = self._rt
        output = RunOutput(rt, job)
        ctx = RunContext(
            runtime_id=rt.runtime_id,
            worker_id=job.worker_id,
            run_id=job.run_id,
            input=job.entry,
            intent=job.intent,
            deadline=rt.clock.monotonic() + job.timeout_s,
            signal=job.signal,
            history=lambda: rt.store.read_transcript(job.worker_id, 0, job.entry.sequence + 1),
        )
        try:
            job.engine.run(ctx, output.write)
            result: tuple[RunStatus, str | None] = (RunStatus.COMPLETED, None)
        except EngineFailure as exc:
            result = (RunStatus.FAILED, str(exc) or "the engine failed")
        except Exception as exc:  # an engine bug must end the run, not the worker
            log.exception("engine %s crashed in run %s", job.engine.name, job.run_id)
            result = (RunStatus.FAILED, f"engine error: {type(exc).__name__}")
        output.flush()
        return result


def _abort_message(reason: RunStatus, job: Job) -> str:
    if reason is RunStatus.TIMED_OUT:
        return f"timed out after {job.timeout_s:g}s"
    return job.abort_error or "cancelled"


class Timers:
    """One thread that runs callbacks at monotonic times, for every run of the
    runtime: deadlines (abort, then finalize a grace period later) and delayed
    output flushes. Each entry belongs to a job; entries of finished jobs are
    skipped, and pruned as the heap grows."""

    MIN_COMPACT = 256

    def __init__(self, manager: RunManager) -> None:
        self._manager = manager
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
        """Abort ``job`` at ``deadline``; finalize it a grace period later if its
        engine ignored the abort."""
        self.call_at(deadline, job, lambda: self._expire(job))

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
        clock = self._manager._rt.clock
        while True:
            with self._cond:
                while not self._stopped:
                    now = clock.monotonic()
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

    def _expire(self, job: Job) -> None:
        rt = self._manager._rt
        job.signal.abort(RunStatus.TIMED_OUT)
        self.call_at(rt.clock.monotonic() + rt.config.cancel_grace_s, job, lambda: self._force(job))

    def _force(self, job: Job) -> None:
        rt = self._manager._rt
        with rt.locked():
            reason = job.signal.reason or RunStatus.TIMED_OUT
            finish_run(rt, job.worker_id, job.run_id, reason, _abort_message(reason, job))
        rt.sync()
