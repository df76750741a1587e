"""A run's lifecycle: the one place a run's status changes.

accept (``queued``: waiting for a thread, or in the worker's FIFO) → start
(``running``) → output (streamed as ``run_output`` events) → finish
(``completed``, ``failed``; its reply becomes one transcript entry); or cancel
(``cancelled``, also of a queued run), time out (``timed_out``, armed in
``timers``), shut down or recover after a crash (``interrupted``). When a run
ends, the worker's next queued run starts. Every verb here runs the state
changes through the state table, the unit of work; ``queue`` and
``recovery`` hold the helpers.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..clock import Clock, new_id
from ..config import RuntimeConfig
from ..domain import (
    USAGE_FIELD,
    BusyPolicy,
    InputKind,
    PendingInput,
    Role,
    Run,
    RunStatus,
    Severity,
    Usage,
    WorkerRecord,
    WorkerStatus,
)
from ..engines import EngineFailure, RunContext
from ..errors import WorkerBusy, WorkerRuntimeError, WorkerStopped
from ..profiles import ProfileRegistry
from ..state import StateTable
from ..stores import Store
from .job import Accepted, Ended, Job
from .output import RunOutput
from .pool import RunPool
from .queue import check_room, status_after, without
from .recovery import kill_left_over, rebuilt_reply
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

    def accept(
        self,
        record: WorkerRecord,
        *,
        role: Role,
        content: str,
        on_busy: BusyPolicy = BusyPolicy.REJECT,
    ) -> Accepted:
        """Acknowledge input (lock held): on an idle worker its run starts (the
        input enters the transcript now); on a busy one it is refused, or with
        ``ENQUEUE`` its run waits in the worker's FIFO."""
        worker_id = record.worker_id
        if record.status is WorkerStatus.STOPPED or self._state.is_stopping(worker_id):
            raise WorkerStopped(
                f"worker {worker_id!r} is stopped", details={"worker_id": worker_id}
            )
        usage = dataclasses.replace(record.usage, inputs=record.usage.inputs + 1)
        run = Run(run_id=new_id("run"), status=RunStatus.QUEUED, queued_at=self._clock.now())
        if record.active_run is not None or record.queued:
            busy_with = record.active_run.run_id if record.active_run else record.queued[0]
            if on_busy is not BusyPolicy.ENQUEUE:
                raise WorkerBusy(
                    f"worker {worker_id!r} is running {busy_with}",
                    details={"worker_id": worker_id, "run_id": busy_with},
                )
            return self._enqueue(record, run, role=role, content=content, usage=usage)
        job = self._begin(record, run, role=role, content=content, usage=usage)
        return Accepted(
            run_id=run.run_id,
            event_id=job.entry.event_id,
            transcript_sequence=job.entry.sequence,
            queued=False,
        )

    def _enqueue(
        self, record: WorkerRecord, run: Run, *, role: Role, content: str, usage: Usage
    ) -> Accepted:
        check_room(record, self._config.max_queued_runs)
        run = dataclasses.replace(
            run, pending=PendingInput(kind=InputKind(role.value), content=content)
        )
        self._store.put_run(record.worker_id, run)
        event = self._state.announce(
            record,
            "run_queued",
            run.run_id,
            {"position": len(record.queued)},
            queued=(*record.queued, run.run_id),
            status=WorkerStatus.RUNNING,
            usage=usage,
        )
        return Accepted(
            run_id=run.run_id, event_id=event.event_id, transcript_sequence=None, queued=True
        )

    def _begin(
        self,
        record: WorkerRecord,
        run: Run,
        *,
        role: Role,
        content: str,
        usage: Usage,
        queued: tuple[str, ...] | None = None,
    ) -> Job:
        """Make ``run`` the worker's active run: its input enters the transcript
        and a job goes to the pool (lock held)."""
        worker_id = record.worker_id
        profile = self._profiles.resolve(record.profile)
        run = dataclasses.replace(run, input_sequence=record.transcript_len, pending=None)
        record, entry = self._state.append_entry(
            record,
            event="input_accepted",
            data={"sequence": record.transcript_len},
            role=role,
            content=content,
            run_id=run.run_id,
            usage=usage,
            status=WorkerStatus.RUNNING,
            active_run=run,
            queued=record.queued if queued is None else queued,
        )
        self._store.put_run(worker_id, run)
        job = Job(
            worker_id=worker_id,
            run_id=run.run_id,
            entry=entry,
            intent=record.intent,
            engine=self._profiles.engine_for(profile),
            timeout_s=profile.timeout_s or self._config.run_timeout_s,
        )
        self._pool.submit(job)
        return job

    def _advance(self, worker_id: str) -> None:
        """Start the worker's next queued run if it may run now (lock held)."""
        state = self._state
        while True:
            record = state.find(worker_id)
            if record is None or record.active_run is not None or not record.queued:
                return
            if (
                record.status is WorkerStatus.STOPPED
                or state.is_stopping(worker_id)
                or state.status != "running"
            ):
                return  # kept queued: a stop clears it, a restart resumes it
            run_id, rest = record.queued[0], record.queued[1:]
            run = self._store.get_run(worker_id, run_id)
            if run is not None and run.pending is not None:
                pending = run.pending
                self._begin(
                    record,
                    run,
                    role=Role(pending.kind.value),
                    content=pending.content,
                    usage=record.usage,
                    queued=rest,
                )
                return
            # Its record lost its input: it cannot run; say so and go on.
            state.diagnose(
                Severity.ERROR, "queued_run_lost", f"queued run {run_id} has no input", worker_id
            )
            state.save_worker(
                record, queued=rest, status=status_after(record, active=False, queued=rest)
            )

    def resume_queued(self) -> None:
        """Start every worker's next queued run (after a restart; lock held)."""
        for worker_id in self._state.ids_with_queue():
            self._advance(worker_id)

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
            self._store.put_run(job.worker_id, run)
            self._state.announce(record, "run_started", job.run_id, active_run=run)
            self._timers.add_deadline(self._clock.monotonic() + job.timeout_s, job)
        return True

    def _stream(self, job: Job, text: str, offset: int) -> None:
        """One ``run_output`` event: the next ``text`` of the reply, at ``offset``
        (lock held; the output's flush holds it)."""
        if self._active(job.worker_id, job.run_id) is None:
            return  # the run was finalized (forced cancel); late output is dropped
        self._state.emit("run_output", job.worker_id, job.run_id, text=text, offset=offset)

    def _record_pgid(self, job: Job, pgid: int) -> None:
        """The engine started a process group: record it durably, so recovery can
        kill what a crash leaves of it. Raising makes the engine kill it now."""
        with self._state.locked():
            record = self._active(job.worker_id, job.run_id)
            if record is None or record.active_run is None:
                raise RuntimeError(f"run {job.run_id} has ended")
            run = dataclasses.replace(record.active_run, pgid=pgid)
            self._store.put_run(job.worker_id, run)
            self._state.save_worker(record, active_run=run)
        self._state.sync()

    def finish(
        self,
        worker_id: str,
        run_id: str,
        status: RunStatus,
        error: str | None,
        *,
        reply: str | None = None,
        advance: bool = True,
    ) -> int | None:
        """End the worker's active run ``run_id`` with ``status`` (lock held): its
        reply (``reply``, else what its job's output kept) becomes one assistant
        entry, announced by the run's final event; then the next queued run starts.

        Returns the final event's id, or None if that run was no longer active
        (someone else finished it first).
        """
        record = self._active(worker_id, run_id)
        if record is None:
            return None
        assert record.active_run is not None
        job = self._pool.active(worker_id)
        if reply is None and job is not None and job.run_id == run_id and job.drain is not None:
            reply = job.drain()
        event_id = self._end(
            record,
            record.active_run,
            status,
            error,
            reply=reply,
            status=status_after(record, active=False, queued=record.queued),
            active_run=None,
            last_error=error if status is not RunStatus.COMPLETED else record.last_error,
        )
        job = self._pool.pop(worker_id, run_id)
        if job is not None:
            job.final_event_id = event_id
            job.final_status = status
        if advance:
            self._advance(worker_id)
        return event_id

    def _end(
        self,
        record: WorkerRecord,
        run: Run,
        ending: RunStatus,
        error: str | None,
        *,
        reply: str | None = None,
        **changes: Any,
    ) -> int:
        """Record ``run``'s end as ``ending`` (lock held), the one sequence every ending shares:
        the final run record, then its reply entry (if any) or its final event,
        the worker saved with its usage and ``changes``, the finished count, a
        diagnostic for a failure. Returns the final event's id."""
        state = self._state
        chars = len(reply or "")
        run = dataclasses.replace(
            run,
            status=ending,
            finished_at=self._clock.now(),
            error=error,
            output_chars=chars,
            pending=None,
            reply_sequence=record.transcript_len if reply else None,
        )
        counter = USAGE_FIELD[ending]
        usage = dataclasses.replace(
            record.usage,
            **{counter: getattr(record.usage, counter) + 1},
            output_chars=record.usage.output_chars + chars,
        )
        data: dict[str, str | int | None] = {"status": ending.value, "error": error}
        # The run record first: if the store refuses it, nothing has changed yet
        # and the run stays active (its deadline finalizes it later).
        self._store.put_run(record.worker_id, run)
        if reply:
            data.update(reply_sequence=record.transcript_len, output_chars=chars)
            _, entry = state.append_entry(
                record,
                event=f"run_{ending.value}",
                data=data,
                role=Role.ASSISTANT,
                content=reply,
                run_id=run.run_id,
                usage=usage,
                last_run=run,
                **changes,
            )
            event_id = entry.event_id
        else:
            event_id = state.announce(
                record,
                f"run_{ending.value}",
                run.run_id,
                data,
                last_run=run,
                usage=usage,
                **changes,
            ).event_id
        state.count_finished(ending)
        if ending in (RunStatus.FAILED, RunStatus.INTERRUPTED):
            severity = Severity.ERROR if ending is RunStatus.FAILED else Severity.WARNING
            message = f"run {run.run_id}: {error}"
            state.diagnose(severity, f"run_{ending.value}", message, record.worker_id)
        return event_id

    def _conclude(
        self,
        job: Job,
        outcome: tuple[RunStatus, str | None] | None = None,
        *,
        fallback: RunStatus = RunStatus.CANCELLED,
        sync: bool = True,
    ) -> int | None:
        """Finish ``job``'s run: as its abort says if it was aborted, else with the
        engine's ``outcome`` (or ``fallback``). The one "finalize after an abort"."""
        with self._state.locked():
            reason = job.signal.reason
            if reason is None and outcome is not None:
                status, error = outcome
            else:
                status = reason or fallback
                error = job.abort_message(status)
            event_id = self.finish(job.worker_id, job.run_id, status, error)
        # Whoever finalized the run first synced it; the store may be closed
        # by now if that was the runtime shutting down.
        if event_id is not None and sync:
            self._state.sync()
        return event_id

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
            locked=self._state.locked,
            sink=lambda text, offset: self._stream(job, text, offset),
            sync=self._state.sync,
        )
        job.drain = output.drain
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
            on_process_start=lambda pgid: self._record_pgid(job, pgid),
        )
        try:
            job.engine.run(ctx, output.write)
            result: tuple[RunStatus, str | None] = (RunStatus.COMPLETED, None)
        except EngineFailure as exc:
            result = (RunStatus.FAILED, str(exc) or "the engine failed")
        except Exception as exc:  # an engine bug must end the run, not the worker
            log.exception("engine %s crashed in run %s", job.engine.name, job.run_id)
            result = (RunStatus.FAILED, f"engine error: {type(exc).__name__}")
        return result

    # -- cancel, shut down, recover ----------------------------------------------

    def cancel(
        self, worker_id: str, reason: str | None, *, only_run_id: str | None = None
    ) -> Ended | None:
        """Abort the worker's active run and wait (bounded) until it has ended;
        with ``only_run_id`` naming a queued run, end that one without starting it.

        Call without the lock. Returns None if no run was active, or if
        ``only_run_id`` is given and names neither the active run nor a queued one.
        """
        why = f"cancelled: {reason}" if reason else "cancelled"
        with self._state.locked():
            record = self._state.worker(worker_id)
            if only_run_id is not None and only_run_id in record.queued:
                return self._cancel_queued(record, only_run_id, why)
            run = record.active_run
            if run is None or only_run_id not in (None, run.run_id):
                return None
            job = self._pool.active(worker_id)
            if job is not None and job.signal.abort(RunStatus.CANCELLED):
                job.abort_error = why
            if job is None or run.status is RunStatus.QUEUED:
                # Never started (or left over from recovery): nothing to stop, end it now.
                event_id = self.finish(worker_id, run.run_id, RunStatus.CANCELLED, why)
                return Ended(run_id=run.run_id, status=RunStatus.CANCELLED, event_id=event_id)
        # Wait up to the grace period for the aborted engine to return, then
        # finalize the run whether or not it did.
        if not job.returned.wait(self._config.cancel_grace_s):
            log.warning("engine for run %s did not stop within the grace period", job.run_id)
        self._conclude(job)
        return Ended(run_id=run.run_id, status=job.final_status, event_id=job.final_event_id)

    def _cancel_queued(self, record: WorkerRecord, run_id: str, why: str) -> Ended:
        """End queued run ``run_id`` ``cancelled``: it never starts, its input never
        enters the transcript (lock held)."""
        queued = without(record.queued, run_id)
        stored = self._store.get_run(record.worker_id, run_id)
        event_id = self._end(
            record,
            stored or Run(run_id=run_id, status=RunStatus.QUEUED),
            RunStatus.CANCELLED,
            why,
            queued=queued,
            status=status_after(record, active=record.active_run is not None, queued=queued),
        )
        return Ended(run_id=run_id, status=RunStatus.CANCELLED, event_id=event_id)

    def clear_queue(self, worker_id: str, reason: str | None) -> list[str]:
        """Cancel every queued run of the worker, oldest first (a stop; lock held)."""
        why = f"cancelled: {reason}" if reason else "cancelled"
        cancelled = []
        for run_id in self._state.worker(worker_id).queued:
            self._cancel_queued(self._state.worker(worker_id), run_id, why)
            cancelled.append(run_id)
        return cancelled

    def shutdown(self) -> None:
        """End every active run ``interrupted`` (SPEC section 9), then stop the pool
        and the timers. Queued runs stay queued: a restart resumes them."""
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

    def recover(self, records: list[WorkerRecord]) -> None:
        """After a restart (lock held): end the runs the last process left active
        ``interrupted`` — they cannot resume — with the reply they had streamed,
        and kill what is left of their process groups. Queued runs wait for
        :meth:`resume_queued`."""
        for record in records:
            run = record.active_run
            if run is None:
                continue
            kill_left_over(run)
            reply = rebuilt_reply(self._store, record.worker_id, run)
            self.finish(
                record.worker_id,
                run.run_id,
                RunStatus.INTERRUPTED,
                CRASH_ERROR,
                reply=reply,
                advance=False,
            )
