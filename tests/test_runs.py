"""Runs: cancel, stop, deadlines, stuck and failing engines, the bounded pool,
output coalescing, and the long-poll that follows them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from worker_runtime import Runtime, errors
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime.clock import Clock
from worker_runtime.domain import Role, Run, RunStatus, Severity, WorkerStatus
from worker_runtime.engines import Emit, RunContext
from worker_runtime.stores import MemoryStore
from worker_runtime.testing import (
    GateEngine,
    ManualClock,
    ScriptEngine,
    fail_with,
    make_runtime,
    named,
    wait_for_event,
    wait_for_run_end,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gate() -> Iterator[GateEngine]:
    engine = GateEngine()
    yield engine
    engine.open_all()


def start(rt: Runtime, worker_id: str, profile: str, content: str = "hello") -> r.InputAck:
    rt.dispatch(c.CreateWorker(worker_id=worker_id, profile=named(profile)))
    return rt.dispatch(c.SendInput(worker_id=worker_id, content=content))


def transcript(rt: Runtime, worker_id: str) -> list[tuple[Role, str, str | None]]:
    page = rt.dispatch(c.GetTranscript(worker_id=worker_id, limit=256))
    return [(e.role, e.content, e.run_id) for e in page.items]


def event_types(rt: Runtime, run_id: str) -> list[str]:
    events = rt.dispatch(c.ReadEvents(limit=1000)).events
    return [e.type for e in events if e.run_id == run_id]


# -- cancel and stop --------------------------------------------------------------


def test_cancel_really_stops_the_engine(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        ack = start(rt, "w", "gate")
        gate.wait_started(ack.run_id)
        cancel = rt.dispatch(c.CancelRun(worker_id="w"))
        # Cancel answers only once the engine has returned, having seen the signal.
        assert gate.outcomes[ack.run_id] == "aborted"
        assert (cancel.cancelled_run_id, cancel.run_status) == (ack.run_id, "cancelled")
        assert event_types(rt, ack.run_id) == ["input_accepted", "run_started", "run_cancelled"]
        assert transcript(rt, "w") == [(Role.USER, "hello", ack.run_id)]
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert (detail.status, detail.active_run) == (WorkerStatus.IDLE, None)
        assert detail.usage.runs_cancelled == 1
        # The worker takes new input after a cancel.
        again = rt.dispatch(c.SendInput(worker_id="w", content="again"))
        gate.open(again.run_id)
        assert wait_for_run_end(rt, again.run_id).type == "run_completed"


def test_stop_cancels_the_run_and_is_sticky(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        ack = start(rt, "w", "gate")
        gate.wait_started(ack.run_id)
        stop = rt.dispatch(c.StopWorker(worker_id="w", reason="retired"))
        assert gate.outcomes[ack.run_id] == "aborted"
        assert stop.cancelled_run_id == ack.run_id
        with pytest.raises(errors.WorkerStopped):
            rt.dispatch(c.SendInput(worker_id="w", content="more"))
        cancel = rt.dispatch(c.CancelRun(worker_id="w"))
        assert (cancel.status, cancel.cancelled_run_id) == (WorkerStatus.STOPPED, None)
        assert rt.dispatch(c.StopWorker(worker_id="w")).already_stopped
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert (detail.status, detail.active_run) == (WorkerStatus.STOPPED, None)
        assert detail.last_run is not None and detail.last_run.status is RunStatus.CANCELLED
        types = [e.type for e in rt.dispatch(c.ReadEvents(limit=1000)).events]
        assert types.index("run_cancelled") < types.index("worker_stopped")


def test_input_during_a_stop_in_progress_is_refused_as_stopped() -> None:
    """While a stop waits for the run to wind down, the worker already counts
    as stopped: input is refused with worker_stopped, not worker_busy; a second
    stop waits for the first and answers only once the worker is stopped."""
    stuck = GateEngine(honour_signal=False)
    clock = PollSpyClock()
    with make_runtime({"stuck": stuck}, cancel_grace_s=30, clock=clock) as rt:
        ack = start(rt, "w", "stuck")
        ctx = stuck.wait_started(ack.run_id)
        stops: list[r.StopAck] = []
        seen: list[WorkerStatus] = []

        def second_stop() -> None:
            clock.poller = threading.get_ident()
            stops.append(rt.dispatch(c.StopWorker(worker_id="w")))
            seen.append(rt.dispatch(c.GetWorker(worker_id="w")).status)

        stopper = threading.Thread(
            target=lambda: stops.append(rt.dispatch(c.StopWorker(worker_id="w")))
        )
        second = threading.Thread(target=second_stop)
        stopper.start()
        try:
            assert ctx.signal.wait(10), "the stop never aborted the run"
            with pytest.raises(errors.WorkerStopped):
                rt.dispatch(c.SendInput(worker_id="w", content="sneak in"))
            second.start()
            assert clock.waiting.wait(10), "the second stop did not wait for the first"
            assert stops == []
        finally:
            stuck.open(ack.run_id)  # let the engine return so the stop completes
            stopper.join(10)
            if second.ident is not None:
                second.join(10)
        assert not stopper.is_alive() and not second.is_alive()
        first, again = stops
        assert first.cancelled_run_id == ack.run_id and not first.already_stopped
        assert again.already_stopped and again.status is WorkerStatus.STOPPED
        assert seen == [WorkerStatus.STOPPED]
        assert rt.dispatch(c.GetWorker(worker_id="w")).status is WorkerStatus.STOPPED


def test_cancel_of_a_stuck_engine_finishes_after_the_grace() -> None:
    stuck = GateEngine(honour_signal=False)
    with make_runtime({"stuck": stuck}, cancel_grace_s=0.05) as rt:
        ack = start(rt, "w", "stuck")
        stuck.wait_started(ack.run_id)
        cancel = rt.dispatch(c.CancelRun(worker_id="w"))
        assert (cancel.cancelled_run_id, cancel.run_status) == (ack.run_id, "cancelled")
        assert ack.run_id not in stuck.outcomes  # still blocked, yet the worker is free
        assert rt.dispatch(c.GetWorker(worker_id="w")).status is WorkerStatus.IDLE
        stuck.open_all()


# -- deadlines --------------------------------------------------------------------


def test_a_run_past_its_deadline_is_timed_out(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}, timeouts={"gate": 0.05}) as rt:
        ack = start(rt, "w", "gate")
        end = wait_for_run_end(rt, ack.run_id)
        assert end.type == "run_timed_out"
        assert gate.wait_returned(ack.run_id) == "aborted"
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert detail.status is WorkerStatus.IDLE
        assert detail.last_run is not None and detail.last_run.status is RunStatus.TIMED_OUT
        assert detail.last_error == "timed out after 0.05s"
        assert detail.usage.runs_timed_out == 1


def test_the_runtime_default_timeout_applies_without_a_profile_timeout(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}, run_timeout_s=0.05) as rt:
        ack = start(rt, "w", "gate")
        assert wait_for_run_end(rt, ack.run_id).type == "run_timed_out"


def test_an_engine_that_ignores_the_deadline_is_finalized_after_the_grace() -> None:
    """One pool thread: the stuck engine holds it, so the next run queues
    behind it and proves (by finishing) that the stuck run's late output was
    handled before the check."""
    stuck = GateEngine(honour_signal=False)
    with make_runtime(
        {"stuck": stuck}, timeouts={"stuck": 0.05}, cancel_grace_s=0.05, max_concurrent_runs=1
    ) as rt:
        first = start(rt, "w", "stuck", "first")
        assert wait_for_run_end(rt, first.run_id).type == "run_timed_out"
        assert first.run_id not in stuck.outcomes  # finalized while the engine is stuck
        assert rt.dispatch(c.GetWorker(worker_id="w")).status is WorkerStatus.IDLE

        second = rt.dispatch(c.SendInput(worker_id="w", content="second"))
        queued = rt.dispatch(c.GetWorker(worker_id="w")).active_run
        assert queued is not None and queued.status is RunStatus.QUEUED  # behind the stuck one
        stuck.open(second.run_id)
        stuck.open(first.run_id)  # the stuck engine finally returns, with output
        assert wait_for_run_end(rt, second.run_id).type == "run_completed"
        assert transcript(rt, "w") == [
            (Role.USER, "first", first.run_id),
            (Role.USER, "second", second.run_id),
            (Role.ASSISTANT, "echo: second", second.run_id),
        ]  # the late "echo: first" was dropped


# -- failing engines --------------------------------------------------------------


def test_a_failing_engine_ends_the_run_failed() -> None:
    failing = ScriptEngine(fail_with("the model is away"))
    with make_runtime({"failing": failing}) as rt:
        ack = start(rt, "w", "failing")
        end = wait_for_run_end(rt, ack.run_id)
        assert (end.type, end.data["error"]) == ("run_failed", "the model is away")
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert detail.status is WorkerStatus.IDLE
        assert detail.last_error == "the model is away"
        assert detail.last_run is not None and detail.last_run.error == "the model is away"
        assert detail.usage.runs_failed == 1
        # What the engine said before failing is kept.
        assert transcript(rt, "w")[-1] == (Role.ASSISTANT, "partial output", ack.run_id)
        failures = [
            d for d in rt.dispatch(c.GetDiagnostics()).diagnostics if d.code == "run_failed"
        ]
        assert len(failures) == 1
        assert failures[0].severity is Severity.ERROR
        assert failures[0].worker_ref == detail.worker_ref
        assert ack.run_id in failures[0].message


def test_a_crashing_engine_fails_the_run_not_the_worker() -> None:
    def crash(ctx: RunContext, emit: Emit) -> None:
        raise ZeroDivisionError("division by zero")

    with make_runtime({"crash": ScriptEngine(crash)}) as rt:
        ack = start(rt, "w", "crash")
        assert wait_for_run_end(rt, ack.run_id).type == "run_failed"
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert detail.last_error == "engine error: ZeroDivisionError"
        again = rt.dispatch(c.SendInput(worker_id="w", content="again"))
        assert wait_for_run_end(rt, again.run_id).type == "run_failed"


def test_a_later_success_keeps_the_last_error_until_replaced() -> None:
    outcomes = iter([fail_with("first failure"), lambda ctx, emit: emit("fine")])
    engine = ScriptEngine(lambda ctx, emit: next(outcomes)(ctx, emit))
    with make_runtime({"flaky": engine}) as rt:
        first = start(rt, "w", "flaky")
        wait_for_run_end(rt, first.run_id)
        second = rt.dispatch(c.SendInput(worker_id="w", content="again"))
        assert wait_for_run_end(rt, second.run_id).type == "run_completed"
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert detail.last_run is not None and detail.last_run.status is RunStatus.COMPLETED
        assert detail.last_error == "first failure"


# -- the bounded pool --------------------------------------------------------------


def test_runs_queue_when_the_pool_is_full(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}, max_concurrent_runs=1) as rt:
        a = start(rt, "a", "gate")
        gate.wait_started(a.run_id)
        b = start(rt, "b", "gate")
        c_ = start(rt, "c", "gate")
        queued = rt.dispatch(c.GetWorker(worker_id="b")).active_run
        assert queued is not None and queued.status is RunStatus.QUEUED
        info = rt.dispatch(c.GetRuntime())
        assert (info.active_runs, info.workers.running) == (3, 3)

        # A queued run is cancelled at once; its engine is never called.
        cancel = rt.dispatch(c.CancelRun(worker_id="b"))
        assert (cancel.cancelled_run_id, cancel.run_status) == (b.run_id, "cancelled")
        assert event_types(rt, b.run_id) == ["input_accepted", "run_cancelled"]

        gate.open(c_.run_id)
        gate.open(a.run_id)
        assert wait_for_run_end(rt, a.run_id).type == "run_completed"
        assert wait_for_run_end(rt, c_.run_id).type == "run_completed"
        assert b.run_id not in gate.started  # its queue slot was skipped
        assert rt.dispatch(c.GetRuntime()).active_runs == 0


def test_runs_execute_on_the_pool_not_the_callers_thread() -> None:
    threads: list[str] = []
    engine = ScriptEngine(lambda ctx, emit: threads.append(threading.current_thread().name))
    with make_runtime({"spy": engine}) as rt:
        ack = start(rt, "w", "spy")
        wait_for_run_end(rt, ack.run_id)
    assert len(threads) == 1 and threads[0].startswith("wr-run")


def test_closing_the_runtime_interrupts_active_runs(gate: GateEngine) -> None:
    # SPEC section 9 (revision 2): a shutdown ends active runs interrupted.
    store = MemoryStore("rt-close")
    rt = make_runtime({"gate": gate}, store=store)
    ack = start(rt, "w", "gate")
    gate.wait_started(ack.run_id)
    rt.close()
    assert gate.outcomes[ack.run_id] == "aborted"
    ended = [e for e in store.read_events(0, 1000) if e.run_id == ack.run_id]
    assert ended[-1].type == "run_interrupted"
    assert "shutting down" in str(ended[-1].data["error"])
    with pytest.raises(errors.RuntimeUnavailable):
        rt.dispatch(c.GetWorker(worker_id="w"))
    rt.close()  # idempotent


def test_closing_finalizes_stuck_and_queued_runs() -> None:
    stuck = GateEngine(honour_signal=False)
    store = MemoryStore("rt-close")
    rt = make_runtime({"stuck": stuck}, store=store, cancel_grace_s=0.05, max_concurrent_runs=2)
    acks = [start(rt, f"w{i}", "stuck") for i in range(3)]  # the third one queues
    for ack in acks[:2]:
        stuck.wait_started(ack.run_id)
    rt.close()
    ends = {e.run_id: e for e in store.read_events(0, 1000) if e.type.startswith("run_")}
    assert [ends[ack.run_id].type for ack in acks] == ["run_interrupted"] * 3
    assert all("shutting down" in str(ends[ack.run_id].data["error"]) for ack in acks)
    stuck.open_all()


def test_closing_answers_a_waiting_long_poll_at_once() -> None:
    rt = make_runtime({}, max_event_wait_s=300)
    cursor = rt.dispatch(c.GetRuntime()).last_event_id + 1
    answered: list[int] = []
    waiter = threading.Thread(
        target=lambda: answered.append(
            len(rt.dispatch(c.ReadEvents(cursor=cursor, wait=300)).events)
        )
    )
    waiter.start()
    wait_until(lambda: rt.context.state.waiting() > 0, what="the long-poll to wait")
    rt.close()
    waiter.join(30)  # far less than the poll's 300 s: close answered it
    assert not waiter.is_alive() and answered == [0]


class FlakyRunStore(MemoryStore):
    """Fails to record the next finished run once, as a full disk might."""

    fail_next_run = True

    def put_run(self, worker_id: str, run: Run) -> None:
        if self.fail_next_run and not run.status.active:
            self.fail_next_run = False
            raise errors.RuntimeUnavailable("no space left on device")
        super().put_run(worker_id, run)


def test_a_run_whose_end_could_not_be_recorded_is_finalized_at_its_deadline() -> None:
    """The engine returned, but recording the end failed: the watchdog must
    still end the run, or the worker would stay running for good."""
    instant = ScriptEngine(lambda ctx, emit: emit("done"))
    store = FlakyRunStore("rt-flaky")
    with make_runtime(
        {"instant": instant}, store=store, timeouts={"instant": 0.05}, cancel_grace_s=0.05
    ) as rt:
        ack = start(rt, "w", "instant")
        assert wait_for_run_end(rt, ack.run_id).type == "run_timed_out"
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert (detail.status, detail.active_run) == (WorkerStatus.IDLE, None)


# -- output ------------------------------------------------------------------------


def _chunks(clock: ManualClock, *parts: str | float) -> ScriptEngine:
    """An engine that emits each string, and advances ``clock`` by each float."""

    def script(ctx: RunContext, emit: Emit) -> None:
        for part in parts:
            if isinstance(part, str):
                emit(part)
            else:
                clock.advance(part)

    return ScriptEngine(script)


@pytest.mark.parametrize(
    ("parts", "pieces"),
    [
        # The first chunk after a quiet spell goes out at once; the rest of one
        # breath is one piece (flushed at the run's end here, the clock being still).
        (["ab"] * 50, ["ab", "ab" * 49]),
        (["x", 0.3, "y", "z"], ["x", "y", "z"]),  # a pause lets the next chunk out at once
        (["a" * 1000] * 10, ["a" * 1000, "a" * 9000]),
        (["", "only", ""], ["only"]),  # empty chunks are ignored
        ([], []),  # no output, no event, no reply entry
    ],
)
def test_output_is_streamed_coalesced_and_kept_as_one_reply(
    parts: list[str | float], pieces: list[str]
) -> None:
    """SPEC section 7 (revision 2): run_output events {text, offset}, at most one
    per 50 ms per run, and ONE assistant entry holding the whole reply."""
    clock = ManualClock()
    with make_runtime({"chunks": _chunks(clock, *parts)}, clock=clock) as rt:
        ack = start(rt, "w", "chunks")
        end = wait_for_run_end(rt, ack.run_id)
        assert end.type == "run_completed"
        events = rt.dispatch(c.ReadEvents(worker_id="w", limit=1000)).events
        outputs = [e.data for e in events if e.type == "run_output"]
        reply = "".join(pieces)
        offsets = [sum(map(len, pieces[:i])) for i in range(len(pieces))]
        assert outputs == [{"text": t, "offset": o} for t, o in zip(pieces, offsets, strict=True)]
        replies = [text for role, text, _ in transcript(rt, "w") if role is Role.ASSISTANT]
        assert replies == ([reply] if reply else [])
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert detail.usage.output_chars == len(reply)
        assert detail.transcript_len == 1 + (1 if reply else 0)
        run = rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id))
        assert run.output_chars == len(reply)
        assert run.reply_sequence == (1 if reply else None)
        assert end.data.get("reply_sequence") == run.reply_sequence


def test_output_past_the_limit_is_truncated() -> None:
    clock = ManualClock()
    engine = _chunks(clock, "12345", "67890abc", "never shown")
    with make_runtime({"chunks": engine}, clock=clock, max_output_chars=10) as rt:
        ack = start(rt, "w", "chunks")
        wait_for_run_end(rt, ack.run_id)
        replies = [text for role, text, _ in transcript(rt, "w") if role is Role.ASSISTANT]
        assert replies == ["1234567890\n[output truncated]"]


# -- waiting without polling ------------------------------------------------------


class PollSpyClock(Clock):
    """Sets ``waiting`` when the poller thread reads the clock a second time:
    ``ReadEvents`` does that with the state lock held, right before it waits
    on the condition (which releases the lock)."""

    def __init__(self) -> None:
        self.poller: int | None = None
        self.waiting = threading.Event()
        self._calls = 0

    def monotonic(self) -> float:
        if threading.get_ident() == self.poller:
            self._calls += 1
            if self._calls == 2:
                self.waiting.set()
        return super().monotonic()


def _poll_in_thread(
    rt: Runtime, clock: PollSpyClock, cursor: int
) -> tuple[threading.Thread, list[r.EventPage]]:
    """Start ``ReadEvents(cursor, wait=30)`` on a thread; return once it waits."""
    pages: list[r.EventPage] = []

    def poll() -> None:
        clock.poller = threading.get_ident()
        pages.append(rt.dispatch(c.ReadEvents(cursor=cursor, wait=30)))

    thread = threading.Thread(target=poll)
    thread.start()
    assert clock.waiting.wait(10), "the poller never started waiting"
    return thread, pages


def test_a_long_poll_returns_as_soon_as_an_event_arrives() -> None:
    clock = PollSpyClock()
    with make_runtime({}, clock=clock) as rt:
        cursor = rt.dispatch(c.GetRuntime()).last_event_id + 1
        thread, pages = _poll_in_thread(rt, clock, cursor)
        # The poller holds the lock until it waits, so this create happens after.
        rt.dispatch(c.CreateWorker(worker_id="w"))
        thread.join(10)  # far below the poll's 30 s: it was woken, not timed out
        assert not thread.is_alive()
        assert [e.type for e in pages[0].events] == ["worker_created"]
        assert pages[0].cursor.next_event_id == cursor + 1


def test_closing_the_runtime_ends_a_long_poll() -> None:
    clock = PollSpyClock()
    rt = make_runtime({}, clock=clock)
    cursor = rt.dispatch(c.GetRuntime()).last_event_id + 1
    thread, pages = _poll_in_thread(rt, clock, cursor=cursor)
    rt.close()
    thread.join(10)
    assert not thread.is_alive()
    assert pages[0].events == ()


def test_wait_for_event_follows_a_run(gate: GateEngine) -> None:
    """The helper the other tests rely on sees every step of a run in order."""
    with make_runtime({"gate": gate}) as rt:
        ack = start(rt, "w", "gate")
        started = wait_for_event(rt, lambda e: e.type == "run_started" and e.run_id == ack.run_id)
        gate.open(ack.run_id)
        end = wait_for_run_end(rt, ack.run_id)
        assert ack.event_id < started.event_id < end.event_id


def test_output_is_not_held_when_the_engine_goes_quiet() -> None:
    # "starting..." then a long silence: the timer thread must flush the chunk
    # without waiting for more output or for the run to end.
    said = threading.Event()

    def script(ctx: RunContext, emit: Emit) -> None:
        emit("starting...")
        said.set()
        ctx.signal.wait(30)

    with make_runtime({"quiet": ScriptEngine(script)}) as rt:
        ack = start(rt, "w", "quiet")
        assert said.wait(10)
        event = wait_for_event(rt, lambda e: e.type == "run_output" and e.run_id == ack.run_id)
        assert event.data == {"text": "starting...", "offset": 0}
        # Streamed as an event; the reply entry waits for the run's end.
        assert [role for role, _, _ in transcript(rt, "w")] == [Role.USER]
        assert rt.dispatch(c.GetWorker(worker_id="w")).status is WorkerStatus.RUNNING
        rt.dispatch(c.CancelRun(worker_id="w"))
        # A cancelled run's partial output is still its one reply entry.
        assert (Role.ASSISTANT, "starting...", ack.run_id) in transcript(rt, "w")
