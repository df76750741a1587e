"""A hypothesis state machine driving the dispatcher against a plain model
(run by ``tests/test_state_machine.py``, on the fs store by
``tests/test_fs_state_machine.py``).

Rules create workers, send input (run to completion, held open by the gate
engine, or queued behind a busy worker's run with ``on_busy: enqueue``),
cancel (the active run, or any run by id: queued ones end without starting),
stop (which cancels the queue too), delete stopped workers (the id may then be
created again), and read transcripts, events, listings and run history;
invariants compare the runtime with the model after every step (SPEC section
7: queue order and bound, conversation order, run records).

Built for reuse: subclass :class:`RuntimeMachine`, override ``open_runtime``
(e.g. to use the filesystem store) and add a rule that calls ``restart()``;
every rule and invariant then runs against that store too. Set ``target =
"remote"`` and every command goes over HTTP instead: the runtime is served on a
real waitress server on loopback (``support.served``) and dispatched to through
a ``RemoteRuntime``, while the machine keeps driving its gate engine and looking
at its state in-process; errors must then be the same class and code, and an
extra invariant compares the remote answers with in-process ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from adapters.resources import enveloped
from worker_runtime import Runtime, RuntimeAPI, errors
from worker_runtime import commands as c
from worker_runtime.commands import RESULT_TYPES
from worker_runtime.domain import BusyPolicy, Role, RunStatus, WorkerStatus
from worker_runtime.testing import (
    TERMINAL_EVENTS,
    GateEngine,
    make_runtime,
    named,
    wait_for_run_end,
)
from worker_runtime.wire import encode_command, to_json, validate_result

from . import strategies
from .served import Served

ENCODE = enveloped("worker")
"""The HTTP adapter's encoding of an enveloped answer (one function: a cache key)."""

POOL = 8
"""Run pool size; the machine holds at most ``POOL - 1`` runs open at once, so a
run it releases always has a thread to finish on."""

MAX_QUEUED = 2
"""``max_queued_runs``: small, so that a full queue (``queue_full``) is reached often."""

Entry = tuple[Role, str, str | None]
"""A transcript entry as the model sees it: role, content, run id."""


@dataclass
class ModelWorker:
    """What the runtime should say about one worker."""

    status: WorkerStatus = WorkerStatus.IDLE
    transcript: list[Entry] = field(default_factory=list)
    active_run: str | None = None
    queue: list[str] = field(default_factory=list)  # queued run ids, oldest first
    inputs: dict[str, str] = field(default_factory=dict)  # run id -> its input
    runs: list[str] = field(default_factory=list)  # run ids in acknowledgement order
    finished: dict[str, RunStatus] = field(default_factory=dict)
    input_sequence: dict[str, int] = field(default_factory=dict)
    reply_sequence: dict[str, int] = field(default_factory=dict)

    def accept(self, run_id: str, content: str) -> None:
        self.runs.append(run_id)
        self.inputs[run_id] = content

    def start(self, run_id: str) -> None:
        """``run_id`` becomes the active run: its input enters the transcript now."""
        self.input_sequence[run_id] = len(self.transcript)
        self.transcript.append((Role.USER, self.inputs[run_id], run_id))
        self.active_run, self.status = run_id, WorkerStatus.RUNNING

    def reply(self, text: str) -> None:
        assert self.active_run is not None
        self.reply_sequence[self.active_run] = len(self.transcript)
        self.transcript.append((Role.ASSISTANT, text, self.active_run))

    def end_run(self, status: RunStatus, next_status: WorkerStatus) -> str:
        """End the active run; an idle worker then starts its next queued run."""
        assert self.active_run is not None
        run_id, self.active_run = self.active_run, None
        self.finished[run_id] = status
        self.status = next_status
        if next_status is WorkerStatus.IDLE and self.queue:
            self.start(self.queue.pop(0))
        return run_id

    def cancel_queued(self, run_id: str) -> None:
        self.queue.remove(run_id)
        self.finished[run_id] = RunStatus.CANCELLED
        if self.active_run is None and not self.queue and self.status is WorkerStatus.RUNNING:
            self.status = WorkerStatus.IDLE

    def run_statuses(self, run_id: str) -> set[RunStatus]:
        """What the runtime may say of ``run_id`` now (the active run moves from
        ``queued`` to ``running`` on its pool thread, when it likes)."""
        if run_id in self.finished:
            return {self.finished[run_id]}
        if run_id == self.active_run:
            return {RunStatus.QUEUED, RunStatus.RUNNING}
        assert run_id in self.queue
        return {RunStatus.QUEUED}


class RuntimeMachine(RuleBasedStateMachine):
    """The dispatcher against a dict of :class:`ModelWorker` (in creation order)."""

    workers = Bundle("workers")

    target = "in-process"
    """What the commands go through: the runtime itself, or (``remote``) a
    ``RemoteRuntime`` talking to it on loopback."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = GateEngine()
        self.model: dict[str, ModelWorker] = {}
        self.ever_stopped: set[str] = set()
        self.next_event = 0  # cursor of the events not yet checked
        self.last_event = 0
        self.run_ends: dict[str, str] = {}  # run_id -> its terminal event type
        self.served: Served | None = None
        self.rt = self.open_runtime()
        self.api = self.connect()
        self.max_queued = self.rt.context.config.max_queued_runs

    # -- hooks for subclasses ------------------------------------------------------

    def open_runtime(self) -> Runtime:
        """The runtime under test; called again by ``restart``. Its profiles must
        include a named ``gate`` profile running ``self.gate``."""
        return make_runtime(
            {"gate": self.gate}, max_concurrent_runs=POOL, max_queued_runs=MAX_QUEUED
        )

    def connect(self) -> RuntimeAPI:
        """What the rules dispatch through: ``self.rt``, or a client of it served
        on loopback (``target = "remote"``)."""
        if self.target == "in-process":
            return self.rt
        assert self.target == "remote", self.target
        self.served = Served(self.rt)
        return self.served.client()

    def disconnect(self) -> None:
        if self.served is not None:
            self.api.close()
            self.served.close()
            self.served = None

    def restart(self) -> None:
        """Close the runtime and open it again (for a durable store). Closing
        interrupts the runs still held open (SPEC section 9, revision 2); the
        queued runs stay queued and the next one starts on reopening."""
        self.disconnect()
        self.rt.close()
        for worker in self.model.values():
            if worker.active_run is not None:
                worker.end_run(RunStatus.INTERRUPTED, WorkerStatus.IDLE)
        self.rt = self.open_runtime()
        self.api = self.connect()

    def teardown(self) -> None:
        self.gate.open_all()
        try:
            self.disconnect()
        finally:
            self.rt.close()

    # -- calling the runtime -------------------------------------------------------

    def call(self, command: c.Command[Any]) -> Any:
        """Dispatch ``command``; its result must fit the result schema."""
        result = self.api.dispatch(command)
        validate_result(to_json(result), RESULT_TYPES[type(command)].__name__)
        return result

    def fails(self, code: str, command: c.Command[Any]) -> errors.WorkerRuntimeError:
        """``command`` must fail with ``code``, raised as the class of that code
        (on both targets: the remote one picks the class by the code it read)."""
        try:
            self.call(command)
        except errors.WorkerRuntimeError as exc:
            assert exc.code == code, f"{command}: expected {code}, got {exc.code}"
            assert type(exc).code == code, f"{command}: {code} raised as {type(exc).__name__}"
            validate_result(exc.to_json(), "Error")
            return exc
        raise AssertionError(f"{command} should have failed with {code}")

    def running(self) -> list[str]:
        """Workers with an active run (each holds a pool thread)."""
        return [w for w, m in self.model.items() if m.active_run is not None]

    def with_runs(self) -> list[str]:
        return [w for w, m in self.model.items() if m.runs]

    # -- rules ---------------------------------------------------------------------

    @initialize()
    def check_fresh_runtime(self) -> None:
        info = self.call(c.GetRuntime())
        assert info.status == "running"

    @rule(target=workers, worker_id=st.none() | strategies.short_ids)
    def create(self, worker_id: str | None) -> Any:
        command = c.CreateWorker(worker_id=worker_id, profile=named("gate"))
        if worker_id in self.model:
            self.fails("worker_exists", command)
            return multiple()
        detail = self.call(command)
        assert detail.status is WorkerStatus.IDLE and detail.transcript_len == 0
        assert worker_id is None or detail.worker_id == worker_id
        self.model[detail.worker_id] = ModelWorker()
        # A re-created id is fresh: no transcript, no runs.
        assert self.call(c.ListRuns(worker_id=detail.worker_id)).runs == ()
        return detail.worker_id

    @rule(worker_id=strategies.invalid_ids)
    def create_with_invalid_id(self, worker_id: str) -> None:
        self.fails("invalid_worker_id", c.CreateWorker(worker_id=worker_id))

    @rule(worker_id=strategies.short_ids)
    def get_unknown(self, worker_id: str) -> None:
        if worker_id not in self.model:
            self.fails("worker_not_found", c.GetWorker(worker_id=worker_id))

    @rule(
        worker_id=workers,
        content=strategies.labels,
        hold=st.booleans(),
        on_busy=st.sampled_from(BusyPolicy),
    )
    def send_input(self, worker_id: str, content: str, hold: bool, on_busy: BusyPolicy) -> None:
        command = c.SendInput(worker_id=worker_id, content=content, on_busy=on_busy)
        if worker_id not in self.model:
            self.fails("worker_not_found", command)
            return
        worker = self.model[worker_id]
        if worker.status is WorkerStatus.STOPPED:
            self.fails("worker_stopped", command)
            return
        if worker.status is WorkerStatus.RUNNING:
            if on_busy is BusyPolicy.REJECT:
                busy = self.fails("worker_busy", command)
                assert "queue_full" not in busy.details
                return
            if len(worker.queue) >= self.max_queued:
                busy = self.fails("worker_busy", command)
                assert busy.details["queue_full"] is True
                return
            ack = self.call(command)
            assert (ack.run_status, ack.transcript_sequence) == ("queued", None)
            assert ack.status is WorkerStatus.RUNNING
            worker.accept(ack.run_id, content)
            worker.queue.append(ack.run_id)
            return
        ack = self.call(command)
        assert ack.transcript_sequence == len(worker.transcript)
        assert (ack.status, ack.run_status) == (WorkerStatus.RUNNING, "running")
        worker.accept(ack.run_id, content)
        worker.start(ack.run_id)
        if not hold or len(self.running()) >= POOL:
            self._complete(worker_id)

    @precondition(lambda self: self.running())
    @rule(data=st.data(), content=strategies.labels)
    def enqueue_behind(self, data: st.DataObject, content: str) -> None:
        """Input for a busy worker, enqueued (often enough to fill the queue)."""
        worker_id = data.draw(st.sampled_from(self.running()))
        self.send_input(worker_id, content, hold=True, on_busy=BusyPolicy.ENQUEUE)

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._complete(data.draw(st.sampled_from(self.running())))

    def _complete(self, worker_id: str) -> None:
        worker = self.model[worker_id]
        assert worker.active_run is not None
        self.gate.open(worker.active_run)
        end = wait_for_run_end(self.api, worker.active_run)
        assert end.type == "run_completed"
        worker.reply(self.gate.reply(worker.inputs[worker.active_run]))
        worker.end_run(RunStatus.COMPLETED, WorkerStatus.IDLE)

    @rule(worker_id=workers, reason=strategies.reasons)
    def cancel(self, worker_id: str, reason: str | None) -> None:
        """Cancel without a run id: only the active run (the next queued one starts)."""
        command = c.CancelRun(worker_id=worker_id, reason=reason)
        if worker_id not in self.model:
            self.fails("worker_not_found", command)
            return
        worker = self.model[worker_id]
        queued = list(worker.queue)
        ack = self.call(command)
        if worker.active_run is None:
            assert (ack.cancelled_run_id, ack.event_id) == (None, None)
        else:
            run_id = worker.end_run(RunStatus.CANCELLED, WorkerStatus.IDLE)
            assert (ack.cancelled_run_id, ack.run_status) == (run_id, "cancelled")
            assert worker.queue == queued[1:]  # the queue moved up by one, no more
        assert ack.status is worker.status

    @precondition(lambda self: self.with_runs())
    @rule(data=st.data())
    def cancel_a_named_run(self, data: st.DataObject) -> None:
        """Cancel naming a run: a queued one ends without starting, the active one
        ends (the next queued starts), a finished one is only reported."""
        worker_id = data.draw(st.sampled_from(self.with_runs()))
        worker = self.model[worker_id]
        run_id = data.draw(st.sampled_from(worker.runs))
        ack = self.call(c.CancelRun(worker_id=worker_id, run_id=run_id))
        if run_id in worker.finished:
            assert (ack.cancelled_run_id, ack.run_id) == (None, run_id)
            assert ack.run_status == worker.finished[run_id].value
        elif run_id in worker.queue:
            worker.cancel_queued(run_id)
            assert (ack.cancelled_run_id, ack.run_status) == (run_id, "cancelled")
        else:
            assert run_id == worker.active_run
            worker.end_run(RunStatus.CANCELLED, WorkerStatus.IDLE)
            assert (ack.cancelled_run_id, ack.run_status) == (run_id, "cancelled")
        assert ack.status is worker.status  # other runs are left alone

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel_an_unknown_run(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(list(self.model)))
        self.fails("invalid_request", c.CancelRun(worker_id=worker_id, run_id="run-none"))

    @rule(worker_id=workers, reason=strategies.reasons)
    def stop(self, worker_id: str, reason: str | None) -> None:
        """Stop: the active run and every queued one end ``cancelled``."""
        command = c.StopWorker(worker_id=worker_id, reason=reason)
        if worker_id not in self.model:
            self.fails("worker_not_found", command)
            return
        worker = self.model[worker_id]
        ack = self.call(command)
        assert ack.status is WorkerStatus.STOPPED
        assert ack.already_stopped == (worker.status is WorkerStatus.STOPPED)
        for run_id in list(worker.queue):
            worker.cancel_queued(run_id)
        if worker.active_run is not None:
            run_id = worker.end_run(RunStatus.CANCELLED, WorkerStatus.STOPPED)
            assert ack.cancelled_run_id == run_id
        else:
            assert ack.cancelled_run_id is None
        worker.status = WorkerStatus.STOPPED
        self.ever_stopped.add(worker_id)

    @rule(worker_id=workers)
    def delete(self, worker_id: str) -> None:
        """Only a stopped worker is deleted; its id is then free (SPEC section 7)."""
        command = c.DeleteWorker(worker_id=worker_id)
        if worker_id not in self.model:
            self.fails("worker_not_found", command)
            return
        if self.model[worker_id].status is not WorkerStatus.STOPPED:
            self.fails("worker_not_stopped", command)
            return
        ack = self.call(command)
        assert ack.worker_ref.worker_id == worker_id
        event = self.call(c.ReadEvents(cursor=ack.event_id, limit=1)).events[0]
        assert (event.event_id, event.type) == (ack.event_id, "worker_deleted")
        del self.model[worker_id]
        self.ever_stopped.discard(worker_id)
        for command in (
            c.GetWorker(worker_id=worker_id),
            c.GetTranscript(worker_id=worker_id),
            c.ListRuns(worker_id=worker_id),
            c.DeleteWorker(worker_id=worker_id),
        ):
            self.fails("worker_not_found", command)

    @rule(
        worker_id=workers,
        start=st.integers(min_value=0, max_value=12),
        limit=st.none() | st.integers(min_value=1, max_value=5),
    )
    def read_transcript(self, worker_id: str, start: int, limit: int | None) -> None:
        command = c.GetTranscript(worker_id=worker_id, start=start, limit=limit)
        if worker_id not in self.model:
            self.fails("worker_not_found", command)
            return
        expected = self.model[worker_id].transcript
        page = self.call(command)
        items = expected[start : start + (limit or 100)]
        assert [(e.role, e.content, e.run_id) for e in page.items] == items
        assert [e.sequence for e in page.items] == list(range(start, start + len(items)))
        assert page.total_items == len(expected)
        end = start + len(items)
        assert page.next_start == (end if end < len(expected) else None)

    @rule(worker_id=workers, limit=st.integers(1, 4))
    def list_runs(self, worker_id: str, limit: int) -> None:
        if worker_id not in self.model:
            self.fails("worker_not_found", c.ListRuns(worker_id=worker_id, limit=limit))
            return
        self.check_runs(worker_id, self.full_runs(worker_id, limit))

    @precondition(lambda self: self.with_runs())
    @rule(data=st.data())
    def get_run(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(self.with_runs()))
        run_id = data.draw(st.sampled_from(self.model[worker_id].runs))
        self.check_run(worker_id, self.call(c.GetRun(worker_id=worker_id, run_id=run_id)))

    @precondition(lambda self: len(self.model) > 1 and self.with_runs())
    @rule(data=st.data())
    def get_a_run_of_another_worker(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(self.with_runs()))
        run_id = data.draw(st.sampled_from(self.model[owner].runs))
        other = data.draw(st.sampled_from([w for w in self.model if w != owner]))
        self.fails("run_not_found", c.GetRun(worker_id=other, run_id=run_id))

    def full_runs(self, worker_id: str, limit: int = 100) -> list[Any]:
        """The worker's whole run history, page by page."""
        runs: list[Any] = []
        after = None
        while True:
            page = self.call(c.ListRuns(worker_id=worker_id, limit=limit, after=after))
            assert len(page.runs) <= limit
            runs += page.runs
            if page.next_after is None:
                return runs
            assert page.next_after == page.runs[-1].run_id
            after = page.next_after

    def check_runs(self, worker_id: str, runs: list[Any]) -> None:
        assert [r.run_id for r in runs] == self.model[worker_id].runs
        for run in runs:
            self.check_run(worker_id, run)

    def check_run(self, worker_id: str, run: Any) -> None:
        """One run record against the model (SPEC section 7)."""
        worker = self.model[worker_id]
        assert run.worker_ref.worker_id == worker_id
        assert run.status in worker.run_statuses(run.run_id), (run, worker)
        assert run.input_sequence == worker.input_sequence.get(run.run_id)
        assert run.reply_sequence == worker.reply_sequence.get(run.run_id)
        assert run.queued_at is not None
        assert (run.finished_at is not None) == (run.run_id in worker.finished)
        if run.status is RunStatus.RUNNING or run.reply_sequence is not None:
            assert run.started_at is not None
        if run.run_id in worker.queue:
            assert run.started_at is None  # a queued run never started

    @rule(cursor=st.integers(min_value=0, max_value=200), limit=st.integers(1, 20))
    def read_events(self, cursor: int, limit: int) -> None:
        try:
            page = self.call(c.ReadEvents(cursor=cursor, limit=limit))
        except errors.CursorAhead as exc:
            # Past the log's end: refused, naming where the log ends (SPEC section 3).
            assert cursor > exc.details["next_event_id"] >= 1
            assert (
                exc.details["next_event_id"] <= self.api.dispatch(c.GetRuntime()).last_event_id + 1
            )
            return
        assert cursor <= self.api.dispatch(c.GetRuntime()).last_event_id + 1
        ids = [e.event_id for e in page.events]
        assert all(i >= cursor for i in ids)
        assert ids == sorted(set(ids)) and len(ids) <= limit
        assert page.cursor.next_event_id == (ids[-1] + 1 if ids else max(cursor, 1))

    @rule(status=st.none() | st.sampled_from(WorkerStatus), limit=st.integers(1, 4))
    def list_workers(self, status: WorkerStatus | None, limit: int) -> None:
        listed = self.full_listing(status, limit)
        assert listed == [
            (w, m.status) for w, m in self.model.items() if status in (None, m.status)
        ]

    def full_listing(
        self, status: WorkerStatus | None = None, limit: int = 3
    ) -> list[tuple[str, WorkerStatus]]:
        """Every worker, by following ``next_after`` page by page."""
        listed: list[tuple[str, WorkerStatus]] = []
        after = None
        while True:
            page = self.call(c.ListWorkers(status=status, limit=limit, after=after))
            listed += [(w.worker_id, w.status) for w in page.workers]
            if page.next_after is None:
                return listed
            after = page.next_after

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def event_ids_strictly_increase(self) -> None:
        while True:
            page = self.call(c.ReadEvents(cursor=self.next_event, limit=1000))
            for event in page.events:
                assert event.event_id > self.last_event
                self.last_event = event.event_id
                if event.type in TERMINAL_EVENTS and event.run_id is not None:
                    assert event.run_id not in self.run_ends, "a run ended twice"
                    self.run_ends[event.run_id] = event.type
            self.next_event = page.cursor.next_event_id
            if not page.has_more:
                break
        for worker in self.model.values():
            for run_id, status in worker.finished.items():
                assert self.run_ends.get(run_id) == f"run_{status.value}"
            for run_id in (worker.active_run, *worker.queue):
                assert run_id is None or run_id not in self.run_ends

    @invariant()
    def transcripts_are_contiguous_and_match(self) -> None:
        """Entries in conversation order: each run's input, then its reply (queued
        inputs enter only when their run starts; cancelled queued ones never)."""
        for worker_id, worker in self.model.items():
            entries = []
            start: int | None = 0
            while start is not None:
                page = self.call(c.GetTranscript(worker_id=worker_id, start=start, limit=256))
                entries += page.items
                start = page.next_start
            assert [e.sequence for e in entries] == list(range(len(entries)))
            assert [(e.role, e.content, e.run_id) for e in entries] == worker.transcript

    @invariant()
    def run_history_matches(self) -> None:
        for worker_id in self.model:
            self.check_runs(worker_id, self.full_runs(worker_id))

    @invariant()
    def summary_counts_match_the_listing(self) -> None:
        listed = self.full_listing()
        assert listed == [(w, m.status) for w, m in self.model.items()]
        info = self.call(c.GetRuntime())
        counts = {s: sum(1 for _, st_ in listed if st_ is s) for s in WorkerStatus}
        assert (info.workers.idle, info.workers.running, info.workers.stopped) == (
            counts[WorkerStatus.IDLE],
            counts[WorkerStatus.RUNNING],
            counts[WorkerStatus.STOPPED],
        )
        assert info.workers.total == len(listed)
        assert info.active_runs == len(self.running())
        assert info.queued_runs == sum(len(m.queue) for m in self.model.values())
        assert info.last_event_id >= self.last_event

    @invariant()
    def kept_counts_and_indexes_match_a_full_scan(self) -> None:
        """The counts kept as records change equal a recount, and every page the
        ordered index serves equals the page a sorted scan of the records finds."""
        state = self.rt.context.state
        with state.locked():
            assert state.counts() == state.recount()
            assert sum(state.counts().values()) == len(state) == len(self.model)
            for status in (None, *WorkerStatus):
                for after in (None, *self.model):
                    for limit in (1, 2, 100):
                        page = state.page(after=after, status=status, limit=limit)
                        assert page == state.scan_page(after=after, status=status, limit=limit)

    @invariant()
    def cached_answers_equal_fresh_ones(self) -> None:
        """A read served from the cache of encoded answers (the second call)
        equals a fresh encoding of the command's result."""
        for worker_id in self.model:
            page = c.GetTranscript(worker_id=worker_id, limit=3)
            for command in (c.GetWorker(worker_id=worker_id), page):
                wire = encode_command(command)
                compared = 0
                while compared < 2:  # the second answer is served from the cache
                    # A held run may still move from queued to running on its
                    # pool thread: compare only answers made from one record.
                    before = self.rt.context.state.current(worker_id)
                    body = self.rt.dispatch_encoded(wire, ENCODE)
                    fresh = ENCODE(to_json(self.rt.dispatch(command)))
                    if self.rt.context.state.current(worker_id) is before:
                        assert body == fresh, (body, fresh)
                        compared += 1

    @precondition(lambda self: self.target == "remote")
    @invariant()
    def remote_answers_equal_in_process_ones(self) -> None:
        """Results equal on both targets: each worker's record, transcript page and
        runs read over HTTP equal the same reads in-process."""
        state = self.rt.context.state
        for worker_id in self.model:
            for command in (
                c.GetWorker(worker_id=worker_id),
                c.GetTranscript(worker_id=worker_id, limit=5),
                c.ListRuns(worker_id=worker_id, limit=5),
            ):
                while True:
                    # A held run may move from queued to running on its pool
                    # thread meanwhile: compare only answers made from one record.
                    before = state.current(worker_id)
                    remote = self.api.dispatch(command)
                    local = self.rt.dispatch(command)
                    if state.current(worker_id) is before:
                        assert remote == local, (command, remote, local)
                        break

    @invariant()
    def runs_and_terminal_states(self) -> None:
        for worker_id, worker in self.model.items():
            detail = self.call(c.GetWorker(worker_id=worker_id))
            assert detail.status is worker.status
            active = detail.active_run.run_id if detail.active_run else None
            assert active == worker.active_run  # so never a run on a stopped worker
            # A queue waits only behind an active run; running = active or queued.
            assert worker.active_run is not None or not worker.queue
            assert (worker.status is WorkerStatus.RUNNING) == (worker.active_run is not None)
            if worker_id in self.ever_stopped:
                assert detail.status is WorkerStatus.STOPPED  # terminal is sticky
