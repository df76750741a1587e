"""The fs store under attack and bad luck (SPEC section 10): planted symlinks,
file modes, logs shorter than their commits, damaged indexes, one bad
diagnostics line, counters that disagree with their logs, and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.support.http_helpers import AUTH, client
from worker_runtime import Runtime
from worker_runtime import commands as c
from worker_runtime.domain import ProfileSelector, Role
from worker_runtime.errors import RuntimeUnavailable, StoreCorrupt, WorkerNotFound
from worker_runtime.stores.fs.fileops import FileOps
from worker_runtime.testing import GateEngine, wait_for_run_end

from .support.fs_support import FaultyOps, open_runtime, runtime_dir

CANARY = b"root:x:0:0:a system file the runtime must never touch\n"


def _talk(rt: Runtime, worker_id: str, *texts: str) -> None:
    for text in texts:
        ack = rt.dispatch(c.SendInput(worker_id=worker_id, content=text))
        assert wait_for_run_end(rt, ack.run_id).type == "run_completed"


def _diagnostics(rt: Runtime, code: str) -> list[str]:
    return [d.message for d in rt.dispatch(c.GetDiagnostics()).diagnostics if d.code == code]


def _setup(data_dir: Path) -> None:
    with open_runtime(data_dir) as rt:
        for worker_id in ("w", "good"):
            rt.dispatch(c.CreateWorker(worker_id=worker_id))
            _talk(rt, worker_id, "one", "two", "three")


def _canary(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "passwd"
    canary.write_bytes(CANARY)
    return canary


# -- symlinks -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transcript.jsonl", "transcript.idx", "worker.json"])
def test_a_worker_file_that_is_a_symlink_is_never_followed(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    _setup(data)
    canary = _canary(tmp_path)
    planted = runtime_dir(data) / "workers/w" / name
    planted.unlink()
    planted.symlink_to(canary)
    with open_runtime(data) as rt:
        (message,) = [m for m in _diagnostics(rt, "store_corrupt") if "workers/w/" in m]
        assert f"workers/w/{name}" in message and "symbolic link" in message
        for command in (c.GetWorker(worker_id="w"), c.CreateWorker(worker_id="w")):
            with pytest.raises(StoreCorrupt, match=f"workers/w/{name}"):
                rt.dispatch(command)
        assert rt.dispatch(c.GetWorker(worker_id="good")).transcript_len == 6
        _talk(rt, "good", "more")
    assert canary.read_bytes() == CANARY
    (kept,) = (runtime_dir(data) / "quarantine/workers").iterdir()
    assert (kept / "w" / name).is_symlink()  # moved aside as a link, target untouched


def test_a_worker_directory_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _setup(data)
    canary = _canary(tmp_path)
    (canary.parent / "transcript.jsonl").write_bytes(CANARY)
    before = {p.name: p.read_bytes() for p in canary.parent.iterdir()}
    (runtime_dir(data) / "workers/evil").symlink_to(canary.parent, target_is_directory=True)
    with open_runtime(data) as rt:
        (message,) = [m for m in _diagnostics(rt, "store_corrupt") if "workers/evil" in m]
        assert "symbolic link" in message
        for command in (
            c.GetWorker(worker_id="evil"),
            c.CreateWorker(worker_id="evil"),
            c.SendInput(worker_id="evil", content="x"),
        ):
            with pytest.raises(StoreCorrupt, match="workers/evil"):
                rt.dispatch(command)
        _talk(rt, "w", "more")
    assert {p.name: p.read_bytes() for p in canary.parent.iterdir()} == before


def _canary_dir(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory outside the store (with files a worker would write) and its contents."""
    canary = _canary(tmp_path)
    for name in ("transcript.jsonl", "events.idx"):
        (canary.parent / name).write_bytes(CANARY)
    return canary.parent, _contents(canary.parent)


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _stop_and_delete(rt: Runtime, worker_id: str) -> None:
    rt.dispatch(c.StopWorker(worker_id=worker_id))
    rt.dispatch(c.DeleteWorker(worker_id=worker_id))


@pytest.mark.parametrize("before", ["new id", "deleted, then created again"])
def test_a_worker_directory_planted_while_running_is_refused(tmp_path: Path, before: str) -> None:
    data = tmp_path / "data"
    outside, contents = _canary_dir(tmp_path)
    with open_runtime(data) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        if before != "new id":
            rt.dispatch(c.CreateWorker(worker_id="evil"))
            _talk(rt, "evil", "one")
            _stop_and_delete(rt, "evil")
        (runtime_dir(data) / "workers/evil").symlink_to(outside, target_is_directory=True)
        with pytest.raises(StoreCorrupt, match="workers/evil is a symbolic link") as caught:
            rt.dispatch(c.CreateWorker(worker_id="evil"))
        assert caught.value.code == "store_corrupt"
        assert caught.value.details == {"file": "workers/evil"}
        with pytest.raises(WorkerNotFound):  # nothing of the refused create was kept
            rt.dispatch(c.SendInput(worker_id="evil", content="x"))
        _talk(rt, "w", "the runtime goes on")
        assert rt.status == "running"
    assert _contents(outside) == contents
    with open_runtime(data) as rt:  # after a restart the id is quarantined, as at open
        with pytest.raises(StoreCorrupt, match="workers/evil"):
            rt.dispatch(c.CreateWorker(worker_id="evil"))
        assert rt.dispatch(c.GetWorker(worker_id="w")).transcript_len == 2
    assert _contents(outside) == contents


class PlantingOps(FileOps):
    """Plants a link in place of a worker directory just before the flush makes
    it: the race the check when the worker's first write is staged cannot see."""

    def __init__(self, directory: Path, target: Path) -> None:
        self.directory, self.target = str(directory), target

    def mkdir(self, path: str) -> bool:
        if os.path.normpath(path) == self.directory and not os.path.lexists(path):
            os.symlink(self.target, path)
        return super().mkdir(path)


def test_a_worker_directory_planted_just_before_the_flush_is_never_written_through(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    outside, contents = _canary_dir(tmp_path)
    ops = PlantingOps(runtime_dir(data) / "workers/evil", outside)
    with open_runtime(data, ops=ops) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        with pytest.raises(StoreCorrupt, match="workers/evil is a symbolic link"):
            rt.dispatch(c.CreateWorker(worker_id="evil"))
        assert rt.status == "unavailable"  # that flush failed: nothing is acknowledged
        with pytest.raises(RuntimeUnavailable, match="workers/evil"):
            rt.dispatch(c.SendInput(worker_id="w", content="x"))
        assert rt.dispatch(c.GetWorker(worker_id="w")).transcript_len == 0
        with pytest.raises(RuntimeUnavailable):
            rt.close()
    assert _contents(outside) == contents
    with open_runtime(data) as rt:
        assert any("workers/evil" in m for m in _diagnostics(rt, "store_corrupt"))
        _talk(rt, "w", "after the restart")
    assert _contents(outside) == contents


def test_a_worker_directory_swapped_for_a_link_while_running_is_never_written_through(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    outside, contents = _canary_dir(tmp_path)
    rt = open_runtime(data)
    try:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        _talk(rt, "w", *[f"line {i}" for i in range(10)])  # more than the tail in memory
        directory = runtime_dir(data) / "workers/w"
        directory.rename(tmp_path / "moved")
        directory.symlink_to(outside, target_is_directory=True)
        with pytest.raises(StoreCorrupt, match="workers/w"):
            rt.dispatch(c.GetTranscript(worker_id="w", start=0, limit=2))  # nothing read
        with pytest.raises(StoreCorrupt, match="workers/w is a symbolic link"):
            rt.dispatch(c.SendInput(worker_id="w", content="x"))  # nothing written
    finally:
        with pytest.raises(RuntimeUnavailable):  # the run it started cannot be recorded
            rt.close()
    assert _contents(outside) == contents


def test_a_lock_file_that_is_a_symlink_is_store_corrupt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _setup(data)
    canary = _canary(tmp_path)
    lock = runtime_dir(data) / "lock"
    lock.unlink()
    lock.symlink_to(canary)
    with pytest.raises(StoreCorrupt, match="lock is a symbolic link") as caught:
        open_runtime(data)
    assert caught.value.code == "store_corrupt"
    assert canary.read_bytes() == CANARY


def test_a_runtime_log_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _setup(data)
    canary = _canary(tmp_path)
    events = runtime_dir(data) / "events.jsonl"
    events.unlink()
    events.symlink_to(canary)
    with open_runtime(data) as rt:
        messages = _diagnostics(rt, "store_corrupt")
        assert any("events.jsonl is a symbolic link" in m for m in messages)
        _talk(rt, "w", "more")  # a new log, above the old ids
    assert canary.read_bytes() == CANARY
    assert not (runtime_dir(data) / "events.jsonl").is_symlink()


@pytest.mark.parametrize("index", ["events.idx", "diagnostics.idx", "idempotency.idx"])
def test_a_runtime_index_that_is_a_symlink_is_rebuilt_and_the_history_kept(
    tmp_path: Path, index: str
) -> None:
    data = tmp_path / "data"
    _setup(data)
    with open_runtime(data) as rt:
        rt.dispatch(c.CreateWorker(worker_id="keyed"), idempotency_key="k")
        events = rt.dispatch(c.ReadEvents(cursor=0, limit=1000)).events
        diagnostics = rt.dispatch(c.GetDiagnostics()).diagnostics
    canary = _canary(tmp_path)
    planted = runtime_dir(data) / index
    planted.unlink()
    planted.symlink_to(canary)
    with open_runtime(data) as rt:
        (message,) = [m for m in _diagnostics(rt, "store_corrupt") if index in m]
        assert f"{index} is a symbolic link" in message
        assert rt.dispatch(c.ReadEvents(cursor=0, limit=len(events))).events == events
        assert rt.dispatch(c.GetDiagnostics()).diagnostics[: len(diagnostics)] == diagnostics
        replay = rt.dispatch(c.CreateWorker(worker_id="keyed"), idempotency_key="k")
        assert replay.worker_id == "keyed"  # the first answer, replayed
        _talk(rt, "w", "more")
    assert canary.read_bytes() == CANARY
    assert not planted.is_symlink()
    (kept,) = [p for p in (runtime_dir(data) / "quarantine").iterdir() if p.name != "workers"]
    assert [p.name for p in kept.iterdir()] == [index] and (kept / index).is_symlink()


def test_directories_are_0700_and_files_0600(tmp_path: Path) -> None:
    saved = os.umask(0)  # the modes are the store's own, not the umask's
    try:
        _setup(tmp_path)
        with open_runtime(tmp_path) as rt:
            rt.dispatch(c.CreateWorker(worker_id="later"))
    finally:
        os.umask(saved)
    root = tmp_path / "runtimes"
    paths = [root, *root.rglob("*")]
    assert len(paths) > 10
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


# -- logs shorter than committed, indexes, bad lines -----------------------------------


def _cut_half(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) // 2]))


@pytest.mark.parametrize("log", ["events.jsonl", "diagnostics.jsonl", "idempotency.jsonl"])
@pytest.mark.parametrize("damage", ["emptied", "deleted", "cut in the middle"])
def test_a_log_shorter_than_its_commits_is_reported_with_both_counts(
    tmp_path: Path, log: str, damage: str
) -> None:
    with open_runtime(tmp_path) as rt:
        for i in range(4):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"), idempotency_key=f"k{i}")
    path = runtime_dir(tmp_path) / log
    committed = len(path.read_bytes().splitlines())
    if damage == "emptied":
        path.write_bytes(b"")
    elif damage == "deleted":
        path.unlink()
    else:
        _cut_half(path)
    left = len(path.read_bytes().splitlines()) if path.exists() else 0
    with open_runtime(tmp_path) as rt:
        messages = [m for m in _diagnostics(rt, "store_corrupt") if log in m]
        assert any(f"has {left} records; {committed} were committed" in m for m in messages)
        rt.dispatch(c.CreateWorker(worker_id="after"))  # and it goes on
    with open_runtime(tmp_path) as rt:  # reported once, not on every start
        assert not [m for m in _diagnostics(rt, "store_corrupt")[len(messages) :] if log in m]


def test_a_garbled_index_is_rebuilt_not_blamed_on_the_log(tmp_path: Path) -> None:
    _setup(tmp_path)
    with open_runtime(tmp_path) as rt:
        expected = rt.dispatch(c.GetTranscript(worker_id="w", limit=256)).items
    index = runtime_dir(tmp_path) / "workers/w/transcript.idx"
    good = index.read_bytes()
    index.write_bytes(good[:8] + os.urandom(8 * 3) + good[32:])  # entries 1-3 garbled
    for _ in range(2):
        with open_runtime(tmp_path) as rt:
            for start in range(len(expected)):
                page = rt.dispatch(c.GetTranscript(worker_id="w", start=start, limit=2))
                assert page.items == expected[start : start + 2]
        assert index.read_bytes() == good  # repaired on disk, so not broken after a restart


def test_an_index_cut_short_while_running_is_rebuilt(tmp_path: Path) -> None:
    """A page whose offsets the index no longer has in full (cut under the
    running store) is read through the rebuilt index: never a shorter page."""
    with open_runtime(tmp_path) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        _talk(rt, "w", *[f"line {i}" for i in range(20)])  # more than the tail in memory
        expected = rt.dispatch(c.GetTranscript(worker_id="w", limit=256)).items
        index = runtime_dir(tmp_path) / "workers/w/transcript.idx"
        good = index.read_bytes()
        index.write_bytes(good[: 8 * 3])  # offsets of entries 0-2 only
        page = rt.dispatch(c.GetTranscript(worker_id="w", start=1, limit=5))
        assert page.items == expected[1:6]
        assert index.read_bytes() == good


def test_one_bad_diagnostics_line_fails_only_the_pages_holding_it(tmp_path: Path) -> None:
    with open_runtime(tmp_path) as rt:
        for i in range(6):  # each creation without a bundle adds one diagnostic
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"))
        ids = [d.id for d in rt.dispatch(c.GetDiagnostics()).diagnostics]
    path = runtime_dir(tmp_path) / "diagnostics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b"{" + b"#" * (len(lines[2]) - 2) + b"\n"  # same length: the index stays right
    path.write_bytes(b"".join(lines))
    with open_runtime(tmp_path) as rt:
        # A page reads one line past its limit (to say whether there are more).
        assert [d.id for d in rt.dispatch(c.GetDiagnostics(limit=1)).diagnostics] == ids[:1]
        with pytest.raises(StoreCorrupt) as caught:
            rt.dispatch(c.GetDiagnostics(after=ids[1], limit=2))
        assert caught.value.details == {"file": "diagnostics.jsonl", "line": 3}
        after = rt.dispatch(c.GetDiagnostics(after=ids[2])).diagnostics
        assert [d.id for d in after][:3] == ids[3:6]


def test_a_transcript_len_that_disagrees_with_the_log_is_reported(tmp_path: Path) -> None:
    _setup(tmp_path)
    path = runtime_dir(tmp_path) / "workers/w/worker.json"
    envelope = json.loads(path.read_bytes())
    envelope["record"]["transcript_len"] = 99
    path.write_text(json.dumps(envelope))
    with open_runtime(tmp_path) as rt:
        (message,) = [m for m in _diagnostics(rt, "store_corrupt") if "workers/w/" in m]
        assert "workers/w/transcript.jsonl has 6" in message and "transcript_len 99" in message
        with pytest.raises(StoreCorrupt, match="transcript_len 99"):
            rt.dispatch(c.GetWorker(worker_id="w"))
        assert rt.dispatch(c.GetWorker(worker_id="good")).transcript_len == 6


# -- a full disk -------------------------------------------------------------------------


def test_a_full_disk_stops_writes_not_reads(tmp_path: Path) -> None:
    ops = FaultyOps()
    with open_runtime(tmp_path, ops=ops) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        _talk(rt, "w", "one")
        ops.fail_write = True  # ENOSPC from now on
        with pytest.raises(RuntimeUnavailable, match="could not write") as caught:
            rt.dispatch(c.CreateWorker(worker_id="x"))
        assert caught.value.code == "runtime_unavailable"
        for write in (c.SendInput(worker_id="w", content="two"), c.CreateWorker(worker_id="y")):
            with pytest.raises(RuntimeUnavailable, match="could not write"):
                rt.dispatch(write)
        # Reads keep working.
        assert rt.dispatch(c.GetWorker(worker_id="w")).transcript_len == 2
        assert len(rt.dispatch(c.GetTranscript(worker_id="w")).items) == 2
        assert rt.dispatch(c.ReadEvents(cursor=0)).events
        assert rt.dispatch(c.GetRuntime()).status == "unavailable"
        http = client(rt)
        assert http.simulate_get("/v1/workers/w", headers=AUTH).status_code == 200
        posted = http.simulate_post("/v1/workers/w/input", headers=AUTH, json={"content": "three"})
        assert posted.status_code == 503
        assert posted.json["error"]["code"] == "runtime_unavailable"
        assert "could not write" in posted.json["error"]["message"]
        with pytest.raises(RuntimeUnavailable):
            rt.close()


def test_a_close_that_cannot_write_stays_closed(tmp_path: Path) -> None:
    """Closing ends the active run ``interrupted``, which cannot be written: the
    close fails, and the runtime stays closed (not "unavailable" again, which
    would let a second close run the shutdown once more)."""
    gate = GateEngine()
    ops = FaultyOps()
    with open_runtime(tmp_path, ops=ops, engines={"gate": gate}) as rt:
        rt.dispatch(
            c.CreateWorker(worker_id="w", profile=ProfileSelector(kind="named", value="gate"))
        )
        ack = rt.dispatch(c.SendInput(worker_id="w", content="one"))
        gate.wait_started(ack.run_id)
        ops.fail_write = True
        with pytest.raises(RuntimeUnavailable):
            rt.close()
        assert rt.status == "stopping"
        assert client(rt).simulate_get("/readyz").json["status"] == "stopping"
        rt.close()  # closed already: nothing to do, nothing raised


def _stopped(data_dir: Path, how: str) -> None:
    """The runtime of ``_setup`` stopped ``how``: closed, or gone without a
    checkpoint (its commits are in the journal only), or gone after a flush whose
    commit line never made it (uncommitted lines left in its logs)."""
    _setup(data_dir)
    if how == "closed":
        return
    ops = FaultyOps()
    rt = open_runtime(data_dir, ops=ops)
    _talk(rt, "w", "four")
    if how == "flush failed":
        ops.fail_journal = True
        with pytest.raises(RuntimeUnavailable):
            rt.dispatch(c.SendInput(worker_id="w", content="never acknowledged"))
    ops.fail_write = True
    with pytest.raises(RuntimeUnavailable):
        rt.close()


@pytest.mark.parametrize("how", ["closed", "crashed", "flush failed"])
def test_a_restart_on_a_full_disk_comes_up_unavailable(tmp_path: Path, how: str) -> None:
    _stopped(tmp_path, how)
    ops = FaultyOps()
    ops.fail_write = True  # ENOSPC from the start
    rt = open_runtime(tmp_path, ops=ops)
    try:
        assert rt.status == "unavailable"
        assert rt.dispatch(c.GetRuntime()).status == "unavailable"
        expected = rt.dispatch(c.GetTranscript(worker_id="w", limit=100)).items
        inputs = [e.content for e in expected if e.role is Role.USER]
        assert inputs == ["one", "two", "three"] + ([] if how == "closed" else ["four"])
        if how == "flush failed":  # its lines are cut, though there is no room to keep them
            cut = _diagnostics(rt, "store_torn_tail")
            assert any("not kept: No space left on device" in m for m in cut), cut
        assert [w.worker_id for w in rt.dispatch(c.ListWorkers()).workers] == ["w", "good"]
        assert rt.dispatch(c.ReadEvents(cursor=0)).events
        for write in (c.CreateWorker(worker_id="x"), c.SendInput(worker_id="w", content="y")):
            with pytest.raises(RuntimeUnavailable, match="could not write") as caught:
                rt.dispatch(write)
            assert caught.value.code == "runtime_unavailable"
        http = client(rt)
        ready = http.simulate_get("/readyz")
        assert ready.status_code == 503 and ready.json["status"] == "unavailable"
        assert http.simulate_get("/v1/workers/w", headers=AUTH).status_code == 200
    finally:
        with pytest.raises(RuntimeUnavailable):
            rt.close()
    with open_runtime(tmp_path) as rt:  # space again: nothing was lost
        assert rt.status == "running"
        assert rt.dispatch(c.GetTranscript(worker_id="w", limit=100)).items == expected
        _talk(rt, "w", "and on")


def test_a_recovery_that_cannot_write_says_so(tmp_path: Path) -> None:
    # A damaged worker must be moved aside before the runtime may serve: on a full
    # disk it cannot be, and the open fails saying why (not that it could not read).
    _setup(tmp_path)
    (runtime_dir(tmp_path) / "workers/w/worker.json").write_bytes(b"{")
    ops = FaultyOps()
    ops.fail_write = True
    with pytest.raises(RuntimeUnavailable) as caught:
        open_runtime(tmp_path, ops=ops)
    assert caught.value.code == "runtime_unavailable"
    assert caught.value.message == (
        f"cannot recover the runtime directory {runtime_dir(tmp_path)}: "
        "it could not write: No space left on device (errno 28)"
    )
    with open_runtime(tmp_path) as rt:  # the lock was released; with room it recovers
        assert rt.dispatch(c.GetWorker(worker_id="good")).transcript_len == 6


def test_a_quarantined_worker_is_503_store_corrupt_over_http(tmp_path: Path) -> None:
    _setup(tmp_path)
    (runtime_dir(tmp_path) / "workers/w/worker.json").write_bytes(b"{")
    with open_runtime(tmp_path) as rt:
        http = client(rt)
        for result in (
            http.simulate_get("/v1/workers/w", headers=AUTH),
            http.simulate_post("/v1/workers", headers=AUTH, json={"worker_id": "w"}),
        ):
            assert result.status_code == 503
            assert result.json["error"]["code"] == "store_corrupt"
            assert "workers/w/worker.json" in result.json["error"]["message"]
    shutil.rmtree(next((runtime_dir(tmp_path) / "quarantine/workers").iterdir()))
    with open_runtime(tmp_path) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))


def test_a_runtime_record_that_is_a_symlink_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _setup(data)
    canary = _canary(tmp_path)
    record = runtime_dir(data) / "runtime.json"
    record.unlink()
    record.symlink_to(canary)
    with open_runtime(data) as rt:
        assert any(
            "runtime.json is a symbolic link" in m for m in _diagnostics(rt, "store_corrupt")
        )
        assert rt.dispatch(c.GetWorker(worker_id="w")).transcript_len == 6
    assert canary.read_bytes() == CANARY
    assert not record.is_symlink()
