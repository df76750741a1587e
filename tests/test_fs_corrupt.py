"""Damaged stores: corrupt records, missing files, records older than their logs.

A damaged worker never stops the runtime and is never silently reset: it is
reported (``store_corrupt`` naming the file and line) and moved aside.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker_runtime import Runtime
from worker_runtime import commands as c
from worker_runtime.domain import WorkerStatus
from worker_runtime.errors import RuntimeUnavailable, StoreCorrupt, WorkerNotFound
from worker_runtime.testing import wait_for_run_end

from .support.fs_support import FaultyOps, open_runtime, runtime_dir


def _talk(rt: Runtime, worker_id: str, *texts: str) -> None:
    for text in texts:
        ack = rt.dispatch(c.SendInput(worker_id=worker_id, content=text))
        assert wait_for_run_end(rt, ack.run_id).type == "run_completed"


def _diagnostics(rt: Runtime, code: str) -> list[str]:
    return [d.message for d in rt.dispatch(c.GetDiagnostics()).diagnostics if d.code == code]


def _setup(data_dir: Path, inputs: int = 3) -> None:
    with open_runtime(data_dir) as rt:
        rt.dispatch(c.CreateWorker(worker_id="bad"))
        rt.dispatch(c.CreateWorker(worker_id="good"))
        _talk(rt, "bad", *[f"b{i}" for i in range(inputs)])
        _talk(rt, "good", "g")


def _all_events(rt: Runtime) -> list[int]:
    return [e.event_id for e in rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events]


def _assert_quarantined(
    rt: Runtime, data_dir: Path, *fragments: str, code: str = "store_corrupt"
) -> Runtime:
    """The damaged worker is reported, moved aside, and its id stays reserved (every
    command on it is ``store_corrupt`` naming the file) until an operator removes
    the quarantined files; returns the runtime reopened after that removal."""
    (message,) = [m for m in _diagnostics(rt, code) if "workers/bad/" in m]
    for fragment in fragments:
        assert fragment in message
    assert _diagnostics(rt, "store_quarantined")
    (kept,) = (runtime_dir(data_dir) / "quarantine" / "workers").iterdir()
    assert kept.name.startswith("bad-")
    for command in (
        c.GetWorker(worker_id="bad"),
        c.SendInput(worker_id="bad", content="x"),
        c.CreateWorker(worker_id="bad"),
        c.GetTranscript(worker_id="bad"),
    ):
        with pytest.raises(StoreCorrupt) as caught:
            rt.dispatch(command)
        assert caught.value.code == "store_corrupt"
        assert "workers/bad/" in caught.value.message and fragments[0] in caught.value.message
    assert "bad" not in [w.worker_id for w in rt.dispatch(c.ListWorkers()).workers]
    # The others are untouched.
    assert rt.dispatch(c.GetWorker(worker_id="good")).transcript_len == 2
    rt.close()
    with open_runtime(data_dir) as again, pytest.raises(StoreCorrupt):  # reserved after restart
        again.dispatch(c.CreateWorker(worker_id="bad"))
    shutil.rmtree(kept)  # the operator's decision
    rt = open_runtime(data_dir)
    with pytest.raises(WorkerNotFound):
        rt.dispatch(c.GetWorker(worker_id="bad"))
    rt.dispatch(c.CreateWorker(worker_id="bad"))
    _talk(rt, "bad", "fresh")
    page = rt.dispatch(c.GetTranscript(worker_id="bad"))
    assert [e.content for e in page.items] == ["fresh", "fresh"]
    return rt


def test_a_corrupt_worker_record_is_reported_and_moved_aside(tmp_path: Path) -> None:
    _setup(tmp_path)
    (runtime_dir(tmp_path) / "workers/bad/worker.json").write_bytes(b'{"format": 1, "seq": ')
    rt = open_runtime(tmp_path)
    with _assert_quarantined(rt, tmp_path, "workers/bad/worker.json", "line 1") as rt:
        ids = _all_events(rt)
        assert ids == sorted(set(ids))


def test_a_corrupt_line_inside_a_transcript(tmp_path: Path) -> None:
    _setup(tmp_path)
    path = runtime_dir(tmp_path) / "workers/bad/transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b"{" + b"#" * (len(lines[3]) - 2) + b"\n"  # same length: the index stays right
    path.write_bytes(b"".join(lines))
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "runtimes", saved)
    # Start-up reads only the tail, so the worker loads; reading the line says where it is.
    with open_runtime(tmp_path) as rt:
        assert rt.dispatch(c.GetWorker(worker_id="bad")).transcript_len == 6
        assert len(rt.dispatch(c.GetTranscript(worker_id="bad", limit=3)).items) == 3
        with pytest.raises(StoreCorrupt) as caught:
            rt.dispatch(c.GetTranscript(worker_id="bad", start=2, limit=3))
        assert caught.value.details == {"file": "workers/bad/transcript.jsonl", "line": 4}
        assert caught.value.code == "store_corrupt"
    # Without its index the whole log is read again, and the damage found at start-up.
    shutil.rmtree(tmp_path / "runtimes")
    shutil.copytree(saved, tmp_path / "runtimes")
    (runtime_dir(tmp_path) / "workers/bad/transcript.idx").unlink()
    _assert_quarantined(
        open_runtime(tmp_path), tmp_path, "workers/bad/transcript.jsonl line 4"
    ).close()


@pytest.mark.parametrize(
    ("missing", "code", "fragment"),
    [
        ("workers/bad/worker.json", "store_incomplete_worker", "worker.json is missing"),
        ("workers/bad/transcript.jsonl", "store_corrupt", "has 0 records; 6 were committed"),
    ],
)
def test_a_missing_worker_file_is_reported(
    tmp_path: Path, missing: str, code: str, fragment: str
) -> None:
    _setup(tmp_path)
    (runtime_dir(tmp_path) / missing).unlink()
    rt = open_runtime(tmp_path)
    if code != "store_corrupt":
        # Never acknowledged (or its record lost): moved aside, the id free again.
        with pytest.raises(WorkerNotFound):
            rt.dispatch(c.GetWorker(worker_id="bad"))
        (message,) = [m for m in _diagnostics(rt, code) if "workers/bad/" in m]
        assert fragment in message
        rt.dispatch(c.CreateWorker(worker_id="bad"))
        rt.close()
        return
    _assert_quarantined(rt, tmp_path, fragment, code=code).close()


@pytest.mark.parametrize("index", ["events.idx", "workers/bad/transcript.idx", "diagnostics.idx"])
def test_a_missing_index_is_rebuilt(tmp_path: Path, index: str) -> None:
    _setup(tmp_path)
    with open_runtime(tmp_path) as rt:
        before = (
            rt.dispatch(c.GetTranscript(worker_id="bad", limit=256)).items,
            rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events,
            rt.dispatch(c.GetDiagnostics()).diagnostics,
        )
    path = runtime_dir(tmp_path) / index
    content = path.read_bytes()
    path.unlink()
    with open_runtime(tmp_path) as rt:
        (message,) = _diagnostics(rt, "store_index_rebuilt")
        assert index.replace(".idx", ".jsonl") in message
        assert rt.dispatch(c.GetTranscript(worker_id="bad", limit=256)).items == before[0]
        assert rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events[: len(before[1])] == before[1]
        diagnostics = rt.dispatch(c.GetDiagnostics()).diagnostics
        assert diagnostics[: len(before[2])] == before[2]
        for start in range(6):
            page = rt.dispatch(c.GetTranscript(worker_id="bad", start=start, limit=2))
            assert page.items == before[0][start : start + 2]
    assert path.read_bytes()[: len(content)] == content


def test_a_missing_event_log_is_reported_and_ids_continue(tmp_path: Path) -> None:
    _setup(tmp_path)
    with open_runtime(tmp_path) as rt:
        highest = _all_events(rt)[-1]
    (runtime_dir(tmp_path) / "events.jsonl").unlink()
    with open_runtime(tmp_path) as rt:
        (message,) = [m for m in _diagnostics(rt, "store_corrupt") if "events.jsonl" in m]
        assert f"has 0 records; {highest} were committed" in message
        _talk(rt, "good", "more")
        ids = _all_events(rt)
        assert ids == list(range(highest + 1, highest + 1 + len(ids)))
        assert rt.dispatch(c.GetTranscript(worker_id="good")).total_items == 4
    with open_runtime(tmp_path) as rt:  # the new log is the committed one from now on
        assert _all_events(rt)[0] == highest + 1


def test_a_corrupt_runtime_record_is_reported_and_rewritten(tmp_path: Path) -> None:
    _setup(tmp_path)
    (runtime_dir(tmp_path) / "runtime.json").write_bytes(b"not json")
    with open_runtime(tmp_path) as rt:
        assert any("runtime.json" in m for m in _diagnostics(rt, "store_corrupt"))
        assert rt.dispatch(c.GetWorker(worker_id="bad")).transcript_len == 6
    with open_runtime(tmp_path) as rt:
        assert not any("runtime.json" in m for m in _diagnostics(rt, "store_corrupt")[1:])


def test_a_flush_that_never_committed_is_cut_back(tmp_path: Path) -> None:
    # The logs of the input's flush are written and fsynced, then the commit
    # (the journal line) fails, as if the process died right there.
    ops = FaultyOps()
    rt = open_runtime(tmp_path, ops=ops)
    rt.dispatch(c.CreateWorker(worker_id="w"))
    _talk(rt, "w", "one")
    before = _all_events(rt)
    ops.fail_journal = True
    with pytest.raises(RuntimeUnavailable):
        rt.dispatch(c.SendInput(worker_id="w", content="two"))
    lost = [e.event_id for e in rt.store.read_events(before[-1] + 1, 100)]
    assert lost  # a reader could see these ids
    with pytest.raises(RuntimeUnavailable):
        rt.store.close()
    root = runtime_dir(tmp_path)
    assert b'"two"' in (root / "workers/w/transcript.jsonl").read_bytes()
    with open_runtime(tmp_path) as rt:
        cuts = _diagnostics(rt, "store_torn_tail")
        assert any("workers/w/transcript.jsonl" in m and "never committed" in m for m in cuts)
        assert any("events.jsonl" in m and "event_lost" in m for m in cuts)
        detail = rt.dispatch(c.GetWorker(worker_id="w"))
        assert (detail.status, detail.transcript_len, detail.usage.inputs) == (
            WorkerStatus.IDLE,
            2,
            1,
        )
        events = rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events
        assert [e.event_id for e in events] == list(range(1, len(events) + 1))
        # Those that reached the file keep their ids (staged-only ones cannot).
        marked = [e.event_id for e in events if e.type == "event_lost"]
        assert marked and marked == lost[: len(marked)]
        ack = rt.dispatch(c.SendInput(worker_id="w", content="three"))
        assert ack.transcript_sequence == 2 and ack.event_id > marked[-1]
        wait_for_run_end(rt, ack.run_id)
        page = rt.dispatch(c.GetTranscript(worker_id="w"))
        assert [e.content for e in page.items] == ["one", "one", "three", "three"]
    assert b'"two"' not in (root / "workers/w/transcript.jsonl").read_bytes()
    assert any(b'"two"' in p.read_bytes() for p in root.glob("workers/w/transcript.jsonl.torn-*"))
