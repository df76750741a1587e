"""Soak: a few thousand short command runs leave descriptors, threads and
children exactly where they were."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from worker_runtime import Runtime, commands
from worker_runtime.testing import TERMINAL_EVENTS, wait_until

from .support.engine_support import create, open_fds, open_runtime, send, zombie_children

WORKERS = 4
ROUNDS = 750  # 3000 runs


def run_round(rt: Runtime, workers: list[str], cursor: int) -> int:
    """One input to every worker; waits for all their runs to end. Returns the new cursor."""
    pending = {send(rt, worker, "ping") for worker in workers}
    deadline = time.monotonic() + 30
    while pending:
        assert time.monotonic() < deadline, f"runs never ended: {pending}"
        page = rt.dispatch(commands.ReadEvents(cursor=cursor, limit=1000, wait=5))
        for event in page.events:
            if event.type in TERMINAL_EVENTS and event.run_id in pending:
                assert event.type == "run_completed", event
                pending.discard(event.run_id)
        cursor = page.cursor.next_event_id
    return cursor


def test_thousands_of_runs_leave_nothing_behind(tmp_path: Path) -> None:
    profiles = {"cat": {"engine": "command", "argv": ["cat"]}}
    threads = threading.active_count()
    with open_runtime(tmp_path, profiles, max_concurrent_runs=WORKERS) as rt:
        workers = [create(rt, "cat") for _ in range(WORKERS)]
        cursor = run_round(rt, workers, 0)  # warm-up
        fds = open_fds()
        for _ in range(ROUNDS):
            cursor = run_round(rt, workers, cursor)
        # A run's last descriptors may close just after its end event: wait (bounded)
        # for them; a leak of even one per run would be thousands.
        wait_until(lambda: open_fds() <= fds, what="descriptors back at the baseline")
        # The run pool grows to its size on demand, plus one watchdog: never a thread per run.
        assert threading.active_count() <= threads + WORKERS + 1
        assert zombie_children() == []
        last = rt.dispatch(commands.GetTranscript(worker_id=workers[0], start=2 * ROUNDS))
        assert [e.content for e in last.items] == ["ping", "ping"]
