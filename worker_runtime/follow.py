"""Following the event log: one loop for the in-process and the remote runtime.

:func:`follow_events` turns long polls (``ReadEvents`` with a ``wait``) into an
iterator of typed events, endless unless the followed worker is deleted. It is
written over a dispatch callable, so ``Runtime.follow`` and
``RemoteRuntime.follow`` share it and behave alike.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from .commands import Command, GetRuntime, ReadEvents
from .domain import Event
from .errors import OperationTimeout, RuntimeUnavailable, WorkerRuntimeError
from .results import Result

__all__ = ["DEFAULT_WAIT_S", "Dispatch", "follow_events"]

R = TypeVar("R", bound=Result)

DEFAULT_WAIT_S = 20.0
"""Seconds each long poll may wait (lowered to the runtime's own maximum)."""
MAX_BACKOFF_S = 5.0

_TRANSIENT = (RuntimeUnavailable, OperationTimeout)
"""What ``reconnect`` waits out: an unavailable runtime, and one that did not
answer in time (a long poll's client-side timeout: the server hung)."""


class Dispatch(Protocol):
    """What ``follow_events`` needs: ``Runtime.dispatch`` or ``RemoteRuntime.dispatch``."""

    def __call__(self, command: Command[R], /) -> R: ...


class _Backoff:
    def __init__(self) -> None:
        self.attempt = 0

    def delay(self, hint: object = None) -> float:
        self.attempt += 1
        if isinstance(hint, int | float) and not isinstance(hint, bool) and 0 < hint <= 30:
            return float(hint)
        return min(0.1 * 2.0 ** (self.attempt - 1), MAX_BACKOFF_S) * random.uniform(0.5, 1.0)


def follow_events(
    dispatch: Dispatch,
    *,
    worker_id: str | None = None,
    cursor: int | None = None,
    reconnect: bool = True,
    wait: float = DEFAULT_WAIT_S,
    pause: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Yield events with ``event_id >= cursor`` (from the next new one when
    ``cursor`` is None), waiting for more, until the caller stops iterating.

    Only ``worker_id``'s events are yielded when it is given (the runtime
    filters, and the filter is applied here too), and the iterator ends after
    that worker's ``worker_deleted`` event: nothing of it can follow. A worker
    gone before the follower could see its ``worker_deleted`` right after its
    other events (the cursor was past the delete or behind other events of the
    worker, or the runtime restarted and forgot the delete) raises
    ``worker_not_found``, as does an id that never named a worker. A
    ``cursor_ahead`` error (the runtime's log restarted behind the cursor)
    moves the cursor to the ``next_event_id`` it names. With ``reconnect``, an
    unavailable runtime (503, connection lost) or one that did not answer in
    time (``operation_timeout``: a hung server) is waited out with backoff;
    without it, that error is raised (an in-process runtime that was closed
    never comes back).
    """
    backoff = _Backoff()
    while True:
        try:
            info = dispatch(GetRuntime())
            break
        except _TRANSIENT as exc:
            if not reconnect:
                raise
            pause(backoff.delay(exc.details.get("retry_after_s")))
    wait = min(wait, info.limits.max_event_wait_s)
    next_id = info.last_event_id + 1 if cursor is None else cursor
    backoff = _Backoff()
    while True:
        started = time.monotonic()
        try:
            page = dispatch(ReadEvents(cursor=next_id, wait=wait, worker_id=worker_id))
        except _TRANSIENT as exc:
            if not reconnect:
                raise
            pause(backoff.delay(exc.details.get("retry_after_s")))
            continue
        except WorkerRuntimeError as exc:
            ahead = exc.details.get("next_event_id")
            if exc.code != "cursor_ahead" or not isinstance(ahead, int):
                raise
            next_id = ahead
            continue
        for event in page.events:
            next_id = event.event_id + 1
            if worker_id is None:
                yield event
            elif event.worker_ref is not None and event.worker_ref.worker_id == worker_id:
                yield event
                if event.type == "worker_deleted":
                    return
        next_id = max(next_id, page.cursor.next_event_id)
        if page.events or time.monotonic() - started >= wait / 2:
            backoff = _Backoff()
        else:
            # Nothing, and early: the runtime is stopping or had no waiter to
            # spare. Asking again at once would spin.
            pause(backoff.delay())
