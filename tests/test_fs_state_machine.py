"""State machines on the fs store.

- :class:`FsRuntimeMachine` is the core's dispatcher-against-a-model machine
  (``support/runtime_machine.py``) on the fs store, plus a rule that closes and
  reopens the runtime mid-run: every rule and invariant must still hold.
- :class:`StoreMachine` drives the memory store (the reference) and the fs
  store with the same writes (run versions, queues, per-worker events,
  deletes and re-creations) and asserts every read agrees (run pages,
  filtered event reads included), across clean reopens and across crashes
  (a failed flush, then a reopen: the fs store must come back exactly as of
  its last successful sync).

Both run with a tiny journal limit, so checkpoints run in the background
between (and during) their steps.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worker_runtime import Runtime
from worker_runtime.clock import new_id
from worker_runtime.domain import (
    Diagnostic,
    Event,
    InputKind,
    PendingInput,
    Role,
    Run,
    RunStatus,
    Severity,
    TranscriptEntry,
    WorkerRef,
    WorkerStatus,
)
from worker_runtime.errors import RuntimeUnavailable
from worker_runtime.stores import IdempotencyRecord, MemoryStore
from worker_runtime.stores.fs import FsStore
from worker_runtime.stores.fs import flush as fs_flush

from .support import strategies
from .support.fs_support import NOW, RUNTIME_ID, FaultyOps, open_runtime, worker_record
from .support.runtime_machine import MAX_QUEUED, POOL, RuntimeMachine


class SmallJournal:
    """A tiny journal limit while a machine runs, so that background checkpoints
    (journal rotations) happen every few flushes, between and during its steps."""

    def __init__(self) -> None:
        self.saved = fs_flush.JOURNAL_LIMIT
        fs_flush.JOURNAL_LIMIT = 2048

    def close(self) -> None:
        fs_flush.JOURNAL_LIMIT = self.saved


class FsRuntimeMachine(RuntimeMachine):
    """The core machine on the fs store, with restarts."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="wr-fs-machine-"))
        self.limit = SmallJournal()
        super().__init__()

    def open_runtime(self) -> Runtime:
        return open_runtime(
            self.data_dir,
            engines={"gate": self.gate},
            max_concurrent_runs=POOL,
            max_queued_runs=MAX_QUEUED,
        )

    @rule()
    def close_and_reopen(self) -> None:
        self.restart()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.limit.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)


FsRuntimeMachine.TestCase.settings = settings(
    stateful_step_count=25, deadline=None, max_examples=25
)
TestFsRuntimeMachine = FsRuntimeMachine.TestCase


class StoreMachine(RuleBasedStateMachine):
    """Memory store (the reference) and fs store, written alike, read alike."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = SmallJournal()
        self.data_dir = Path(tempfile.mkdtemp(prefix="wr-fs-stores-"))
        self.ops = FaultyOps()
        self.memory = MemoryStore(RUNTIME_ID)
        self.lengths: dict[str, int] = {}  # transcript length per worker
        self.deleted: set[str] = set()  # ids deleted at some point (read after, too)
        self.last_event = 0
        self.last_diagnostic = 0
        self.fs = self._open_fs()
        self.durable = self._model()

    def _open_fs(self) -> FsStore:
        store = FsStore.open(str(self.data_dir), RUNTIME_ID, new_id, ops=self.ops)
        self.loaded = store.load()
        return store

    def _model(self) -> tuple[MemoryStore, dict[str, int], int, int]:
        return copy.deepcopy((self.memory, self.lengths, self.last_event, self.last_diagnostic))

    def teardown(self) -> None:
        try:
            self.fs.close()
        finally:
            self.limit.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def both(self, method: str, *args: object) -> None:
        getattr(self.memory, method)(*args)
        getattr(self.fs, method)(*args)

    def _event(self, worker_id: str | None, type_: str = "t") -> int:
        self.last_event += 1
        ref = WorkerRef(runtime_id=RUNTIME_ID, worker_id=worker_id) if worker_id else None
        event = Event(event_id=self.last_event, type=type_, created_at=NOW, worker_ref=ref)
        self.both("append_event", event)
        return self.last_event

    def _put(self, worker_id: str, status: WorkerStatus, name: str | None) -> None:
        record = worker_record(
            worker_id,
            status=status,
            display_name=name,
            transcript_len=self.lengths.setdefault(worker_id, 0),
            last_event_id=self.last_event,
        )
        self.both("put_worker", record)

    # -- writes --------------------------------------------------------------------

    @rule(
        worker_id=strategies.short_ids,
        status=st.sampled_from(WorkerStatus),
        name=st.none() | strategies.text,
    )
    def put_worker(self, worker_id: str, status: WorkerStatus, name: str | None) -> None:
        self._event(worker_id)
        self._put(worker_id, status, name)

    @precondition(lambda self: self.lengths)
    @rule(data=st.data(), content=strategies.text, chunks=st.integers(1, 3))
    def input_and_output(self, data: st.DataObject, content: str, chunks: int) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.lengths)))
        for i in range(chunks):
            entry = TranscriptEntry(
                sequence=self.lengths[worker_id],
                role=Role.USER if i == 0 else Role.ASSISTANT,
                content=content * (i + 1),
                event_id=self._event(worker_id),
                created_at=NOW,
                run_id=f"run-{self.lengths[worker_id]}",
            )
            self.both("append_transcript", worker_id, entry)
            self.lengths[worker_id] += 1
            self._put(worker_id, WorkerStatus.RUNNING, None)

    @precondition(lambda self: self.lengths)
    @rule(
        data=st.data(),
        run=st.integers(0, 5),
        status=st.sampled_from(RunStatus),
        content=strategies.text,
        pgid=st.none() | st.integers(1, 1 << 30),
    )
    def put_run(
        self, data: st.DataObject, run: int, status: RunStatus, content: str, pgid: int | None
    ) -> None:
        """A version of a run (every version is put: queued, running, finished)."""
        worker_id = data.draw(st.sampled_from(sorted(self.lengths)))
        queued = status is RunStatus.QUEUED
        record = Run(
            run_id=f"run-{run}",
            status=status,
            queued_at=NOW,
            input_sequence=None if queued else run,
            started_at=None if queued else NOW,
            output_chars=len(content),
            pending=PendingInput(kind=InputKind.USER, content=content) if queued else None,
            pgid=pgid,
        )
        self.both("put_run", worker_id, record)

    @precondition(lambda self: self.lengths)
    @rule(data=st.data(), queue=st.lists(st.integers(0, 5), max_size=3))
    def queue(self, data: st.DataObject, queue: list[int]) -> None:
        """The worker record's FIFO of queued run ids."""
        worker_id = data.draw(st.sampled_from(sorted(self.lengths)))
        self._event(worker_id)
        record = worker_record(
            worker_id,
            status=WorkerStatus.RUNNING,
            transcript_len=self.lengths[worker_id],
            last_event_id=self.last_event,
        )
        self.both(
            "put_worker", dataclasses.replace(record, queued=tuple(f"run-{i}" for i in queue))
        )

    @precondition(lambda self: self.lengths)
    @rule(data=st.data())
    def delete_worker(self, data: st.DataObject) -> None:
        """``worker_deleted`` first, then the delete, in one operation."""
        worker_id = data.draw(st.sampled_from(sorted(self.lengths)))
        self._event(worker_id, "worker_deleted")
        self.both("delete_worker", worker_id)
        del self.lengths[worker_id]
        self.deleted.add(worker_id)

    @rule(message=strategies.text)
    def diagnose(self, message: str) -> None:
        self.last_diagnostic += 1
        diagnostic = Diagnostic(
            id=self.last_diagnostic,
            severity=Severity.INFO,
            code="c",
            message=message,
            created_at=NOW,
        )
        self.both("append_diagnostic", diagnostic)

    @rule(key=st.sampled_from(["a", "b", "c", "../../x", "k" * 200]), value=st.integers())
    def remember(self, key: str, value: int) -> None:
        record = IdempotencyRecord(
            key=key, fingerprint=str(value), command="C", result={"v": value}, created_at=NOW
        )
        self.both("put_idempotency", record)

    @rule()
    def sync(self) -> None:
        self.fs.sync()
        self.durable = self._model()

    @rule()
    def close_and_reopen(self) -> None:
        self.fs.close()
        self.durable = self._model()
        self.fs = self._open_fs()
        assert self.loaded.new_diagnostics == []
        self._compare_loaded()

    @rule(fault=st.sampled_from(["fail_write", "fail_journal"]))
    def crash(self, fault: str) -> None:
        """The next flush fails (before writing anything, or after writing the logs
        but before its commit line): what was synced survives, nothing more."""
        setattr(self.ops, fault, True)
        with contextlib.suppress(RuntimeUnavailable):
            self.fs.close()
        setattr(self.ops, fault, False)
        self.memory, self.lengths, self.last_event, self.last_diagnostic = copy.deepcopy(
            self.durable
        )
        self.deleted |= set(self.lengths)  # ids that may have lost a delete: read them too
        self.fs = self._open_fs()
        codes = {code for code, _, _ in self.loaded.new_diagnostics}
        # A worker whose creation never committed has its files moved aside.
        allowed = {"store_torn_tail", "store_incomplete_worker", "store_quarantined"}
        assert codes <= allowed, self.loaded.new_diagnostics
        self._compare_loaded()
        # Ids of events cut as uncommitted are kept by placeholders, never reused.
        lost = self.fs.read_events(self.last_event + 1, 1000)
        assert all(e.type == "event_lost" for e in lost)
        self.memory_lost(lost)

    def memory_lost(self, lost: list[Event]) -> None:
        for event in lost:
            self.memory.append_event(event)
            self.last_event = event.event_id

    def _compare_loaded(self) -> None:
        expected = self.memory.load()
        assert self.loaded.workers == expected.workers
        assert self.loaded.last_event_id >= expected.last_event_id
        assert self.loaded.diagnostic_count == expected.diagnostic_count
        assert self.loaded.last_diagnostic_id == expected.last_diagnostic_id

    # -- reads ---------------------------------------------------------------------

    @rule(data=st.data(), start=st.integers(0, 12), limit=st.integers(1, 6))
    def read_transcript(self, data: st.DataObject, start: int, limit: int) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.lengths) or ["none"]))
        assert self.fs.read_transcript(worker_id, start, limit) == self.memory.read_transcript(
            worker_id, start, limit
        )

    @rule(cursor=st.integers(0, 40), limit=st.integers(1, 8))
    def read_events(self, cursor: int, limit: int) -> None:
        assert self.fs.read_events(cursor, limit) == self.memory.read_events(cursor, limit)

    @rule(data=st.data(), after=st.none() | st.integers(0, 6), limit=st.integers(0, 4))
    def list_runs(self, data: st.DataObject, after: int | None, limit: int) -> None:
        worker_id = data.draw(st.sampled_from(sorted(set(self.lengths) | self.deleted) or ["x"]))
        after_id = None if after is None else f"run-{after}"
        assert self.fs.list_runs(worker_id, after_id, limit) == self.memory.list_runs(
            worker_id, after_id, limit
        )

    @rule(data=st.data(), cursor=st.integers(0, 40), limit=st.integers(1, 8))
    def read_worker_events(self, data: st.DataObject, cursor: int, limit: int) -> None:
        worker_id = data.draw(st.sampled_from(sorted(set(self.lengths) | self.deleted) or ["x"]))
        assert self.fs.read_events(cursor, limit, worker_id) == self.memory.read_events(
            cursor, limit, worker_id
        )

    @precondition(lambda self: self.lengths)
    @rule(data=st.data(), run=st.integers(0, 6))
    def get_run(self, data: st.DataObject, run: int) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.lengths)))
        assert self.fs.get_run(worker_id, f"run-{run}") == self.memory.get_run(
            worker_id, f"run-{run}"
        )

    @invariant()
    def logs_agree(self) -> None:
        assert list(self.fs.read_diagnostics()) == list(self.memory.read_diagnostics())
        assert self.fs.read_events(0, 1000) == self.memory.read_events(0, 1000)
        for key in ("a", "b", "c", "../../x", "k" * 200):
            assert self.fs.get_idempotency(key) == self.memory.get_idempotency(key)
        for worker_id, length in self.lengths.items():
            assert self.fs.read_transcript(worker_id, 0, 1000) == self.memory.read_transcript(
                worker_id, 0, 1000
            )
            assert len(self.fs.read_transcript(worker_id, 0, 1000)) == length
        for worker_id in set(self.lengths) | self.deleted:
            assert self.fs.list_runs(worker_id, None, 100) == self.memory.list_runs(
                worker_id, None, 100
            )
            assert self.fs.read_events(0, 1000, worker_id) == self.memory.read_events(
                0, 1000, worker_id
            )


StoreMachine.TestCase.settings = settings(stateful_step_count=30, deadline=None)
TestStoreMachine = StoreMachine.TestCase
