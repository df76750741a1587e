"""SPEC section 7 (revision 2), in-process: queues, run history, waits, delete,
the worker filter and ``cursor_ahead``; and, with the fs store, queued runs and
interrupted replies across a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from worker_runtime import Runtime, RuntimeConfig, errors
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime import state as state_module
from worker_runtime.domain import BusyPolicy, Role, RunStatus, WorkerStatus
from worker_runtime.engines import Emit, RunContext
from worker_runtime.profiles import Profile, ProfileRegistry
from worker_runtime.testing import (
    GateEngine,
    ScriptEngine,
    make_runtime,
    named,
    wait_for_run_end,
    wait_until,
)
from worker_runtime.waits import abandon_when
from worker_runtime.wire import to_json, validate_result

ENQUEUE = BusyPolicy.ENQUEUE


def _fs_runtime(engine: GateEngine, data: str) -> Runtime:
    profiles = ProfileRegistry(
        [Profile(name="gate", kind="named", engine="gate")], engines={"gate": lambda s: engine}
    )
    config = RuntimeConfig(runtime_id="rt-test", store="fs", data_dir=data, cancel_grace_s=1)
    return Runtime.open(config, profiles=profiles)


@pytest.fixture
def gate() -> GateEngine:
    return GateEngine()


def _worker(rt: object, worker_id: str = "w") -> None:
    rt.dispatch(c.CreateWorker(worker_id=worker_id, profile=named("gate")))  # type: ignore[attr-defined]


def _transcript(rt: object, worker_id: str = "w") -> list[tuple[Role, str, str | None]]:
    page = rt.dispatch(c.GetTranscript(worker_id=worker_id, limit=256))  # type: ignore[attr-defined]
    return [(e.role, e.content, e.run_id) for e in page.items]


def test_enqueued_inputs_run_in_order_and_the_transcript_reads_as_a_conversation(
    gate: GateEngine,
) -> None:
    with make_runtime({"gate": gate}) as rt:
        _worker(rt)
        first = rt.dispatch(c.SendInput(worker_id="w", content="one"))
        assert (first.run_status, first.transcript_sequence) == ("running", 0)
        queued = [
            rt.dispatch(c.SendInput(worker_id="w", content=text, on_busy=ENQUEUE))
            for text in ("two", "three")
        ]
        assert [(a.run_status, a.transcript_sequence) for a in queued] == [("queued", None)] * 2
        # Queued inputs are not in the transcript yet.
        assert _transcript(rt) == [(Role.USER, "one", first.run_id)]
        assert rt.dispatch(c.GetRuntime()).queued_runs == 2
        run = rt.dispatch(c.GetRun(worker_id="w", run_id=queued[0].run_id))
        assert (run.status, run.input_sequence, run.queued_at is not None) == (
            RunStatus.QUEUED,
            None,
            True,
        )
        for ack in (first, *queued):
            gate.open(ack.run_id)
        assert wait_for_run_end(rt, queued[1].run_id).type == "run_completed"
        ids = [first.run_id, queued[0].run_id, queued[1].run_id]
        assert _transcript(rt) == [
            (Role.USER, "one", ids[0]),
            (Role.ASSISTANT, "echo: one", ids[0]),
            (Role.USER, "two", ids[1]),
            (Role.ASSISTANT, "echo: two", ids[1]),
            (Role.USER, "three", ids[2]),
            (Role.ASSISTANT, "echo: three", ids[2]),
        ]
        page = rt.dispatch(c.ListRuns(worker_id="w"))
        assert [r.run_id for r in page.runs] == ids
        assert [(r.input_sequence, r.reply_sequence) for r in page.runs] == [(0, 1), (2, 3), (4, 5)]
        assert rt.dispatch(c.GetWorker(worker_id="w")).status is WorkerStatus.IDLE


def test_the_queue_is_bounded_and_reject_stays_the_default(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}, max_queued_runs=2) as rt:
        _worker(rt)
        rt.dispatch(c.SendInput(worker_id="w", content="a"))
        with pytest.raises(errors.WorkerBusy) as busy:
            rt.dispatch(c.SendInput(worker_id="w", content="b"))
        assert "queue_full" not in busy.value.details
        for text in "bc":
            rt.dispatch(c.SendInput(worker_id="w", content=text, on_busy=ENQUEUE))
        with pytest.raises(errors.WorkerBusy) as full:
            rt.dispatch(c.SendInput(worker_id="w", content="d", on_busy=ENQUEUE))
        assert full.value.details["queue_full"] is True
        gate.open_all()


def test_cancel_reaches_a_queued_run_and_stop_clears_the_queue(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        _worker(rt)
        active = rt.dispatch(c.SendInput(worker_id="w", content="a"))
        b, d, e = (
            rt.dispatch(c.SendInput(worker_id="w", content=t, on_busy=ENQUEUE)) for t in "bde"
        )
        ack = rt.dispatch(c.CancelRun(worker_id="w", run_id=b.run_id))
        assert (ack.cancelled_run_id, ack.run_status) == (b.run_id, "cancelled")
        gate.wait_started(active.run_id)
        assert rt.dispatch(c.GetRun(worker_id="w", run_id=b.run_id)).status is RunStatus.CANCELLED
        # The cancelled queued input never entered the transcript; the active run goes on.
        assert [t for _, t, _ in _transcript(rt)] == ["a"]
        stop = rt.dispatch(c.StopWorker(worker_id="w"))
        assert stop.cancelled_run_id == active.run_id
        runs = {r.run_id: r.status for r in rt.dispatch(c.ListRuns(worker_id="w")).runs}
        assert runs == dict.fromkeys([active.run_id, b.run_id, d.run_id, e.run_id], runs[b.run_id])
        assert rt.dispatch(c.GetRuntime()).queued_runs == 0
        with pytest.raises(errors.WorkerStopped):
            rt.dispatch(c.SendInput(worker_id="w", content="late", on_busy=ENQUEUE))


def test_the_runtime_summary_names_the_queue_bound_and_the_wait_slots() -> None:
    """A Backend discovers how many inputs it may enqueue and how many waits it
    may hold from ``GetRuntime``'s ``limits``; the wire form fits the schema."""
    with make_runtime({}, max_queued_runs=3, max_waiters=5) as rt:
        info = rt.dispatch(c.GetRuntime())
    assert (info.limits.max_queued_runs, info.limits.max_waiters) == (3, 5)
    data = to_json(info)
    validate_result(data, "RuntimeInfo")
    assert (data["limits"]["max_queued_runs"], data["limits"]["max_waiters"]) == (3, 5)
    defaults = RuntimeConfig()
    with make_runtime({}) as rt:
        limits = rt.dispatch(c.GetRuntime()).limits
    assert (limits.max_queued_runs, limits.max_waiters) == (
        defaults.max_queued_runs,
        defaults.max_waiters,
    )


def test_a_failed_run_keeps_its_partial_reply_as_one_entry() -> None:
    def script(ctx: RunContext, emit: Emit) -> None:
        emit("part one, ")
        emit("part two")
        raise RuntimeError("boom")

    with make_runtime({"gate": ScriptEngine(script)}) as rt:
        _worker(rt)
        ack = rt.dispatch(c.SendInput(worker_id="w", content="go"))
        assert wait_for_run_end(rt, ack.run_id).type == "run_failed"
        assert _transcript(rt)[1:] == [(Role.ASSISTANT, "part one, part two", ack.run_id)]
        run = rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id))
        assert (run.reply_sequence, run.output_chars) == (1, len("part one, part two"))


def test_a_cancelled_run_keeps_its_partial_reply_as_one_entry_marked_cancelled() -> None:
    said = threading.Event()

    def script(ctx: RunContext, emit: Emit) -> None:
        emit("part one, ")
        emit("part two")
        said.set()
        ctx.signal.wait(30)  # until cancelled

    with make_runtime({"gate": ScriptEngine(script)}) as rt:
        _worker(rt)
        ack = rt.dispatch(c.SendInput(worker_id="w", content="go"))
        assert said.wait(10)
        assert rt.dispatch(c.CancelRun(worker_id="w")).cancelled_run_id == ack.run_id
        end = wait_for_run_end(rt, ack.run_id)
        assert end.type == "run_cancelled"
        items = rt.dispatch(c.GetTranscript(worker_id="w")).items
        assert [(e.role, e.content, e.run_id) for e in items[1:]] == [
            (Role.ASSISTANT, "part one, part two", ack.run_id)
        ]
        reply = items[1]
        # Marked with the run's status: the entry is announced by the run's end
        # event, and the cancelled run names it as its reply.
        assert reply.event_id == end.event_id
        assert (end.data["status"], end.data["reply_sequence"]) == ("cancelled", reply.sequence)
        run = rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id))
        assert (run.status, run.reply_sequence, run.output_chars) == (
            RunStatus.CANCELLED,
            reply.sequence,
            len("part one, part two"),
        )


def test_get_run_waits_for_the_end_or_answers_at_the_deadline(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        _worker(rt)
        ack = rt.dispatch(c.SendInput(worker_id="w", content="x"))
        assert rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id, wait=0.05)).status.active
        answers: list[RunStatus] = []
        waiter = threading.Thread(
            target=lambda: answers.append(
                rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id, wait=30)).status
            )
        )
        waiter.start()
        wait_until(lambda: rt.dispatch(c.GetRuntime()).waiters == 1, what="the wait to be held")
        gate.open(ack.run_id)
        waiter.join(10)
        assert answers == [RunStatus.COMPLETED]
        with pytest.raises(errors.RunNotFound):
            rt.dispatch(c.GetRun(worker_id="w", run_id="run-nope"))


def test_an_abandoned_wait_ends_early(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        _worker(rt)
        gone = threading.Event()
        answers: list[int] = []
        cursor = rt.dispatch(c.GetRuntime()).last_event_id + 1

        def poll() -> None:
            with abandon_when(gone.is_set):
                page = rt.dispatch(c.ReadEvents(cursor=cursor, worker_id="w", wait=30))
                answers.append(len(page.events))

        waiter = threading.Thread(target=poll)
        waiter.start()
        wait_until(lambda: rt.dispatch(c.GetRuntime()).waiters == 1, what="the wait to be held")
        gone.set()
        waiter.join(10)  # far below 30 s: the check ended it
        assert not waiter.is_alive() and answers == [0]


def test_the_worker_filter_and_cursor_ahead(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        for worker_id in ("a", "b"):
            _worker(rt, worker_id)
        gate_ack = rt.dispatch(c.SendInput(worker_id="b", content="noise"))
        page = rt.dispatch(c.ReadEvents(worker_id="a"))
        assert {e.worker_ref.worker_id for e in page.events if e.worker_ref} == {"a"}
        # Nothing more of a's: the cursor skips b's events in one step.
        assert page.cursor.next_event_id > gate_ack.event_id
        with pytest.raises(errors.WorkerNotFound):
            rt.dispatch(c.ReadEvents(worker_id="ghost"))
        # Let b's run end first: its events would move the log's end under us.
        gate.open(gate_ack.run_id)
        wait_for_run_end(rt, gate_ack.run_id)
        last = rt.dispatch(c.GetRuntime()).last_event_id
        with pytest.raises(errors.CursorAhead) as ahead:
            rt.dispatch(c.ReadEvents(cursor=last + 2))
        assert ahead.value.details["next_event_id"] == last + 1


def test_delete_only_a_stopped_worker_then_create_it_again(gate: GateEngine) -> None:
    with make_runtime({"gate": gate}) as rt:
        _worker(rt)
        ack = rt.dispatch(c.SendInput(worker_id="w", content="x"))
        with pytest.raises(errors.WorkerNotStopped):
            rt.dispatch(c.DeleteWorker(worker_id="w"))
        rt.dispatch(c.StopWorker(worker_id="w"))
        deleted = rt.dispatch(c.DeleteWorker(worker_id="w"))
        events = rt.dispatch(c.ReadEvents(cursor=deleted.event_id)).events
        assert events[0].type == "worker_deleted"
        with pytest.raises(errors.WorkerNotFound):
            rt.dispatch(c.GetWorker(worker_id="w"))
        _worker(rt)
        fresh = rt.dispatch(c.GetWorker(worker_id="w"))
        assert (fresh.transcript_len, fresh.last_run) == (0, None)
        assert rt.dispatch(c.ListRuns(worker_id="w")).runs == ()
        with pytest.raises(errors.RunNotFound):
            rt.dispatch(c.GetRun(worker_id="w", run_id=ack.run_id))


STORES = ("memory", "fs")


def _open(store: str, tmp_path: Path) -> Runtime:
    """A runtime on the echo engine; the fs one reopens the same data each time."""
    if store == "fs":
        return Runtime.open(
            RuntimeConfig(runtime_id="rt-test", store="fs", data_dir=str(tmp_path / "data"))
        )
    return Runtime.open(RuntimeConfig(runtime_id="rt-test"))


def _stopped(rt: Runtime, worker_id: str = "w") -> None:
    rt.dispatch(c.CreateWorker(worker_id=worker_id))
    rt.dispatch(c.StopWorker(worker_id=worker_id))


def _types(rt: Runtime, worker_id: str, cursor: int) -> list[tuple[str, int]]:
    page = rt.dispatch(c.ReadEvents(worker_id=worker_id, cursor=cursor))
    return [(e.type, e.event_id) for e in page.events]


def _hold_wait(rt: Runtime) -> None:
    wait_until(lambda: rt.dispatch(c.GetRuntime()).waiters == 1, what="the wait to be held")


@pytest.mark.parametrize("store", STORES)
def test_a_wait_held_on_a_worker_is_answered_with_its_deletion(store: str, tmp_path: Path) -> None:
    with _open(store, tmp_path) as rt:
        _stopped(rt)
        cursor = rt.dispatch(c.ReadEvents(worker_id="w")).cursor.next_event_id
        pages: list[r.EventPage] = []
        waiter = threading.Thread(
            target=lambda: pages.append(
                rt.dispatch(c.ReadEvents(worker_id="w", cursor=cursor, wait=30))
            )
        )
        waiter.start()
        _hold_wait(rt)
        deleted = rt.dispatch(c.DeleteWorker(worker_id="w"))
        waiter.join(10)  # far below 30 s: the delete woke it
        assert not waiter.is_alive()
        (page,) = pages
        assert [(e.type, e.event_id) for e in page.events] == [("worker_deleted", deleted.event_id)]
        assert (page.cursor.next_event_id, page.has_more) == (deleted.event_id + 1, False)
        # Read again from the same cursor: the same answer. From one behind
        # the worker's other events (in the runtime-wide log only: the delete
        # alone would hide them) or past the delete: not found.
        assert _types(rt, "w", cursor) == [("worker_deleted", deleted.event_id)]
        for behind_or_past in (1, cursor - 1, deleted.event_id + 1):
            with pytest.raises(errors.WorkerNotFound):
                rt.dispatch(c.ReadEvents(worker_id="w", cursor=behind_or_past))


@pytest.mark.parametrize("store", STORES)
def test_following_a_worker_ends_after_its_deletion(store: str, tmp_path: Path) -> None:
    with _open(store, tmp_path) as rt:
        _stopped(rt)
        seen: list[str] = []
        failed: list[BaseException] = []

        def follower() -> None:
            try:
                seen.extend(e.type for e in rt.follow(worker_id="w"))
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=follower)
        thread.start()
        _hold_wait(rt)
        deleted = rt.dispatch(c.DeleteWorker(worker_id="w"))
        thread.join(10)
        assert not thread.is_alive(), "follow did not end"
        assert (seen, failed) == (["worker_deleted"], [])
        # A follower from just before the delete sees it too; one behind the
        # worker's other events, or past the delete, cannot see the worker to
        # its end: worker_not_found, as for an id that never named a worker.
        assert [e.type for e in rt.follow(worker_id="w", cursor=deleted.event_id)] == [
            "worker_deleted"
        ]
        for cursor in (1, deleted.event_id + 1):
            with pytest.raises(errors.WorkerNotFound):
                next(rt.follow(worker_id="w", cursor=cursor))


@pytest.mark.parametrize("store", STORES)
def test_a_worker_created_again_never_reads_the_earlier_ones_events(
    store: str, tmp_path: Path
) -> None:
    with _open(store, tmp_path) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        ack = rt.dispatch(c.SendInput(worker_id="w", content="old"))
        wait_for_run_end(rt, ack.run_id)
        rt.dispatch(c.StopWorker(worker_id="w"))
        rt.dispatch(c.DeleteWorker(worker_id="w"))
        _stopped(rt, "gone")
        gone = rt.dispatch(c.DeleteWorker(worker_id="gone"))
        created = rt.dispatch(c.CreateWorker(worker_id="w"))
        # Neither the earlier worker's events nor its worker_deleted.
        assert _types(rt, "w", 1) == [("worker_created", created.last_event_id)]
        assert _types(rt, "gone", gone.event_id) == [("worker_deleted", gone.event_id)]
    if store == "fs":
        with _open(store, tmp_path) as rt:
            assert _types(rt, "w", 1) == [("worker_created", created.last_event_id)]
            with pytest.raises(errors.WorkerNotFound):  # a restart forgets the delete
                rt.dispatch(c.ReadEvents(worker_id="gone", cursor=gone.event_id))


def test_the_deletions_remembered_are_bounded_the_oldest_forgotten_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state_module, "_DELETED_KEPT", 2)
    with Runtime.open(RuntimeConfig(runtime_id="rt-test")) as rt:
        deleted = {}
        for worker_id in ("a", "b", "c"):
            _stopped(rt, worker_id)
            deleted[worker_id] = rt.dispatch(c.DeleteWorker(worker_id=worker_id)).event_id
        with pytest.raises(errors.WorkerNotFound):
            rt.dispatch(c.ReadEvents(worker_id="a", cursor=deleted["a"]))
        for worker_id in ("b", "c"):
            event_id = deleted[worker_id]
            assert _types(rt, worker_id, event_id) == [("worker_deleted", event_id)]


def test_queued_runs_survive_close_and_resume_in_order(tmp_path: Path, gate: GateEngine) -> None:
    data = str(tmp_path / "data")
    with _fs_runtime(gate, data) as rt:
        _worker(rt)
        active = rt.dispatch(c.SendInput(worker_id="w", content="a"))
        gate.wait_started(active.run_id)
        queued = [
            rt.dispatch(c.SendInput(worker_id="w", content=t, on_busy=ENQUEUE)).run_id for t in "bc"
        ]
    reopened_gate = GateEngine()
    with _fs_runtime(reopened_gate, data) as rt:
        assert rt.dispatch(c.GetRun(worker_id="w", run_id=active.run_id)).status is (
            RunStatus.INTERRUPTED
        )
        for run_id in queued:
            reopened_gate.open(run_id)
        assert wait_for_run_end(rt, queued[1]).type == "run_completed"
        texts = [(role, text) for role, text, _ in _transcript(rt)]
        assert texts == [
            (Role.USER, "a"),
            (Role.USER, "b"),
            (Role.ASSISTANT, "echo: b"),
            (Role.USER, "c"),
            (Role.ASSISTANT, "echo: c"),
        ]
