"""The store interface's run history, per-worker event reads and delete (issue 11),
on the memory store (the reference); the fs store is held to the same answers by
``test_fs_state_machine.StoreMachine`` and has its own tests in ``test_fs_runs.py``."""

from __future__ import annotations

import pytest

from worker_runtime.codec import from_json, to_json
from worker_runtime.domain import (
    Event,
    InputKind,
    PendingInput,
    Role,
    Run,
    RunStatus,
    TranscriptEntry,
    WorkerRecord,
    WorkerRef,
)
from worker_runtime.stores import MemoryStore

from .support.fs_support import NOW, RUNTIME_ID, worker_record


def run(run_id: str, status: RunStatus = RunStatus.QUEUED, **changes: object) -> Run:
    return Run(run_id=run_id, status=status, queued_at=NOW, **changes)  # type: ignore[arg-type]


def event(event_id: int, worker_id: str | None) -> Event:
    ref = WorkerRef(runtime_id=RUNTIME_ID, worker_id=worker_id) if worker_id else None
    return Event(event_id=event_id, type="t", created_at=NOW, worker_ref=ref)


def test_every_version_is_kept_latest_wins_order_is_first_put() -> None:
    store = MemoryStore(RUNTIME_ID)
    store.put_run("w", run("a"))
    store.put_run("w", run("b"))
    store.put_run("w", run("a", RunStatus.RUNNING, input_sequence=0, started_at=NOW))
    store.put_run("w", run("c"))
    store.put_run("w", run("a", RunStatus.COMPLETED, input_sequence=0, reply_sequence=1))
    store.put_run("other", run("z"))
    runs = store.list_runs("w", None, 10)
    assert [r.run_id for r in runs] == ["a", "b", "c"]
    assert runs[0].status is RunStatus.COMPLETED and runs[0].reply_sequence == 1
    assert store.get_run("w", "a") == runs[0]
    assert store.get_run("w", "b") == run("b")  # any status, queued included
    assert store.get_run("w", "z") is None and store.get_run("nobody", "a") is None


def test_list_runs_pages_after_a_run_id() -> None:
    store = MemoryStore(RUNTIME_ID)
    for i in range(7):
        store.put_run("w", run(f"r{i}"))
    assert [r.run_id for r in store.list_runs("w", None, 3)] == ["r0", "r1", "r2"]
    assert [r.run_id for r in store.list_runs("w", "r2", 3)] == ["r3", "r4", "r5"]
    assert [r.run_id for r in store.list_runs("w", "r5", 3)] == ["r6"]
    assert store.list_runs("w", "r6", 3) == []
    assert store.list_runs("w", "unknown", 3) == []
    assert store.list_runs("w", None, 0) == []
    assert store.list_runs("nobody", None, 3) == []


def test_read_events_filtered_by_worker() -> None:
    store = MemoryStore(RUNTIME_ID)
    owners = ["a", "b", None, "a", "b", "b", "a", None, "a"]
    for i, owner in enumerate(owners, start=1):
        store.append_event(event(i, owner))
    ids = [e.event_id for e in store.read_events(0, 100, worker_id="a")]
    assert ids == [1, 4, 7, 9]
    assert [e.event_id for e in store.read_events(4, 2, worker_id="a")] == [4, 7]
    assert [e.event_id for e in store.read_events(5, 100, worker_id="a")] == [7, 9]
    assert store.read_events(10, 100, worker_id="a") == []
    assert store.read_events(0, 100, worker_id="nobody") == []
    assert [e.event_id for e in store.read_events(3, 2)] == [3, 4]  # unfiltered as before


def test_delete_removes_everything_and_the_id_starts_fresh() -> None:
    store = MemoryStore(RUNTIME_ID)
    store.append_event(event(1, "w"))
    store.put_worker(worker_record("w", transcript_len=1, last_event_id=1))
    store.append_transcript(
        "w", TranscriptEntry(sequence=0, role=Role.USER, content="x", event_id=1, created_at=NOW)
    )
    store.put_run("w", run("r"))
    store.put_worker(worker_record("keep"))
    store.append_event(event(2, "w"))  # worker_deleted comes before the delete
    store.delete_worker("w")
    store.delete_worker("never-there")  # ignored
    assert [w.worker_id for w in store.load().workers] == ["keep"]
    assert store.read_transcript("w", 0, 10) == []
    assert store.get_run("w", "r") is None and store.list_runs("w", None, 10) == []
    assert store.read_events(0, 10, worker_id="w") == []
    assert [e.event_id for e in store.read_events(0, 10)] == [1, 2]  # the log keeps its lines
    store.append_event(event(3, "w"))
    store.put_worker(worker_record("w", last_event_id=3))
    assert [w.worker_id for w in store.load().workers] == ["keep", "w"]
    assert [e.event_id for e in store.read_events(0, 10, worker_id="w")] == [3]
    assert store.read_transcript("w", 0, 10) == []


def test_new_fields_round_trip_and_version_1_records_load() -> None:
    queued = run("q", pending=PendingInput(kind=InputKind.SYSTEM, content="later"), pgid=42)
    assert from_json(Run, to_json(queued)) == queued
    assert "pending" not in to_json(run("p")) and "pgid" not in to_json(run("p"))
    old = {"run_id": "r", "status": "completed", "input_sequence": 3, "started_at": NOW}
    loaded = from_json(Run, old)
    assert (loaded.input_sequence, loaded.started_at, loaded.queued_at) == (3, NOW, None)
    assert (loaded.output_chars, loaded.pending, loaded.reply_sequence) == (0, None, None)
    record = worker_record("w")
    data = to_json(record)
    assert from_json(WorkerRecord, data).queued == ()
    with_queue = from_json(WorkerRecord, {**data, "queued": ["r1", "r2"]})
    assert with_queue.queued == ("r1", "r2")
    assert from_json(WorkerRecord, to_json(with_queue)) == with_queue


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_run_pages_cover_the_history_once(limit: int) -> None:
    store = MemoryStore(RUNTIME_ID)
    for i in range(11):
        store.put_run("w", run(f"r{i}"))
        store.put_run("w", run(f"r{i}", RunStatus.RUNNING))
    seen: list[str] = []
    after: str | None = None
    while page := store.list_runs("w", after, limit):
        assert len(page) <= limit
        seen += [r.run_id for r in page]
        after = page[-1].run_id
    assert seen == [f"r{i}" for i in range(11)]
