"""Torn tails: for every byte offset inside the last record of each log (and of
the commit journal), reopening keeps every earlier record, reports the cut
(keeping the bytes aside), and the next append is valid."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker_runtime.clock import new_id
from worker_runtime.domain import (
    Diagnostic,
    Event,
    Role,
    Run,
    RunStatus,
    RuntimeRecord,
    Severity,
    TranscriptEntry,
)
from worker_runtime.errors import RuntimeUnavailable
from worker_runtime.stores.base import IdempotencyRecord
from worker_runtime.stores.fs import FsStore

from .support.fs_support import NOW, RUNTIME_ID, FaultyOps, NoSyncOps, runtime_dir, worker_record

FAST = NoSyncOps()  # reopening hundreds of copies: what is on disk matters here, not fsync
N = 3  # records per log in the fixture
KEEP = 100 * 365 * 86400.0  # the fixture's idempotency records (stamped NOW) never expire here


def _entry(i: int) -> TranscriptEntry:
    return TranscriptEntry(sequence=i, role=Role.USER, content=f"m{i}", event_id=1, created_at=NOW)


def _event(i: int) -> Event:
    return Event(event_id=i + 1, type="test", created_at=NOW, data={"i": i})


def _run(i: int) -> Run:
    return Run(run_id=f"r{i}", status=RunStatus.COMPLETED, input_sequence=i, started_at=NOW)


def _diagnostic(i: int) -> Diagnostic:
    return Diagnostic(id=i + 1, severity=Severity.INFO, code="c", message=f"d{i}", created_at=NOW)


def _key(i: int) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=f"k{i}", fingerprint="f", command="X", result={"i": i}, created_at=NOW
    )


class Log:
    """How to append the i-th record of one log and read the log back."""

    def __init__(
        self,
        rel: str,
        append: Callable[[FsStore, int], None],
        read: Callable[[FsStore], list[Any]],
        make: Callable[[int], Any],
    ) -> None:
        self.rel, self.append, self.read, self.make = rel, append, read, make


LOGS = [
    Log(
        "events.jsonl",
        lambda s, i: s.append_event(_event(i)),
        lambda s: s.read_events(1, 100),
        _event,
    ),
    Log(
        "diagnostics.jsonl",
        lambda s, i: s.append_diagnostic(_diagnostic(i)),
        lambda s: list(s.read_diagnostics()),
        _diagnostic,
    ),
    Log(
        "idempotency.jsonl",
        lambda s, i: s.put_idempotency(_key(i)),
        lambda s: [r for i in range(N + 1) if (r := s.get_idempotency(f"k{i}"))],
        _key,
    ),
    Log(
        "workers/w/transcript.jsonl",
        lambda s, i: (
            s.append_transcript("w", _entry(i)),
            s.put_worker(worker_record(transcript_len=i + 1)),
        ),
        lambda s: s.read_transcript("w", 0, 100),
        _entry,
    ),
    Log(
        "workers/w/runs.jsonl",
        lambda s, i: s.put_run("w", _run(i)),
        lambda s: [r for i in range(N + 1) if (r := s.get_run("w", f"r{i}"))],
        _run,
    ),
]


def _crash(store: FsStore, ops: FaultyOps) -> None:
    """Stop ``store`` the way a killed process would: nothing more is committed."""
    ops.fail_write = True
    with pytest.raises(RuntimeUnavailable):
        store.close()


@pytest.fixture(scope="module", params=["failed_commit", "last_commit"])
def pristine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with N - 1 committed records in every log and an Nth one written to
    every log (fsynced), then a crash. ``failed_commit``: the Nth records' commit
    line never made it. ``last_commit``: it did, and is the journal's last line,
    so tearing any of the Nth records means that flush never finished."""
    data_dir = tmp_path_factory.mktemp("pristine")
    ops = FaultyOps()
    store = FsStore.open(str(data_dir), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=ops)
    store.load()
    store.put_runtime(RuntimeRecord(runtime_id=RUNTIME_ID, display_name=None, created_at=NOW))
    store.put_worker(worker_record())
    for log in LOGS:
        for i in range(N - 1):
            log.append(store, i)
    store.sync()
    for log in LOGS:
        log.append(store, N - 1)
    if request.param == "failed_commit":
        ops.fail_journal = True
        with pytest.raises(RuntimeUnavailable):
            store.sync()
    else:
        store.sync()
    _crash(store, ops)
    return data_dir


def _cuts(path: Path) -> tuple[int, list[int]]:
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    return start, list(range(start + 1, len(data)))


def _fresh_copy(pristine: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)


@pytest.mark.parametrize("log", LOGS, ids=[log.rel for log in LOGS])
def test_every_torn_tail_is_cut_and_the_log_stays_appendable(
    pristine: Path, tmp_path: Path, log: Log
) -> None:
    source = runtime_dir(pristine) / log.rel
    original = source.read_bytes()
    start, offsets = _cuts(source)
    expected = [log.make(i) for i in range(N - 1)]
    work = tmp_path / "work"
    for offset in offsets:
        _fresh_copy(pristine, work)
        target = runtime_dir(work) / log.rel
        with target.open("r+b") as f:
            f.truncate(offset)

        store = FsStore.open(str(work), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=FAST)
        problems = store.load().new_diagnostics
        assert log.read(store) == expected, offset
        # This log reports its torn bytes; the others, their uncommitted last line.
        (torn,) = [p for p in problems if log.rel in p[1]]
        assert torn[0] == "store_torn_tail" and "incomplete" in torn[1], (offset, torn)
        assert {p[0] for p in problems} == {"store_torn_tail"}
        (aside,) = target.parent.glob(target.name + ".torn-*")
        assert aside.read_bytes() == original[start:offset]

        log.append(store, N - 1)  # the record that was torn, written again
        store.close()
        reopened = FsStore.open(str(work), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=FAST)
        assert reopened.load().new_diagnostics == []
        assert log.read(reopened) == [log.make(i) for i in range(N)]
        reopened.close()
    assert target.read_bytes() == original


def test_every_torn_commit_line_uncommits_its_flush(tmp_path: Path) -> None:
    data_dir = tmp_path / "pristine"
    ops = FaultyOps()
    store = FsStore.open(str(data_dir), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=ops)
    store.load()
    store.put_worker(worker_record())
    shared = LOGS[:3]  # the runtime-wide logs: the last commit line stays short
    for i in range(N):  # one commit per round: N lines in the journal
        for log in LOGS if i < N - 1 else shared:
            log.append(store, i)
        store.sync()
    _crash(store, ops)
    journal = runtime_dir(data_dir) / "journal.jsonl"
    start, offsets = _cuts(journal)
    for offset in [start, *offsets]:
        work = tmp_path / "work"
        _fresh_copy(data_dir, work)
        with (runtime_dir(work) / "journal.jsonl").open("r+b") as f:
            f.truncate(offset)
        store = FsStore.open(str(work), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=FAST)
        problems = store.load().new_diagnostics
        assert ("journal.jsonl" in str(problems)) == (offset != start)
        for log in LOGS[1:3]:  # events: the last one is now an event_lost placeholder
            assert log.read(store) == [log.make(i) for i in range(N - 1)], (offset, log.rel)
            assert any(log.rel in m and "never committed" in m for _, m, _ in problems)
        assert [e.type for e in store.read_events(1, 100)] == ["test"] * (N - 1) + ["event_lost"]
        assert store.read_transcript("w", 0, 100) == [_entry(i) for i in range(N - 1)]
        store.append_diagnostic(_diagnostic(N - 1))
        store.close()
        again = FsStore.open(str(work), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP, ops=FAST)
        assert again.load().new_diagnostics == []
        assert list(again.read_diagnostics()) == [_diagnostic(i) for i in range(N)]
        again.close()


def test_trailing_garbage_after_a_crash_is_cut(pristine: Path, tmp_path: Path) -> None:
    # Some file systems leave zero-filled blocks past the last complete write.
    _fresh_copy(pristine, tmp_path / "work")
    events = runtime_dir(tmp_path / "work") / "events.jsonl"
    with events.open("ab") as f:
        f.write(b"\x00" * 100 + b"\n" + b"\x00" * 50)
    store = FsStore.open(str(tmp_path / "work"), RUNTIME_ID, new_id, idempotency_ttl_s=KEEP)
    state = store.load()
    assert state.last_event_id == N
    assert {p[0] for p in state.new_diagnostics} == {"store_torn_tail"}
    assert store.read_events(1, 100)[: N - 1] == [_event(i) for i in range(N - 1)]
    store.close()
