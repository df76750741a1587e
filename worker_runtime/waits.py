"""Held waits (long-polls) and how a transport says their caller went away.

A wait (``ReadEvents`` or ``GetRun`` with ``wait``) holds its caller's thread
until something happens or its deadline passes. Over HTTP that caller may hang
up first; the transport knows (waitress sets
``environ["waitress.client_disconnected"]``), the core does not. The transport
wraps its dispatch in :func:`abandon_when` with a check, and every core wait
wakes at least every :data:`POLL_S` seconds to ask :func:`abandoned`, so a
wait whose client left ends within that period instead of holding a thread
to its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["POLL_S", "abandon_when", "abandoned"]

POLL_S = 0.25
"""How often a held wait looks at its abandon check, at the longest."""

_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("worker_runtime_abandon", default=None)


@contextmanager
def abandon_when(check: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, core waits end early once ``check()`` is true (e.g. the
    HTTP client disconnected). ``None`` adds no check."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def abandoned() -> bool:
    """Whether the current wait's caller has gone (its check says so)."""
    check = _CHECK.get()
    if check is None:
        return False
    try:
        return bool(check())
    except Exception:  # a transport's check must not break a read; assume still there
        return False
