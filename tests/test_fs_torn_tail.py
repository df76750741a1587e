"""Torn tails: for every byte offset inside the last record of each log, reopening
keeps every earlier record, reports the cut (keeping the bytes aside), and the
next append is valid."""

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
    ProfileSelector,
    Role,
    Run,
    RunStatus,
    RuntimeRecord,
    Severity,
    TranscriptEntry,
    WorkerIntent,
    WorkerRecord,
    WorkerStatus,
)
from worker_runtime.stores.base import IdempotencyRecord
from worker_runtime.stores.fs import FsStore
from worker_runtime.stores.fs_files import encode_worker

from .fs_support import RUNTIME_ID, runtime_dir

NOW = "2024-01-01T00:00:00.000Z"
N = 3  # records per log in the fixture


def _worker(transcript_len: int) -> WorkerRecord:
    return WorkerRecord(
        runtime_id=RUNTIME_ID,
        worker_id="w",
        display_name=None,
        status=WorkerStatus.IDLE,
        intent=WorkerIntent(),
        profile=ProfileSelector(),
        config_bundle=None,
        requested_capabilities=(),
        workspace_refs=(),
        mount_refs=(),
        created_at=NOW,
        updated_at=NOW,
        transcript_len=transcript_len,
    )


def _entry(i: int) -> TranscriptEntry:
    # Every entry cites event 1, which no test tears: an entry citing a torn event
    # is cut as unacknowledged (tested with the runtime in test_fs_corrupt.py).
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
        lagging_record: bool = False,
    ) -> None:
        self.rel, self.append, self.read, self.make = rel, append, read, make
        self.lagging_record = lagging_record


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
        lambda s, i: (s.append_transcript("w", _entry(i)), s.put_worker(_worker(i + 1))),
        lambda s: s.read_transcript("w", 0, 100),
        _entry,
        # A torn transcript entry belongs to a flush that never renamed the
        # worker record, so the record on disk still counts one entry fewer.
        lagging_record=True,
    ),
    Log(
        "workers/w/runs.jsonl",
        lambda s, i: s.put_run("w", _run(i)),
        lambda s: [r for i in range(N + 1) if (r := s.get_run("w", f"r{i}"))],
        _run,
    ),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with N records in every log."""
    data_dir = tmp_path_factory.mktemp("pristine")
    store = FsStore.open(str(data_dir), RUNTIME_ID, new_id)
    store.load()
    store.put_runtime(RuntimeRecord(runtime_id=RUNTIME_ID, display_name=None, created_at=NOW))
    store.put_worker(_worker(0))
    for log in LOGS:
        for i in range(N):
            log.append(store, i)
    store.close()
    return data_dir


def _cuts(path: Path) -> tuple[int, list[int]]:
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    return start, list(range(start + 1, len(data)))


@pytest.mark.parametrize("log", LOGS, ids=[log.rel for log in LOGS])
def test_every_torn_tail_is_cut_and_the_log_stays_appendable(
    pristine: Path, tmp_path: Path, log: Log
) -> None:
    source = runtime_dir(pristine) / log.rel
    original = source.read_bytes()
    start, offsets = _cuts(source)
    expected = [log.make(i) for i in range(N - 1)]
    for offset in offsets:
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        target = runtime_dir(work) / log.rel
        with target.open("r+b") as f:
            f.truncate(offset)
        if log.lagging_record:
            (runtime_dir(work) / "workers/w/worker.json").write_bytes(
                encode_worker(0, _worker(N - 1))
            )

        store = FsStore.open(str(work), RUNTIME_ID, new_id)
        problems = store.load().new_diagnostics
        assert log.read(store) == expected, offset
        torn = [p for p in problems if p[0] == "store_torn_tail"]
        assert len(torn) == 1 and log.rel in torn[0][1], (offset, problems)
        assert [p for p in problems if p[0] != "store_torn_tail"] == []
        (aside,) = target.parent.glob(target.name + ".torn-*")
        assert aside.read_bytes() == original[start:offset]

        log.append(store, N - 1)  # the record that was torn, written again
        store.close()
        reopened = FsStore.open(str(work), RUNTIME_ID, new_id)
        assert reopened.load().new_diagnostics == []
        assert log.read(reopened) == [log.make(i) for i in range(N)]
        reopened.close()
    assert target.read_bytes() == original


def test_trailing_garbage_after_a_crash_is_cut(pristine: Path, tmp_path: Path) -> None:
    # Some file systems leave zero-filled blocks past the last complete write.
    shutil.copytree(pristine, tmp_path / "work")
    events = runtime_dir(tmp_path / "work") / "events.jsonl"
    with events.open("ab") as f:
        f.write(b"\x00" * 100 + b"\n" + b"\x00" * 50)
    store = FsStore.open(str(tmp_path / "work"), RUNTIME_ID, new_id)
    state = store.load()
    assert state.last_event_id == N
    assert [p[0] for p in state.new_diagnostics] == ["store_torn_tail"]
    assert store.read_events(1, 100) == [_event(i) for i in range(N)]
    store.close()
