"""SPEC section 10: no engine process outlives its runtime by a ``kill -9`` and a
restart. A ``command`` run whose program ignores TERM has a child and a grandchild
(``PR_SET_PDEATHSIG`` reaches only the program itself); the runtime is killed with
SIGKILL mid-run; the survivors are still there; reopening the data directory
finds the run's durable process group and kills it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from worker_runtime import Runtime, RuntimeConfig, commands
from worker_runtime.domain import RunStatus
from worker_runtime.testing import wait_until

from .support.engine_support import alive, kill_all_with_env, processes_with_env
from .support.fs_support import child, read_line
from .support.process_tree import TREE, announced

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

RUNTIME = """
import json, sys
from worker_runtime import Runtime, RuntimeConfig, commands
from worker_runtime.domain import ProfileSelector
data_dir, profiles = sys.argv[1], sys.argv[2]
rt = Runtime.open(RuntimeConfig(runtime_id="rt-orphans", store="fs", data_dir=data_dir,
                                profiles_path=profiles))
rt.dispatch(commands.CreateWorker(worker_id="w",
                                  profile=ProfileSelector(kind="named", value="tree")))
ack = rt.dispatch(commands.SendInput(worker_id="w", content="go"))
print(ack.run_id, flush=True)
import time
time.sleep(120)  # killed with SIGKILL long before
"""


def test_a_restart_kills_what_a_crashed_runtime_left_running(tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    profiles = tmp_path / "profiles.json"
    profile = {"engine": "command", "argv": [sys.executable, str(script), str(pids_dir), "2"]}
    profiles.write_text(json.dumps({"profiles": {"tree": profile}}))
    data_dir = tmp_path / "data"
    run_id = ""
    try:
        with child(RUNTIME, str(data_dir), str(profiles)) as runtime:
            run_id = read_line(runtime).strip()
            pids = announced(pids_dir, 3)  # the program, its child, its grandchild
            runtime.kill()  # SIGKILL: no shutdown, no cleanup
            runtime.wait(timeout=10)
        # The program dies with its runtime; its TERM-ignoring descendants do not.
        assert pids
        survivors = processes_with_env("RUN_ID", run_id)
        assert survivors, "nothing survived the crash: this test would prove nothing"
        config = RuntimeConfig(
            runtime_id="rt-orphans",
            store="fs",
            data_dir=str(data_dir),
            profiles_path=str(profiles),
        )
        with Runtime.open(config) as rt:
            wait_until(
                lambda: (
                    not processes_with_env("RUN_ID", run_id)
                    and not any(alive(pid) for pid in survivors)
                ),
                what="the crashed run's processes to be killed",
            )
            run = rt.dispatch(commands.GetRun(worker_id="w", run_id=run_id))
            assert run.status is RunStatus.INTERRUPTED
    finally:
        if run_id:
            kill_all_with_env("RUN_ID", run_id)
    assert os.path.isdir(data_dir)
