"""A hypothesis state machine driving the dispatcher against a plain model.

Rules create workers, send input (run to completion, or held open by the gate
engine), cancel, stop, and read transcripts, events and listings; invariants
compare the runtime with the model after every step.

Built for reuse: subclass :class:`RuntimeMachine`, override ``open_runtime``
(e.g. to use the filesystem store) and add a rule that calls ``restart()``;
every rule and invariant then runs against that store too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
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
from worker_runtime import Runtime, errors
from worker_runtime import commands as c
from worker_runtime.commands import RESULT_TYPES
from worker_runtime.domain import Role, RunStatus, WorkerStatus
from worker_runtime.testing import (
    TERMINAL_EVENTS,
    GateEngine,
    make_runtime,
    named,
    wait_for_run_end,
)
from worker_runtime.wire import encode_command, to_json, validate_result

from .support import strategies

ENCODE = enveloped("worker")
"""The HTTP adapter's encoding of an enveloped answer (one function: a cache key)."""

POOL = 8
"""Run pool size; the machine holds at most ``POOL - 1`` runs open at once, so a
run it releases always has a thread to finish on."""


@dataclass
class ModelWorker:
    """What the runtime should say about one worker."""

    status: WorkerStatus = WorkerStatus.IDLE
    transcript: list[tuple[Role, str]] = field(default_factory=list)
    active_run: str | None = None
    finished: dict[str, RunStatus] = field(default_factory=dict)

    def end_run(self, status: RunStatus, next_status: WorkerStatus) -> str:
        assert self.active_run is not None
        run_id, self.active_run = self.active_run, None
        self.finished[run_id] = status
        self.status = next_status
        return run_id


class RuntimeMachine(RuleBasedStateMachine):
    """The dispatcher against a dict of :class:`ModelWorker` (in creation order)."""

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.gate = GateEngine()
        self.model: dict[str, ModelWorker] = {}
        self.ever_stopped: set[str] = set()
        self.next_event = 0  # cursor of the events not yet checked
        self.last_event = 0
        self.run_ends: dict[str, str] = {}  # run_id -> its terminal event type
        self.rt = self.open_runtime()

    # -- hooks for subclasses ------------------------------------------------------

    def open_runtime(self) -> Runtime:
        """The runtime under test; called again by ``restart``. Its profiles must
        include a named ``gate`` profile running ``self.gate``."""
        return make_runtime({"gate": self.gate}, max_concurrent_runs=POOL)

    def restart(self) -> None:
        """Close the runtime and open it again (for a durable store). Closing
        interrupts the runs still held open (SPEC section 9, revision 2)."""
        self.rt.close()
        for worker in self.model.values():
            if worker.active_run is not None:
                worker.end_run(RunStatus.INTERRUPTED, WorkerStatus.IDLE)
        self.rt = self.open_runtime()

    def teardown(self) -> None:
        self.gate.open_all()
        self.rt.close()

    # -- calling the runtime -------------------------------------------------------

    def call(self, command: c.Command[Any]) -> Any:
        """Dispatch ``command``; its result must fit the result schema."""
        result = self.rt.dispatch(command)
        validate_result(to_json(result), RESULT_TYPES[type(command)].__name__)
        return result

    def fails(self, code: str, command: c.Command[Any]) -> None:
        try:
            self.call(command)
        except errors.WorkerRuntimeError as exc:
            assert exc.code == code, f"{command}: expected {code}, got {exc.code}"
            validate_result(exc.to_json(), "Error")
        else:
            raise AssertionError(f"{command} should have failed with {code}")

    def running(self) -> list[str]:
        return [w for w, m in self.model.items() if m.status is WorkerStatus.RUNNING]

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
        return detail.worker_id

    @rule(worker_id=strategies.invalid_ids)
    def create_with_invalid_id(self, worker_id: str) -> None:
        self.fails("invalid_worker_id", c.CreateWorker(worker_id=worker_id))

    @rule(worker_id=strategies.short_ids)
    def get_unknown(self, worker_id: str) -> None:
        if worker_id not in self.model:
            self.fails("worker_not_found", c.GetWorker(worker_id=worker_id))

    @rule(worker_id=workers, content=strategies.labels, hold=st.booleans())
    def send_input(self, worker_id: str, content: str, hold: bool) -> None:
        worker = self.model[worker_id]
        command = c.SendInput(worker_id=worker_id, content=content)
        if worker.status is WorkerStatus.STOPPED:
            return self.fails("worker_stopped", command)
        if worker.status is WorkerStatus.RUNNING:
            return self.fails("worker_busy", command)
        ack = self.call(command)
        assert ack.transcript_sequence == len(worker.transcript)
        assert ack.status is WorkerStatus.RUNNING
        worker.transcript.append((Role.USER, content))
        worker.status, worker.active_run = WorkerStatus.RUNNING, ack.run_id
        if not hold or len(self.running()) >= POOL:
            self._complete(worker_id)

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._complete(data.draw(st.sampled_from(self.running())))

    def _complete(self, worker_id: str) -> None:
        worker = self.model[worker_id]
        assert worker.active_run is not None
        self.gate.open(worker.active_run)
        end = wait_for_run_end(self.rt, worker.active_run)
        assert end.type == "run_completed"
        input_text = worker.transcript[-1][1]
        worker.transcript.append((Role.ASSISTANT, self.gate.reply(input_text)))
        worker.end_run(RunStatus.COMPLETED, WorkerStatus.IDLE)

    @rule(worker_id=workers, reason=strategies.reasons)
    def cancel(self, worker_id: str, reason: str | None) -> None:
        worker = self.model[worker_id]
        ack = self.call(c.CancelRun(worker_id=worker_id, reason=reason))
        if worker.active_run is None:
            assert (ack.cancelled_run_id, ack.event_id) == (None, None)
        else:
            run_id = worker.end_run(RunStatus.CANCELLED, WorkerStatus.IDLE)
            assert (ack.cancelled_run_id, ack.run_status) == (run_id, "cancelled")
        assert ack.status is worker.status

    @precondition(lambda self: any(m.finished for m in self.model.values()))
    @rule(data=st.data())
    def cancel_a_finished_run(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from([w for w, m in self.model.items() if m.finished]))
        worker = self.model[worker_id]
        run_id = data.draw(st.sampled_from(sorted(worker.finished)))
        ack = self.call(c.CancelRun(worker_id=worker_id, run_id=run_id))
        assert (ack.cancelled_run_id, ack.run_id) == (None, run_id)
        assert ack.run_status == worker.finished[run_id].value
        assert ack.status is worker.status  # a newer active run is left alone

    @rule(worker_id=workers, reason=strategies.reasons)
    def stop(self, worker_id: str, reason: str | None) -> None:
        worker = self.model[worker_id]
        ack = self.call(c.StopWorker(worker_id=worker_id, reason=reason))
        assert ack.status is WorkerStatus.STOPPED
        assert ack.already_stopped == (worker.status is WorkerStatus.STOPPED)
        if worker.active_run is not None:
            run_id = worker.end_run(RunStatus.CANCELLED, WorkerStatus.STOPPED)
            assert ack.cancelled_run_id == run_id
        else:
            assert ack.cancelled_run_id is None
        worker.status = WorkerStatus.STOPPED
        self.ever_stopped.add(worker_id)

    @rule(
        worker_id=workers,
        start=st.integers(min_value=0, max_value=12),
        limit=st.none() | st.integers(min_value=1, max_value=5),
    )
    def read_transcript(self, worker_id: str, start: int, limit: int | None) -> None:
        expected = self.model[worker_id].transcript
        page = self.call(c.GetTranscript(worker_id=worker_id, start=start, limit=limit))
        items = expected[start : start + (limit or 100)]
        assert [(e.role, e.content) for e in page.items] == items
        assert [e.sequence for e in page.items] == list(range(start, start + len(items)))
        assert page.total_items == len(expected)
        end = start + len(items)
        assert page.next_start == (end if end < len(expected) else None)

    @rule(cursor=st.integers(min_value=0, max_value=200), limit=st.integers(1, 20))
    def read_events(self, cursor: int, limit: int) -> None:
        try:
            page = self.call(c.ReadEvents(cursor=cursor, limit=limit))
        except errors.CursorAhead as exc:
            # Past the log's end: refused, naming where the log ends (SPEC section 3).
            assert cursor > exc.details["next_event_id"] >= 1
            assert (
                exc.details["next_event_id"] <= self.rt.dispatch(c.GetRuntime()).last_event_id + 1
            )
            return
        assert cursor <= self.rt.dispatch(c.GetRuntime()).last_event_id + 1
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

    @invariant()
    def transcripts_are_contiguous_and_match(self) -> None:
        for worker_id, worker in self.model.items():
            entries = []
            start: int | None = 0
            while start is not None:
                page = self.call(c.GetTranscript(worker_id=worker_id, start=start, limit=256))
                entries += page.items
                start = page.next_start
            assert [e.sequence for e in entries] == list(range(len(entries)))
            assert [(e.role, e.content) for e in entries] == worker.transcript

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
        assert info.active_runs == counts[WorkerStatus.RUNNING]
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

    @invariant()
    def runs_and_terminal_states(self) -> None:
        for worker_id, worker in self.model.items():
            detail = self.call(c.GetWorker(worker_id=worker_id))
            assert detail.status is worker.status
            active = detail.active_run.run_id if detail.active_run else None
            assert active == worker.active_run  # so never a run on a stopped worker
            if worker_id in self.ever_stopped:
                assert detail.status is WorkerStatus.STOPPED  # terminal is sticky


RuntimeMachine.TestCase.settings = settings(stateful_step_count=40, deadline=None)
TestRuntimeMachine = RuntimeMachine.TestCase


def test_the_model_check_can_fail() -> None:
    """A runtime that forgets an entry breaks the transcript invariant: the
    machine's comparisons are not vacuous."""
    machine = RuntimeMachine()
    try:
        worker_id = machine.create(worker_id="w")
        machine.send_input(worker_id, "hello", hold=False)
        machine.model[worker_id].transcript.append((Role.USER, "phantom"))
        try:
            machine.transcripts_are_contiguous_and_match()
        except AssertionError:
            pass
        else:
            raise AssertionError("the transcript invariant accepted a wrong model")
        machine.model[worker_id].transcript.pop()
        machine.transcripts_are_contiguous_and_match()
    finally:
        machine.teardown()
