"""GetRuntime's counters for operators: run totals by status, queued runs, held
long-polls (``waiters``), and the store-sync observer the metrics use."""

from __future__ import annotations

import threading
import time

from worker_runtime import Runtime
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime.testing import ScriptEngine, fail_with, make_runtime, named, wait_for_run_end


def test_run_totals_count_finished_runs_by_status() -> None:
    rt = make_runtime({"bad": ScriptEngine(fail_with("boom"))})
    try:
        rt.dispatch(c.CreateWorker(worker_id="ok"))
        rt.dispatch(c.CreateWorker(worker_id="ko", profile=named("bad")))
        for worker_id in ("ok", "ko"):
            ack = rt.dispatch(c.SendInput(worker_id=worker_id, content="hi"))
            wait_for_run_end(rt, ack.run_id)
        info = rt.dispatch(c.GetRuntime())
        assert info.runs == r.RunTotals(
            completed=1, failed=1, cancelled=0, timed_out=0, interrupted=0
        )
        assert info.queued_runs == 0
    finally:
        rt.close()


def test_waiters_counts_held_long_polls_only(runtime: Runtime) -> None:
    assert runtime.dispatch(c.GetRuntime()).waiters == 0
    ahead = runtime.dispatch(c.GetRuntime()).last_event_id + 1
    runtime.dispatch(c.ReadEvents(cursor=0, wait=0))  # answered at once: never counted
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (runtime.dispatch(c.ReadEvents(cursor=ahead, wait=20)), done.set())
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while runtime.dispatch(c.GetRuntime()).waiters != 1:
            assert time.monotonic() < deadline, "the long-poll was never counted"
            time.sleep(0.01)
        runtime.dispatch(c.CreateWorker(worker_id="wake"))  # a new event answers it
        assert done.wait(10)
    finally:
        thread.join(10)
    assert runtime.dispatch(c.GetRuntime()).waiters == 0


def test_sync_observer_sees_every_sync(runtime: Runtime) -> None:
    seen: list[float] = []
    runtime.sync_observer = seen.append
    runtime.dispatch(c.CreateWorker(worker_id="w"))
    assert seen and all(s >= 0 for s in seen)
