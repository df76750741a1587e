"""Test helpers: wait on the runtime's own event log (long-poll) instead of sleeping."""

from __future__ import annotations

import time

from worker_runtime import Runtime, commands
from worker_runtime.domain import Event
from worker_runtime.results import EventPage

TERMINAL_EVENTS = {
    "run_completed",
    "run_failed",
    "run_cancelled",
    "run_timed_out",
    "run_interrupted",
}


def wait_for_event(
    rt: Runtime, predicate: object, *, cursor: int = 0, timeout: float = 10.0
) -> Event:
    """The first event (from ``cursor`` on) that ``predicate`` accepts; fails past ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching event within {timeout}s")
        page = rt.dispatch(commands.ReadEvents(cursor=cursor, wait=min(remaining, 5.0)))
        assert isinstance(page, EventPage)
        for event in page.events:
            if predicate(event):
                return event
        cursor = page.cursor.next_event_id


def wait_for_run_end(rt: Runtime, run_id: str, *, timeout: float = 10.0) -> Event:
    """The terminal event of ``run_id`` (completed, failed, cancelled, ...)."""
    return wait_for_event(
        rt, lambda e: e.run_id == run_id and e.type in TERMINAL_EVENTS, timeout=timeout
    )
