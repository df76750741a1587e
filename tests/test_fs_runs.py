"""The fs store's side of issue 11: run history, queued runs, the per-worker event
index and delete, across clean reopens, crashes (the process gone after a sync,
without a checkpoint) and damaged files."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections import Counter
from pathlib import Path

import pytest

from worker_runtime.clock import new_id
from worker_runtime.domain import (
    Event,
    InputKind,
    PendingInput,
    Role,
    Run,
    RunStatus,
    TranscriptEntry,
    WorkerRef,
)
from worker_runtime.errors import RuntimeUnavailable
from worker_runtime.stores import MemoryStore
from worker_runtime.stores.fs import FsStore
from worker_runtime.stores.fs.fileops import FileOps
from worker_runtime.stores.fs.tombstones import PREFIX

from .support.fs_support import (
    NOW,
    RUNTIME_ID,
    FaultyOps,
    child,
    read_line,
    runtime_dir,
    worker_record,
)


def open_fs(data_dir: Path, ops: FileOps | None = None) -> FsStore:
    return FsStore.open(str(data_dir), RUNTIME_ID, new_id, ops=ops)


def crash(store: FsStore) -> None:
    """The process is gone after its last sync: no checkpoint, the lock dropped."""
    store._flusher.close()
    store._lock_file.release()


def event(event_id: int, worker_id: str | None, type_: str = "t") -> Event:
    ref = WorkerRef(runtime_id=RUNTIME_ID, worker_id=worker_id) if worker_id else None
    return Event(event_id=event_id, type=type_, created_at=NOW, worker_ref=ref)


class Writer:
    """Writes a store the way the runtime does: events with contiguous ids."""

    def __init__(self, store: FsStore, last_event: int = 0) -> None:
        self.store = store
        self.last = last_event

    def event(self, worker_id: str | None, type_: str = "t") -> int:
        self.last += 1
        self.store.append_event(event(self.last, worker_id, type_))
        return self.last

    def create(self, worker_id: str, transcript: int = 0) -> None:
        last = self.event(worker_id, "worker_created")
        self.store.put_worker(worker_record(worker_id, last_event_id=last))
        for i in range(transcript):
            entry = TranscriptEntry(
                sequence=i, role=Role.USER, content=f"x{i}", event_id=last, created_at=NOW
            )
            self.store.append_transcript(worker_id, entry)
        if transcript:
            self.store.put_worker(worker_record(worker_id, transcript_len=transcript))


def queued(run_id: str, content: str = "later") -> Run:
    return Run(
        run_id=run_id,
        status=RunStatus.QUEUED,
        queued_at=NOW,
        pending=PendingInput(kind=InputKind.USER, content=content),
    )


def history(store: FsStore, worker_id: str) -> list[Run]:
    return store.list_runs(worker_id, None, 1000)


# -- run history and queued runs -------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "crash"])
def test_run_versions_and_queued_runs_survive_a_restart(tmp_path: Path, how: str) -> None:
    store = open_fs(tmp_path)
    w = Writer(store)
    w.create("w")
    store.put_run("w", queued("a"))
    store.put_run("w", queued("b", "second"))
    store.put_run("w", queued("c", "third"))
    running = Run(
        run_id="a", status=RunStatus.RUNNING, queued_at=NOW, input_sequence=0, started_at=NOW
    )
    store.put_run("w", running)
    store.put_run("w", Run(**{**_fields(running), "pgid": 4242}))
    store.put_run("w", Run(**{**_fields(queued("b")), "status": RunStatus.CANCELLED}))
    record = worker_record("w", last_event_id=1)
    record = dataclasses.replace(record, queued=("c",), active_run=store.get_run("w", "a"))
    store.put_worker(record)
    store.sync()
    before = history(store, "w")
    assert [r.run_id for r in before] == ["a", "b", "c"]
    assert before[0].pgid == 4242 and before[1].status is RunStatus.CANCELLED
    (store.close if how == "close" else lambda: crash(store))()
    store = open_fs(tmp_path)
    try:
        assert store.load().new_diagnostics == []
        assert store.load().workers == [record]
        assert history(store, "w") == before
        assert store.get_run("w", "c") == queued("c", "third")
        assert [r.run_id for r in store.list_runs("w", "a", 1)] == ["b"]
        assert store.list_runs("w", "zzz", 5) == []
    finally:
        store.close()


def _fields(run: Run) -> dict[str, object]:
    return {name: getattr(run, name) for name in Run.__dataclass_fields__}


def test_queued_runs_survive_kill_9(tmp_path: Path) -> None:
    script = """
        import sys
        import time
        from worker_runtime.clock import new_id
        from worker_runtime.domain import *
        from worker_runtime.stores.fs import FsStore
        from tests.support.fs_support import worker_record, NOW
        from dataclasses import replace
        store = FsStore.open(sys.argv[1], "rt-fs", new_id)
        store.put_worker(replace(worker_record("w"), queued=("q1", "q2")))
        for i in (1, 2):
            store.put_run("w", Run(run_id=f"q{i}", status=RunStatus.QUEUED, queued_at=NOW,
                                   pending=PendingInput(kind=InputKind.SYSTEM, content=f"in{i}")))
        store.sync()
        print("synced", flush=True)
        time.sleep(60)  # killed by the test
    """
    with child(script, str(tmp_path)) as process:
        assert read_line(process) == "synced"
        process.kill()
        process.wait(10)
    store = open_fs(tmp_path)
    try:
        (record,) = store.load().workers
        assert record.queued == ("q1", "q2")
        runs = history(store, "w")
        assert [r.pending for r in runs] == [
            PendingInput(kind=InputKind.SYSTEM, content="in1"),
            PendingInput(kind=InputKind.SYSTEM, content="in2"),
        ]
    finally:
        store.close()


def test_a_torn_runs_log_is_cut_and_history_kept(tmp_path: Path) -> None:
    store = open_fs(tmp_path)
    Writer(store).create("w")
    for i in range(3):
        store.put_run("w", queued(f"r{i}"))
    store.sync()
    crash(store)
    runs = runtime_dir(tmp_path) / "workers" / "w" / "runs.jsonl"
    with runs.open("ab") as f:
        f.write(b'{"run_id":"r9","stat')
    store = open_fs(tmp_path)
    try:
        codes = [code for code, _, _ in store.load().new_diagnostics]
        assert codes == ["store_torn_tail"]
        assert [r.run_id for r in history(store, "w")] == ["r0", "r1", "r2"]
        store.put_run("w", queued("r3"))
        store.sync()
        assert [r.run_id for r in history(store, "w")][-1] == "r3"
    finally:
        store.close()


# -- the per-worker event index -------------------------------------------------------


class CountingOps(FileOps):
    def __init__(self) -> None:
        self.preads = 0

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self.preads += 1
        return super().pread(fd, size, offset)


def _followed(tmp_path: Path, others: int) -> tuple[list[int], int]:
    """Worker ``a``'s events among ``others`` events of other workers; the file
    reads a filtered page from the middle of its history costs after a restart."""
    store = open_fs(tmp_path)
    w = Writer(store)
    w.create("a")
    w.create("b")
    mine = []
    for i in range(300):
        mine.append(w.event("a"))
        for _ in range(others):
            w.event("b")
        if i % 50 == 0:
            store.sync()
    store.close()
    ops = CountingOps()
    store = open_fs(tmp_path, ops)
    try:
        before = ops.preads
        page = store.read_events(mine[100], 20, worker_id="a")
        cost = ops.preads - before
        assert [e.event_id for e in page] == mine[100:120]
        assert all(e.worker_ref and e.worker_ref.worker_id == "a" for e in page)
        return [e.event_id for e in page], cost
    finally:
        store.close()


def test_a_filtered_read_does_not_grow_with_other_workers_events(tmp_path: Path) -> None:
    _, few = _followed(tmp_path / "few", 2)
    _, many = _followed(tmp_path / "many", 40)
    assert many == few  # the same file reads with 600 or 12000 other events
    assert many <= 3 * 20 + 12  # a few reads per event and a binary search: O(limit)


def test_filtered_reads_see_staged_and_written_events_and_survive_a_crash(
    tmp_path: Path,
) -> None:
    store = open_fs(tmp_path)
    w = Writer(store)
    w.create("a")
    w.create("b")
    ids = [w.event(x) for x in "abab"] + [w.event(None)]
    assert [e.event_id for e in store.read_events(0, 10, worker_id="a")] == [1, ids[0], ids[2]]
    store.sync()
    staged = w.event("a")  # not yet synced: readable, and gone after a crash
    assert store.read_events(staged, 5, worker_id="a")[0].event_id == staged
    crash(store)
    store = open_fs(tmp_path)
    try:
        assert [e.event_id for e in store.read_events(0, 10, worker_id="a")] == [1, ids[0], ids[2]]
        assert [e.event_id for e in store.read_events(0, 10, worker_id="b")] == [2, ids[1], ids[3]]
        assert store.read_events(0, 10, worker_id="nobody") == []
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["missing", "short", "garbled", "long"])
def test_an_event_index_that_disagrees_is_rebuilt(tmp_path: Path, damage: str) -> None:
    store = open_fs(tmp_path)
    w = Writer(store)
    w.create("a")
    w.create("b")
    for x in "abaab":
        w.event(x)
    store.close()
    expected = [1, 3, 5, 6]
    idx = runtime_dir(tmp_path) / "workers" / "a" / "events.idx"
    data = idx.read_bytes()
    if damage == "missing":
        idx.unlink()
    elif damage == "short":
        idx.write_bytes(data[:-8])
    elif damage == "garbled":
        idx.write_bytes(data[:-8] + (4).to_bytes(8, "little"))  # event 4 is b's
    else:  # entries of a flush that never committed are cut silently
        idx.write_bytes(data + (99).to_bytes(8, "little"))
    store = open_fs(tmp_path)
    try:
        found = store.load().new_diagnostics
        codes = [code for code, _, _ in found]
        assert codes == ([] if damage == "long" else ["store_index_rebuilt"]), found
        assert [e.event_id for e in store.read_events(0, 10, worker_id="a")] == expected
        assert len(idx.read_bytes()) == 8 * len(expected)
    finally:
        store.close()


# -- delete ---------------------------------------------------------------------------


def _populated(tmp_path: Path, ops: FileOps | None = None) -> tuple[FsStore, Writer]:
    store = open_fs(tmp_path, ops)
    w = Writer(store)
    w.create("gone", transcript=2)
    w.create("kept", transcript=1)
    store.put_run("gone", queued("r"))
    store.sync()
    return store, w


def _assert_deleted(store: FsStore, tmp_path: Path, *, reopened: bool = True) -> None:
    if reopened:
        assert [r.worker_id for r in store.load().workers] == ["kept"]
    workers = runtime_dir(tmp_path) / "workers"
    assert sorted(os.listdir(workers)) == ["kept"]  # no directory, no tombstone
    assert store.read_transcript("gone", 0, 10) == []
    assert store.get_run("gone", "r") is None and history(store, "gone") == []
    assert store.read_events(0, 100, worker_id="gone") == []


def _assert_intact(store: FsStore) -> None:
    assert [r.worker_id for r in store.load().workers] == ["gone", "kept"]
    assert [e.content for e in store.read_transcript("gone", 0, 10)] == ["x0", "x1"]
    assert store.get_run("gone", "r") == queued("r")
    assert [e.event_id for e in store.read_events(0, 100, worker_id="gone")] == [1]


@pytest.mark.parametrize("how", ["close", "crash"])
def test_a_delete_survives_a_restart_and_the_id_starts_fresh(tmp_path: Path, how: str) -> None:
    store, w = _populated(tmp_path)
    w.event("gone", "worker_deleted")
    store.delete_worker("gone")
    store.sync()
    _assert_deleted(store, tmp_path, reopened=False)
    (store.close if how == "close" else lambda: crash(store))()
    store = open_fs(tmp_path)
    try:
        assert store.load().new_diagnostics == []
        _assert_deleted(store, tmp_path)
        w = Writer(store, store.load().last_event_id)
        w.create("gone")
        store.sync()
    finally:
        store.close()
    store = open_fs(tmp_path)
    try:
        assert [r.worker_id for r in store.load().workers] == ["kept", "gone"]
        assert store.read_transcript("gone", 0, 10) == [] and history(store, "gone") == []
        assert [e.type for e in store.read_events(0, 100, worker_id="gone")] == ["worker_created"]
    finally:
        store.close()


class CrashingOps(FaultyOps):
    """Fails at one step of a delete: moving the directory aside, or removing it."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_bury = False
        self.fail_remove = False
        self.fail_events = False

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self.fail_events and self._paths.get(fd, "").endswith("events.jsonl"):
            raise OSError(errno.ENOSPC, "injected")
        super().write(fd, data)

    def replace(self, src: str, dst: str) -> None:
        if self.fail_bury and os.path.basename(dst).startswith(PREFIX):
            raise OSError(errno.EIO, "injected")
        super().replace(src, dst)

    def rmdir(self, path: str) -> None:
        if self.fail_remove and os.path.basename(path).startswith(PREFIX):
            raise OSError(errno.EIO, "injected")
        super().rmdir(path)


@pytest.mark.parametrize("step", ["bury", "commit", "remove"])
def test_a_delete_cut_by_a_crash_either_happened_or_did_not(tmp_path: Path, step: str) -> None:
    ops = CrashingOps()
    store, w = _populated(tmp_path, ops)
    w.event("gone", "worker_deleted")
    store.delete_worker("gone")
    if step == "bury":
        ops.fail_bury = True  # before anything of the delete is written
    elif step == "commit":
        ops.fail_journal = True  # moved aside, but the commit line never written
    else:
        ops.fail_remove = True  # committed, moved aside, not yet removed
    with pytest.raises(RuntimeUnavailable):
        store.sync()
    crash(store)
    tombstones = [n for n in os.listdir(runtime_dir(tmp_path) / "workers") if n.startswith(".")]
    assert tombstones if step != "bury" else not tombstones
    store = open_fs(tmp_path)
    try:
        if step == "remove":
            _assert_deleted(store, tmp_path)
        else:
            _assert_intact(store)
            assert not [n for n in os.listdir(runtime_dir(tmp_path) / "workers") if n[0] == "."]
    finally:
        store.close()


def test_a_delete_and_a_new_worker_in_one_uncommitted_flush_are_both_undone(
    tmp_path: Path,
) -> None:
    ops = CrashingOps()
    store, w = _populated(tmp_path, ops)
    w.event("gone", "worker_deleted")
    store.delete_worker("gone")
    w.create("gone", transcript=1)  # the id again, in the same flush
    assert store.read_transcript("gone", 0, 10)[0].content == "x0"
    assert store.read_events(0, 100, worker_id="gone")[0].type == "worker_created"
    ops.fail_journal = True
    with pytest.raises(RuntimeUnavailable):
        store.sync()
    crash(store)
    store = open_fs(tmp_path)
    try:
        codes = {code for code, _, _ in store.load().new_diagnostics}
        assert codes <= {"store_torn_tail", "store_quarantined"}, codes
        _assert_intact(store)
    finally:
        store.close()


def test_a_delete_and_a_new_worker_in_one_committed_flush(tmp_path: Path) -> None:
    store, w = _populated(tmp_path)
    w.event("gone", "worker_deleted")
    store.delete_worker("gone")
    w.create("gone", transcript=1)
    store.sync()
    crash(store)
    store = open_fs(tmp_path)
    try:
        assert store.load().new_diagnostics == []
        assert [e.content for e in store.read_transcript("gone", 0, 10)] == ["x0"]
        assert history(store, "gone") == []
        assert [e.type for e in store.read_events(0, 100, worker_id="gone")] == ["worker_created"]
    finally:
        store.close()


def test_a_deleted_workers_commit_line_that_never_reached_its_logs_is_undone(
    tmp_path: Path,
) -> None:
    """The commit line was written but a log it names fell short (the crash came
    first): the flush did not commit, so its delete is undone."""
    ops = CrashingOps()
    store, w = _populated(tmp_path, ops)
    w.event("gone", "worker_deleted")
    store.delete_worker("gone")
    ops.fail_events = True  # the commit line is written, the event log is not
    with pytest.raises(RuntimeUnavailable):
        store.sync()
    crash(store)
    journal = (runtime_dir(tmp_path) / "journal.jsonl").read_bytes().splitlines()
    assert b"tombstones" in journal[-1]
    store = open_fs(tmp_path)
    try:
        _assert_intact(store)
        assert not [n for n in os.listdir(runtime_dir(tmp_path) / "workers") if n[0] == "."]
    finally:
        store.close()


def test_an_event_index_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    store = open_fs(tmp_path)
    w = Writer(store)
    w.create("a")
    w.event("a")
    store.close()
    idx = runtime_dir(tmp_path) / "workers" / "a" / "events.idx"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    idx.unlink()
    idx.symlink_to(target)
    store = open_fs(tmp_path)
    try:
        codes = [code for code, _, _ in store.load().new_diagnostics]
        assert "store_corrupt" in codes and "store_index_rebuilt" in codes
        assert [e.event_id for e in store.read_events(0, 10, worker_id="a")] == [1, 2]
        assert target.read_bytes() == b"keep me"
        assert not idx.is_symlink()
        assert oct(idx.stat().st_mode & 0o777) == "0o600"
        assert oct((runtime_dir(tmp_path) / "workers" / "a").stat().st_mode & 0o777) == "0o700"
    finally:
        store.close()


# -- run pages through the run index --------------------------------------------------


class ReadCountingOps(FileOps):
    """Counts the bytes read from each file (by name); fails the run index's
    header write or its hash table's replacement if told to (a crash there)."""

    def __init__(self, fail: str | None = None) -> None:
        self.read: Counter[str] = Counter()
        self.fail = fail
        self._names: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        fd = super().open(path, flags, mode)
        self._names[fd] = os.path.basename(path)
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        self.read[self._names.get(fd, "?")] += len(data)
        return data

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.fail == "header" and self._names.get(fd) == "runs.order" and offset == 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().pwrite(fd, data, offset)

    def replace(self, src: str, dst: str) -> None:
        if self.fail == "table" and dst.endswith("runs.ids"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().replace(src, dst)


def _many_runs(store: FsStore, reference: MemoryStore, runs: int, first: int = 0) -> None:
    """Runs as a queue makes them: each queued, started two runs later, then done."""
    versions: list[Run] = []
    for i in range(first, first + runs):
        versions.append(queued(f"r{i:04}", f"input {i}"))
        if i - 2 >= first:
            started = Run(run_id=f"r{i - 2:04}", status=RunStatus.RUNNING, queued_at=NOW)
            versions += [started, dataclasses.replace(started, status=RunStatus.COMPLETED)]
    for number, run in enumerate(versions):
        store.put_run("w", run)
        reference.put_run("w", run)
        if number % 40 == 0:
            store.sync()
    store.sync()


def _reference_store() -> MemoryStore:
    reference = MemoryStore(RUNTIME_ID)
    reference.put_worker(worker_record("w"))
    return reference


def test_a_run_page_after_a_restart_reads_only_what_it_returns(tmp_path: Path) -> None:
    reference = _reference_store()
    store = open_fs(tmp_path)
    Writer(store).create("w")
    _many_runs(store, reference, 600)
    store.close()
    size = (runtime_dir(tmp_path) / "workers/w/runs.jsonl").stat().st_size
    ops = ReadCountingOps()
    store = open_fs(tmp_path, ops)
    try:
        opened = ops.read["runs.jsonl"]
        assert store.list_runs("w", "r0299", 10) == reference.list_runs("w", "r0299", 10)
        assert store.get_run("w", "r0450") == reference.get_run("w", "r0450")
        assert store.list_runs("w", None, 3) == reference.list_runs("w", None, 3)
        cost = ops.read["runs.jsonl"] - opened
        assert 0 < cost < size / 30  # 14 runs read of 600, not the whole log
        assert ops.read["runs.order"] + ops.read["runs.ids"] < 2000
        # The same answers as a full read, everywhere, and after more runs too.
        _many_runs(store, reference, 50, first=600)
        for after in [None, "r0000", "r0597", "r0598", "r0599", "r0600", "r0649", "nope"]:
            assert store.list_runs("w", after, 7) == reference.list_runs("w", after, 7)
        assert store.list_runs("w", None, 1000) == reference.list_runs("w", None, 1000)
    finally:
        store.close()


@pytest.mark.parametrize("fail", ["header", "table"])
def test_a_run_index_write_cut_short_loses_nothing(tmp_path: Path, fail: str) -> None:
    reference = _reference_store()
    store = open_fs(tmp_path)
    Writer(store).create("w")
    _many_runs(store, reference, 30)
    store.close()  # the index covers these
    store = open_fs(tmp_path, ReadCountingOps(fail))
    assert store.list_runs("w", "r0010", 5) == reference.list_runs("w", "r0010", 5)
    _many_runs(store, reference, 200, first=30)  # enough to need a larger hash table
    with pytest.raises(RuntimeUnavailable, match="could not checkpoint"):
        store.close()  # its entries are written, not its header (or table)
    for how in ("after the failed write", "after a full rewrite"):
        store = open_fs(tmp_path)
        try:
            assert store.load().new_diagnostics == [], how
            assert store.list_runs("w", None, 1000) == reference.list_runs("w", None, 1000)
            for run_id in ("r0000", "r0029", "r0030", "r0228", "r0229"):
                assert store.get_run("w", run_id) == reference.get_run("w", run_id)
                assert store.list_runs("w", run_id, 3) == reference.list_runs("w", run_id, 3)
        finally:
            store.close()


@pytest.mark.parametrize("damage", ["order missing", "ids missing", "entries garbled", "short"])
def test_a_damaged_run_index_is_read_around_and_rewritten(tmp_path: Path, damage: str) -> None:
    reference = _reference_store()
    store = open_fs(tmp_path)
    Writer(store).create("w")
    _many_runs(store, reference, 40)
    store.close()
    directory = runtime_dir(tmp_path) / "workers/w"
    order = directory / "runs.order"
    if damage == "order missing":
        order.unlink()
    elif damage == "ids missing":
        (directory / "runs.ids").unlink()
    elif damage == "entries garbled":
        data = bytearray(order.read_bytes())
        data[16:] = os.urandom(len(data) - 16)
        order.write_bytes(bytes(data))
    else:
        order.write_bytes(order.read_bytes()[:40])
    size = (directory / "runs.jsonl").stat().st_size
    for round in ("read around it", "rewritten on close"):
        ops = ReadCountingOps()
        store = open_fs(tmp_path, ops)
        try:
            assert store.list_runs("w", "r0020", 4) == reference.list_runs("w", "r0020", 4)
            assert store.get_run("w", "r0039") == reference.get_run("w", "r0039")
            if round == "rewritten on close":
                assert ops.read["runs.jsonl"] < size / 4
            assert store.list_runs("w", None, 1000) == reference.list_runs("w", None, 1000)
        finally:
            store.close()
