"""No orphan processes (SPEC section 10): a run's whole tree dies on cancel even when
it ignores TERM, a child dies with its runtime (``PR_SET_PDEATHSIG``), the group id
is reported at start, and a group left by a crashed runtime is killed only if ours."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker_runtime import commands
from worker_runtime.domain import Role, TranscriptEntry, WorkerIntent
from worker_runtime.engines import (
    CommandEngine,
    EngineFailure,
    RunContext,
    RunSignal,
    kill_stale_group,
)
from worker_runtime.engines.command import CommandSettings
from worker_runtime.testing import wait_until

from .support.engine_support import (
    alive,
    create,
    kill_all_with_env,
    open_runtime,
    processes_with_env,
    send,
)
from .support.process_tree import TREE, announced

PY = sys.executable


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    (tmp_path / "pids").mkdir()
    return script


@pytest.fixture
def run_id() -> Iterator[str]:
    """A unique run id; every process still carrying it is killed after the test."""
    value = f"run-{uuid.uuid4().hex}"
    yield value
    kill_all_with_env("RUN_ID", value)


def context(run_id: str, **fields: Any) -> RunContext:
    entry = TranscriptEntry(
        sequence=0, role=Role.USER, content="x", event_id=1, created_at="t", run_id=run_id
    )
    return RunContext(
        runtime_id="rt",
        worker_id="w",
        run_id=run_id,
        input=entry,
        intent=WorkerIntent(),
        deadline=0.0,
        signal=RunSignal(),
        history=lambda: [entry],
        **fields,
    )


def test_cancel_leaves_no_process_of_the_run(
    tmp_path: Path, tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids_dir = tmp_path / "pids"
    profile = {"engine": "command", "argv": [PY, str(tree), str(pids_dir), "2"]}
    rt = open_runtime(tmp_path, {"tree": profile | {"term_grace_s": 0.3}}, cancel_grace_s=10)
    try:
        worker = create(rt, "tree")
        run_id = send(rt, worker, "x")
        try:
            pids = announced(pids_dir, 3)  # the program, its child and its grandchild
            assert sorted(processes_with_env("RUN_ID", run_id)) == pids
            with caplog.at_level(logging.WARNING):
                ack = rt.dispatch(commands.CancelRun(worker_id=worker, run_id=run_id))
            assert ack.run_status == "cancelled"
            assert "did not stop within the grace period" not in caplog.text
            # A process on its way out has already lost its environment: wait on the
            # pids too, not only on the environment scan.
            wait_until(
                lambda: (
                    not processes_with_env("RUN_ID", run_id) and not any(alive(pid) for pid in pids)
                ),
                what="the tree to die",
            )
            ps = subprocess.run(
                ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            assert all(line.split()[1].startswith("Z") for line in ps.stdout.splitlines())
        finally:
            kill_all_with_env("RUN_ID", run_id)
    finally:
        rt.close()


def test_the_group_id_is_reported_as_the_process_starts(run_id: str) -> None:
    script = "import os; print(os.getpgrp(), os.getpid(), os.environ['RUN_ID'])"
    engine = CommandEngine(CommandSettings(argv=(PY, "-c", script), stdin="none"))
    started: list[int] = []
    out: list[str] = []
    engine.run(context(run_id, on_process_start=started.append), out.append)
    assert "".join(out) == f"{started[0]} {started[0]} {run_id}\n"
    assert len(started) == 1


def test_a_group_that_cannot_be_recorded_is_killed_and_the_run_fails(run_id: str) -> None:
    engine = CommandEngine(CommandSettings(argv=("sleep", "60")))

    def refuse(pgid: int) -> None:
        assert processes_with_env("RUN_ID", run_id) == [pgid]  # it is running
        raise OSError("No space left on device")

    with pytest.raises(EngineFailure) as failed:
        engine.run(context(run_id, on_process_start=refuse), lambda text: None)
    assert str(failed.value) == "could not record the process group: No space left on device"
    assert processes_with_env("RUN_ID", run_id) == []


DIES_WITH = r"""
import os, sys, threading
from worker_runtime.engines.process import run_process

def run() -> None:  # on a thread of its own, as runs are on the run pool
    run_process(
        [sys.executable, sys.argv[1], sys.argv[2], "0"],
        env={"PATH": os.environ["PATH"], "RUN_ID": sys.argv[3]},
        cwd=None, stdin=None, on_stdout=lambda chunk: None,
        should_stop=lambda: False, term_grace_s=1.0,
    )

thread = threading.Thread(target=run)
thread.start()
thread.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_runtime(tmp_path: Path, tree: Path, run_id: str) -> None:
    pids_dir = tmp_path / "pids"
    runtime = subprocess.Popen(
        [PY, "-c", DIES_WITH, str(tree), str(pids_dir), run_id],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        [child] = announced(pids_dir, 1)
        assert os.getpgid(child) == child  # its own group, out of reach of the runtime's
        runtime.kill()  # as kill -9: no cleanup code runs
        runtime.wait(timeout=10)
        wait_until(lambda: not alive(child), what="the child to die with its runtime")
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait(timeout=10)


def _start_group(tree: Path, where: Path, run_id: str, *extra: str) -> subprocess.Popen[bytes]:
    """A process group started outside the engine, as a crashed runtime leaves one."""
    return subprocess.Popen(
        [PY, str(tree), str(where), "1", *extra],
        env={"PATH": os.environ["PATH"], "RUN_ID": run_id},
        start_new_session=True,
    )


@pytest.mark.parametrize("leader", ["alive", "gone"])
def test_kill_stale_group_kills_our_group_only(
    tmp_path: Path, tree: Path, run_id: str, leader: str
) -> None:
    pids_dir = tmp_path / "pids"
    group = _start_group(tree, pids_dir, run_id, *(["exit"] if leader == "gone" else []))
    try:
        pids = announced(pids_dir, 2)
        if leader == "gone":
            assert group.wait(timeout=10) == 0  # only its child is left in the group
        other_run = f"run-{uuid.uuid4().hex}"
        assert kill_stale_group(group.pid, other_run) is False
        assert processes_with_env("RUN_ID", run_id), "another run's group was killed"
        assert kill_stale_group(group.pid, run_id, term_grace_s=0.2) is True
        assert processes_with_env("RUN_ID", run_id) == []  # gone when it returns
        assert not any(alive(pid) for pid in pids)
        assert kill_stale_group(group.pid, run_id) is False  # nothing left to kill
    finally:
        if group.poll() is None:
            os.killpg(group.pid, signal.SIGKILL)
        group.wait(timeout=10)


def test_kill_stale_group_never_touches_special_groups(run_id: str) -> None:
    assert kill_stale_group(0, run_id) is False
    assert kill_stale_group(1, run_id) is False
    assert kill_stale_group(os.getpgrp(), run_id) is False
