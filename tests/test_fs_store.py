"""The fs store through the runtime: what survives a restart, ids, paging, group
commit, and I/O failures that must never be acknowledged."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.clock import Clock, new_id
from worker_runtime.domain import Event, Role, RunStatus, RuntimeRecord, WorkerStatus
from worker_runtime.errors import IdempotencyKeyReused, RuntimeUnavailable, WorkerNotFound
from worker_runtime.stores.fs import FsStore
from worker_runtime.stores.fs import flush as fs_flush
from worker_runtime.stores.fs.fileops import FileOps
from worker_runtime.testing import GateEngine, wait_for_event, wait_for_run_end

from .support.fs_support import (
    RUNTIME_ID,
    FaultyOps,
    ShiftedClock,
    child,
    fs_config,
    open_runtime,
    read_line,
)

NOW = "2024-01-01T00:00:00.000Z"


def _converse(rt, worker_id: str, *texts: str) -> None:  # type: ignore[no-untyped-def]
    for text in texts:
        ack = rt.dispatch(c.SendInput(worker_id=worker_id, content=text))
        assert wait_for_run_end(rt, ack.run_id).type == "run_completed"


def _snapshot(rt):  # type: ignore[no-untyped-def]
    workers = rt.dispatch(c.ListWorkers(limit=1000)).workers
    return {
        "workers": workers,
        "details": [rt.dispatch(c.GetWorker(worker_id=w.worker_id)) for w in workers],
        "transcripts": [
            rt.dispatch(c.GetTranscript(worker_id=w.worker_id, limit=256)).items for w in workers
        ],
        "diagnostics": rt.dispatch(c.GetDiagnostics()).diagnostics,
        "events": rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events,
    }


def test_restart_brings_everything_back(tmp_path: Path) -> None:
    with open_runtime(tmp_path) as rt:
        first = rt.dispatch(
            c.CreateWorker(worker_id="alpha", display_name="a"), idempotency_key="k1"
        )
        rt.dispatch(c.CreateWorker(worker_id="beta"))
        rt.dispatch(c.CreateWorker(worker_id="gamma"))
        _converse(rt, "alpha", "one", "two")
        _converse(rt, "gamma", "three")
        rt.dispatch(c.StopWorker(worker_id="beta", reason="done"))
        before = _snapshot(rt)
    with open_runtime(tmp_path) as rt:
        after = _snapshot(rt)
        assert after["workers"] == before["workers"]
        assert after["details"] == before["details"]
        assert after["transcripts"] == before["transcripts"]
        assert after["diagnostics"] == before["diagnostics"]
        old_events = before["events"]
        assert after["events"][: len(old_events)] == old_events
        restarted = after["events"][len(old_events)]
        assert (restarted.type, restarted.event_id) == (
            "runtime_started",
            old_events[-1].event_id + 1,
        )
        # The idempotency key outlived the process: a retry replays, a new body is refused.
        again = rt.dispatch(
            c.CreateWorker(worker_id="alpha", display_name="a"), idempotency_key="k1"
        )
        assert again == first
        with pytest.raises(IdempotencyKeyReused):
            rt.dispatch(c.CreateWorker(worker_id="delta"), idempotency_key="k1")
        # Stopped stays stopped; counters and sequences continue where they were.
        assert rt.dispatch(c.GetWorker(worker_id="beta")).status is WorkerStatus.STOPPED
        _converse(rt, "alpha", "four")
        page = rt.dispatch(c.GetTranscript(worker_id="alpha"))
        assert [e.sequence for e in page.items] == list(range(6))
        assert [e.content for e in page.items if e.role is Role.USER] == ["one", "two", "four"]
        assert rt.dispatch(c.GetWorker(worker_id="alpha")).usage.inputs == 3


def test_runtime_id_is_created_once_per_data_dir(tmp_path: Path) -> None:
    ids = []
    for _ in range(2):
        with Runtime.open(RuntimeConfig(store="fs", data_dir=str(tmp_path / "a"))) as rt:
            ids.append(rt.runtime_id)
            assert rt.dispatch(c.GetRuntime()).runtime_id == rt.runtime_id
    other = FsStore.open(str(tmp_path / "b"), None, new_id)
    other.close()
    assert ids[0] == ids[1]
    assert (tmp_path / "a" / "default-runtime").read_text().strip() == ids[0]
    assert other.runtime_id != ids[0]
    assert (tmp_path / "a" / "runtimes" / ids[0] / "runtime.json").exists()


def test_transcript_pages_span_written_and_staged_entries(tmp_path: Path) -> None:
    with open_runtime(tmp_path) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        _converse(rt, "w", *[f"m{i}" for i in range(30)])
    with open_runtime(tmp_path) as rt:
        _converse(rt, "w", "late")
        whole = rt.dispatch(c.GetTranscript(worker_id="w", limit=256)).items
        assert [e.sequence for e in whole] == list(range(62))
        for start, limit in [(0, 1), (5, 7), (55, 10), (61, 5), (62, 3), (100, 2)]:
            page = rt.dispatch(c.GetTranscript(worker_id="w", start=start, limit=limit))
            assert page.items == whole[start : start + limit]
            assert page.total_items == 62
        events = rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events
        for cursor in (1, 17, len(events)):
            page = rt.dispatch(c.ReadEvents(cursor=cursor, limit=4)).events
            assert page == events[cursor - 1 : cursor + 3]


def test_concurrent_syncs_share_one_flush(tmp_path: Path) -> None:
    ops = FaultyOps()
    store = FsStore.open(str(tmp_path), RUNTIME_ID, new_id, ops=ops)
    store.load()
    ops.fsync_gate = threading.Event()
    leader = threading.Thread(target=store.sync)
    store.put_runtime(_runtime_record())
    leader.start()
    assert ops.in_fsync.wait(10)
    # While the leader is inside its fsync, eight more writers stage and wait.
    followers = []
    for i in range(8):
        store.append_event(_event(i + 1))
        followers.append(threading.Thread(target=store.sync))
        followers[-1].start()
    flushes = store.flushes
    ops.fsync_gate.set()
    for thread in [leader, *followers]:
        thread.join(10)
        assert not thread.is_alive()
    assert store.flushes - flushes == 2  # the leader's, then one for all eight followers
    assert [e.event_id for e in store.read_events(1, 100)] == list(range(1, 9))
    store.close()
    reopened = FsStore.open(str(tmp_path), RUNTIME_ID, new_id)
    assert reopened.load().last_event_id == 8
    reopened.close()


def _runtime_record() -> RuntimeRecord:
    return RuntimeRecord(runtime_id=RUNTIME_ID, display_name=None, created_at=NOW)


def _event(event_id: int) -> Event:
    return Event(event_id=event_id, type="test", created_at=NOW)


@pytest.mark.parametrize("fault", ["fail_fsync", "fail_write"])
def test_an_io_failure_is_never_acknowledged_nor_retried(tmp_path: Path, fault: str) -> None:
    ops = FaultyOps()
    rt = open_runtime(tmp_path, ops=ops)
    try:
        rt.dispatch(c.CreateWorker(worker_id="kept"))
        setattr(ops, fault, True)
        with pytest.raises(RuntimeUnavailable):
            rt.dispatch(c.CreateWorker(worker_id="lost"))
        setattr(ops, fault, False)
        fsyncs = ops.fsyncs
        # The failure sticks: no later write is accepted, nothing is retried; reads
        # keep working (SPEC section 10) and say the runtime is unavailable.
        with pytest.raises(RuntimeUnavailable, match="could not write") as caught:
            rt.dispatch(c.CreateWorker(worker_id="later"))
        assert caught.value.code == "runtime_unavailable"
        assert rt.dispatch(c.GetRuntime()).status == "unavailable"
        assert ops.fsyncs == fsyncs
        assert rt.status == "unavailable"
    finally:
        with pytest.raises(RuntimeUnavailable):
            rt.store.close()
    with open_runtime(tmp_path) as again:
        assert again.dispatch(c.GetWorker(worker_id="kept")).status is WorkerStatus.IDLE
        with pytest.raises(WorkerNotFound):
            again.dispatch(c.GetWorker(worker_id="later"))


_HOLD_A_RUN = """
import sys, threading
from pathlib import Path
from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.testing import GateEngine, named
from tests.support.fs_support import open_runtime
from worker_runtime.testing import wait_for_event

rt = open_runtime(Path(sys.argv[1]), engines={"gate": GateEngine()})
rt.dispatch(c.CreateWorker(worker_id="busy", profile=named("gate")))
rt.dispatch(c.CreateWorker(worker_id="halted"))
rt.dispatch(c.StopWorker(worker_id="halted"))
ack = rt.dispatch(c.SendInput(worker_id="busy", content="hello"))
wait_for_event(rt, lambda e: e.type == "run_started" and e.run_id == ack.run_id)
print(ack.run_id, flush=True)
threading.Event().wait()  # hold the run until the parent kills this process
"""


def test_a_run_active_at_a_crash_comes_back_interrupted(tmp_path: Path) -> None:
    with child(_HOLD_A_RUN, str(tmp_path)) as process:
        run_id = read_line(process)
        process.kill()
        process.wait(10)
    gate = GateEngine()
    with open_runtime(tmp_path, engines={"gate": gate}) as rt:
        busy = rt.dispatch(c.GetWorker(worker_id="busy"))
        assert busy.status is WorkerStatus.IDLE
        assert busy.active_run is None
        assert busy.last_run is not None
        assert (busy.last_run.run_id, busy.last_run.status) == (run_id, RunStatus.INTERRUPTED)
        assert busy.usage.runs_interrupted == 1
        interrupted = wait_for_event(rt, lambda e: e.type == "run_interrupted")
        assert interrupted.run_id == run_id
        assert rt.dispatch(c.GetWorker(worker_id="halted")).status is WorkerStatus.STOPPED
        codes = [d.code for d in rt.dispatch(c.GetDiagnostics()).diagnostics]
        assert "run_interrupted" in codes
        # The worker takes input again, and its transcript continues.
        ack = rt.dispatch(c.SendInput(worker_id="busy", content="again"))
        gate.open(ack.run_id)
        assert wait_for_run_end(rt, ack.run_id).type == "run_completed"
        assert ack.transcript_sequence == 1


def test_a_failed_checkpoint_fails_the_store_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_flush, "JOURNAL_LIMIT", 1)  # a checkpoint after every flush
    ops = FaultyOps()
    rt = open_runtime(tmp_path, ops=ops)
    ops.fail_records = True  # from now on a checkpoint cannot write record files
    acknowledged = []
    with pytest.raises(RuntimeUnavailable):  # the next flush reports the failure
        for i in range(200):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"))
            acknowledged.append(f"w{i}")
    assert acknowledged  # the first create's flush started the checkpoint
    with pytest.raises(RuntimeUnavailable):
        rt.store.close()
    root = tmp_path / "runtimes" / RUNTIME_ID
    assert (root / "journal.old.jsonl").exists()  # its records never reached their files
    with open_runtime(tmp_path) as again:
        listed = [w.worker_id for w in again.dispatch(c.ListWorkers(limit=1000)).workers]
        assert listed[: len(acknowledged)] == acknowledged
    assert not (root / "journal.old.jsonl").exists()
    assert all((root / "workers" / w / "worker.json").exists() for w in acknowledged)


def test_checkpoints_during_work_keep_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_flush, "JOURNAL_LIMIT", 1)
    with open_runtime(tmp_path) as rt:
        for i in range(5):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"))
            _converse(rt, f"w{i}", "one", "two")
        before = _snapshot(rt)
    with open_runtime(tmp_path) as rt:
        after = _snapshot(rt)
        assert after["details"] == before["details"]
        assert after["transcripts"] == before["transcripts"]


def test_diagnostics_page_from_the_store_also_after_a_restart(tmp_path: Path) -> None:
    def pages(rt: Runtime) -> list[list[int]]:
        out: list[list[int]] = []
        after: int | None = 0
        while after is not None:
            page = rt.dispatch(c.GetDiagnostics(after=after, limit=2))
            out.append([d.id for d in page.diagnostics])
            after = page.next_after
        return out

    with open_runtime(tmp_path) as rt:
        for name in ("a", "b", "c", "d", "e"):
            rt.dispatch(c.CreateWorker(worker_id=name))
        before = pages(rt)
    with open_runtime(tmp_path) as rt:
        after_restart = pages(rt)
    ids = [i for page in before for i in page]
    assert ids == sorted(ids) and len(ids) >= 5 and all(len(p) <= 2 for p in before)
    assert [i for page in after_restart for i in page][: len(ids)] == ids


# -- idempotency compaction while running ---------------------------------------------


class CompactionFault(FileOps):
    """Fails one step of a compaction of ``idempotency.jsonl`` (a crash there):
    replacing the log, replacing its index, or the commit line after both."""

    def __init__(self, step: str | None = None) -> None:
        self.step = step
        self.fired = False
        self._replaced = False
        self._paths: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        fd = super().open(path, flags, mode)
        self._paths[fd] = path
        return fd

    def replace(self, src: str, dst: str) -> None:
        if dst.endswith(f"/{self.step}"):
            self._fire()
        super().replace(src, dst)
        self._replaced = self._replaced or dst.endswith("idempotency.idx")

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self.step == "commit" and self._replaced and self._paths[fd].endswith("journal.jsonl"):
            self._fire()
        super().write(fd, data)

    def _fire(self) -> None:
        self.fired = True
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def _keys_on_disk(data_dir: Path) -> list[str]:
    text = (data_dir / "runtimes" / RUNTIME_ID / "idempotency.jsonl").read_text()
    return [json.loads(line)["key"] for line in text.splitlines()]


def _keyed_runtime(data_dir: Path, clock: Clock, ops: FileOps | None = None) -> Runtime:
    store = FsStore.open(str(data_dir), RUNTIME_ID, new_id, ops=ops)
    return Runtime.open(fs_config(data_dir), store=store, clock=clock)


def _until(done: Callable[[], bool], rt: Runtime) -> None:
    """Write (one create a time) until ``done()``: a checkpoint starts at the first
    flush past the journal limit that finds none still running."""
    for i in range(200):
        if done():
            return
        rt.dispatch(c.CreateWorker(worker_id=f"filler{i}"))
    raise AssertionError("no checkpoint started in 200 flushes")


def test_the_idempotency_log_is_compacted_at_checkpoints_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_flush, "JOURNAL_LIMIT", 1)  # a checkpoint after every flush
    clock = ShiftedClock()
    with _keyed_runtime(tmp_path, clock) as rt:
        for i in range(3):
            rt.dispatch(c.CreateWorker(worker_id=f"old{i}"), idempotency_key=f"old{i}")
        clock.offset = timedelta(days=2)  # those three have expired
        rt.dispatch(c.CreateWorker(worker_id="new"), idempotency_key="new")
        _until(lambda: _keys_on_disk(tmp_path) == ["new"], rt)  # no restart needed
        rt.dispatch(c.CreateWorker(worker_id="newer"), idempotency_key="newer")
        assert _keys_on_disk(tmp_path) == ["new", "newer"]  # appended after the compaction
        assert rt.dispatch(c.CreateWorker(worker_id="new"), idempotency_key="new").worker_id == (
            "new"
        )
    with _keyed_runtime(tmp_path, clock) as rt:
        assert not [d for d in rt.dispatch(c.GetDiagnostics()).diagnostics if "store" in d.code]
        with pytest.raises(IdempotencyKeyReused):
            rt.dispatch(c.CreateWorker(worker_id="other"), idempotency_key="newer")


@pytest.mark.parametrize("step", ["idempotency.jsonl", "idempotency.idx", "commit"])
def test_a_compaction_cut_short_while_running_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(fs_flush, "JOURNAL_LIMIT", 1)
    clock = ShiftedClock()
    ops = CompactionFault()
    rt = _keyed_runtime(tmp_path, clock, ops)
    try:
        for i in range(3):
            rt.dispatch(c.CreateWorker(worker_id=f"old{i}"), idempotency_key=f"old{i}")
        clock.offset = timedelta(hours=23)
        rt.dispatch(c.CreateWorker(worker_id="kept"), idempotency_key="kept")
        ops.step = step
        clock.offset = timedelta(hours=25)  # the first three have expired, "kept" not
        _until(lambda: ops.fired, rt)
        with pytest.raises(RuntimeUnavailable, match="could not write"):
            rt.dispatch(c.CreateWorker(worker_id="after"))  # as after any failed write
        assert rt.status == "unavailable"
    finally:
        with pytest.raises(RuntimeUnavailable):  # as after a crash: no checkpoint
            rt.close()
    with _keyed_runtime(tmp_path, clock) as rt:
        codes = [d.code for d in rt.dispatch(c.GetDiagnostics()).diagnostics]
        assert "store_corrupt" not in codes and "store_torn_tail" not in codes
        assert rt.dispatch(c.CreateWorker(worker_id="kept"), idempotency_key="kept").worker_id == (
            "kept"
        )
        with pytest.raises(IdempotencyKeyReused):
            rt.dispatch(c.CreateWorker(worker_id="other"), idempotency_key="kept")
