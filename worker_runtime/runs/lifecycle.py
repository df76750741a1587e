"""A run's lifecycle: the one place a run's status changes.

accept (``queued``) → start (``running``) → output → finish (``completed``,
``failed``); or cancel (``cancelled``), time out (``timed_out``, armed in
``timers``), shut down or recover after a crash (``interrupted``). Every
verb here runs the state changes through the state table, the unit of work.
"""

from __future__ import annotations

import dataclasses
import logging

from ..clock import Clock, new_id
from ..config import RuntimeConfig
from ..domain import (
    USAGE_FIELD,
    Event,
    Role,
    Run,
    RunStatus,
    Severity,
    WorkerRecord,
    WorkerStatus,
)
from ..engines import EngineFailure, RunContext
from ..errors import WorkerBusy, WorkerRuntimeError, WorkerStopped
from ..profiles import ProfileRegistry
from ..state import StateTable
from ..stores import Store
from .job import Ended, Job
from .output import RunOutput
from .pool import RunPool
from .timers import Timers

__all__ = ["RunLifecycle"]

log = logging.getLogger("worker_runtime.runs")

SHUTDOWN_STATUS = RunStatus.INTERRUPTED
SHUTDOWN_ERROR = "interrupted: the runtime is shutting down"
CRASH_ERROR = "the runtime stopped during the run"


class RunLifecycle:
    """Every run of one runtime, from accepted input to its final status."""

    def __init__(
        self,
        *,
        state: StateTable,
        store: Store,
        profiles: ProfileRegistry,
        clock: Clock,
        config: RuntimeConfig,
    ) -> None:
        self._state = state
        self._profiles = profiles
        self._store = store
        self._clock = clock
        self._config = config
        self._pool = RunPool(config.max_concurrent_runs, self._execute)
        self._timers = Timers(
            clock=clock,
            grace_s=config.cancel_grace_s,
            overdue=self._overdue,
        )

    def count(self) -> int:
        """Runs accepted and not yet finished."""
        return self._pool.count()

    # -- accept, start, output, finish -------------------------------------------

    def accept(self, record: WorkerRecord, *, role: Role, content: str) -> Job:
        """Append the input to the idle worker's transcript and queue a run of
        its profile's engine (lock held)."""
        worker_id = record.worker_id
        if record.status is WorkerStatus.STOPPED or self._state.is_stopping(worker_id):
            raise WorkerStopped(
                f"worker {worker_id!r} is stopped", details={"worker_id": worker_id}
            )
        if record.active_run is not None:
            raise WorkerBusy(
                f"worker {worker_id!r} is running {record.active_run.run_id}",
                details={"worker_id": worker_id, "run_id": record.active_run.run_id},
            )
        profile = self._profiles.resolve(record.profile)
        run_id, now, sequence = new_id("run"), self._clock.now(), record.transcript_len
        run = Run(run_id=run_id, status=RunStatus.QUEUED, input_sequence=sequence, started_at=now)
        record, entry = self._state.append_entry(
            record,
            event="input_accepted",
            data={"sequence": sequence},
            at=now,
            role=role,
            content=content,
            run_id=run_id,
            usage=dataclasses.replace(record.usage, inputs=record.usage.inputs + 1),
            status=WorkerStatus.RUNNING,
            active_run=run,
        )
        job = Job(
            worker_id=worker_id,
            run_id=run_id,
            entry=entry,
            intent=record.intent,
            engine=self._profiles.engine_for(profile),
            timeout_s=profile.timeout_s or self._config.run_timeout_s,
        )
        self._pool.submit(job)
        return job

    def _active(self, worker_id: str, run_id: str) -> WorkerRecord | None:
        """The worker's record if ``run_id`` is still its active run (lock held)."""
        record = self._state.find(worker_id)
        if record is None or record.active_run is None or record.active_run.run_id != run_id:
            return None
        return record

    def _start(self, job: Job) -> bool:
        with self._state.locked():
            record = self._active(job.worker_id, job.run_id)
            if record is None or job.signal.is_set():
                return False
            assert record.active_run is not None
            run = dataclasses.replace(
                record.active_run, status=RunStatus.RUNNING, started_at=self._clock.now()
            )
            event = self._state.emit("run_started", job.worker_id, job.run_id)
            self._state.save_worker(record, active_run=run, last_event_id=event.event_id)
            self._timers.add_deadline(self._clock.monotonic() + job.timeout_s, job)
        return True

    def _append_output(self, job: Job, text: str) -> None:
        with self._state.locked():
            record = self._active(job.worker_id, job.run_id)
            if record is None:
                return  # the run was finalized (forced cancel); late output is dropped
            self._state.append_entry(
                record,
                event="output_appended",
                data={"chars": len(text)},
                role=Role.ASSISTANT,
                content=text,
                run_id=job.run_id,
                usage=dataclasses.replace(
                    record.usage, output_chars=record.usage.output_chars + len(text)
                ),
            )

    def finish(
        self, worker_id: str, run_id: str, status: RunStatus, error: str | None
    ) -> Event | None:
        """End the worker's active run ``run_id`` with ``status`` (lock held).

        Returns the run's final event, or None if that run was no longer active
        (someone else finished it first).
        """
        record = self._active(worker_id, run_id)
        if record is None:
            return None
        assert record.active_run is not None
        run = dataclasses.replace(
            record.active_run, status=status, finished_at=self._clock.now(), error=error
        )
        self._store.put_run(worker_id, run)
        state = self._state
        event = state.emit(
            f"run_{status.value}", worker_id, run_id, status=status.value, error=error
        )
        state.count_finished(status)
        usage_field = USAGE_FIELD[status]
        usage = dataclasses.replace(
            record.usage, **{usage_field: getattr(record.usage, usage_field) + 1}
        )
        state.save_worker(
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
            state.diagnose(severity, f"run_{status.value}", f"run {run_id}: {error}", worker_id)
        job = self._pool.pop(worker_id, run_id)
        if job is not None:
            job.final_event_id = event.event_id
            job.final_status = status
        return event

    def _conclude(
        self,
        job: Job,
        outcome: tuple[RunStatus, str | None] | None = None,
        *,
        fallback: RunStatus = RunStatus.CANCELLED,
        sync: bool = True,
    ) -> Event | None:
        """Finish ``job``'s run: as its abort says if it was aborted, else with the
        engine's ``outcome`` (or ``fallback``). The one "finalize after an abort"."""
        with self._state.locked():
            reason = job.signal.reason
            if reason is None and outcome is not None:
                status, error = outcome
            else:
                status = reason or fallback
                error = job.abort_message(status)
            event = self.finish(job.worker_id, job.run_id, status, error)
        # Whoever finalized the run first synced it; the store may be closed
        # by now if that was the runtime shutting down.
        if event is not None and sync:
            self._state.sync()
        return event

    def _overdue(self, job: Job) -> None:
        """A grace period past the deadline, the engine has not returned: end the run."""
        self._conclude(job, fallback=RunStatus.TIMED_OUT)

    # -- execution ---------------------------------------------------------------

    def _execute(self, job: Job) -> None:
        """A pool thread: start the run, call the engine, record how it ended."""
        try:
            if self._start(job):
                self._conclude(job, self._call_engine(job))
        except WorkerRuntimeError as exc:  # store failure or lock timeout: already typed
            log.error("run %s could not be recorded: %s", job.run_id, exc.message)

    def _call_engine(self, job: Job) -> tuple[RunStatus, str | None]:
        output = RunOutput(
            job,
            clock=self._clock,
            max_chars=self._config.max_output_chars,
            schedule=self._timers.call_at,
            sink=lambda text: self._append_output(job, text),
        )
        store = self._store
        ctx = RunContext(
            runtime_id=self._state.runtime_id,
            worker_id=job.worker_id,
            run_id=job.run_id,
            input=job.entry,
            intent=job.intent,
            deadline=self._clock.monotonic() + job.timeout_s,
            signal=job.signal,
            history=lambda: store.read_transcript(job.worker_id, 0, job.entry.sequence + 1),
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

    # -- cancel, shut down, recover ----------------------------------------------

    def cancel(
        self, worker_id: str, reason: str | None, *, only_run_id: str | None = None
    ) -> Ended | None:
        """Abort the worker's active run and wait (bounded) until it has ended.

        Call without the lock. Returns None if no run was active, or if
        ``only_run_id`` is given and the active run is another one.
        """
        why = f"cancelled: {reason}" if reason else "cancelled"
        with self._state.locked():
            run = self._state.worker(worker_id).active_run
            if run is None or only_run_id not in (None, run.run_id):
                return None
            job = self._pool.active(worker_id)
            if job is not None and job.signal.abort(RunStatus.CANCELLED):
                job.abort_error = why
            if job is None or run.status is RunStatus.QUEUED:
                # Never started (or left over from recovery): nothing to stop, end it now.
                event = self.finish(worker_id, run.run_id, RunStatus.CANCELLED, why)
                return Ended(
                    run_id=run.run_id,
                    status=RunStatus.CANCELLED,
                    event_id=event.event_id if event else None,
                )
        # Wait up to the grace period for the aborted engine to return, then
        # finalize the run whether or not it did.
        if not job.returned.wait(self._config.cancel_grace_s):
            log.warning("engine for run %s did not stop within the grace period", job.run_id)
        self._conclude(job)
        return Ended(run_id=run.run_id, status=job.final_status, event_id=job.final_event_id)

    def shutdown(self) -> None:
        """End every run ``interrupted`` (SPEC section 9), then stop the pool and the timers."""
        with self._state.locked():  # run threads change the jobs under this lock
            jobs = self._pool.jobs()
            for job in jobs:
                if job.signal.abort(SHUTDOWN_STATUS):
                    job.abort_error = SHUTDOWN_ERROR
                record = self._state.find(job.worker_id)
                run = record.active_run if record else None
                if run is not None and run.status is RunStatus.QUEUED:
                    self.finish(job.worker_id, job.run_id, SHUTDOWN_STATUS, SHUTDOWN_ERROR)
        # One grace period for all engines, not one each.
        deadline = self._clock.monotonic() + self._config.cancel_grace_s
        for job in jobs:
            job.returned.wait(max(deadline - self._clock.monotonic(), 0.0))
            self._conclude(job, fallback=SHUTDOWN_STATUS, sync=False)
        self._state.sync()
        self._timers.stop()
        self._pool.shutdown()

    def recover_interrupted(self, records: list[WorkerRecord]) -> None:
        """End the runs a crashed process left active: they cannot resume (lock held)."""
        for record in records:
            assert record.active_run is not None
            self.finish(
                record.worker_id, record.active_run.run_id, RunStatus.INTERRUPTED, CRASH_ERROR
            )
