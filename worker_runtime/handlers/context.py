"""What a handler is given (:class:`Context`), what a handler is, and how one is
registered for its command (:class:`Registration`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..clock import Clock
from ..config import RuntimeConfig
from ..errors import InvalidRequest, LimitTooLarge
from ..profiles import ProfileRegistry
from ..results import Result
from ..runs import RunLifecycle
from ..state import StateTable
from ..stores import Store

__all__ = ["Context", "Handler", "Registration", "check_wait", "page_limit"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Context:
    """The runtime's parts a handler works with; built once by the runtime.

    ``state`` is the unit of work (``with ctx.state.locked(): ...``); the
    dispatcher syncs it after the handler returns.
    """

    state: StateTable
    store: Store
    profiles: ProfileRegistry
    runs: RunLifecycle
    config: RuntimeConfig
    clock: Clock


Handler = Callable[[Context, Any], Result]
"""``handler(ctx, command) -> result``; raises typed errors only."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Registration:
    """A command's handler, and whether it is ``one_hold``: all its work in one
    hold of the state lock, never waiting for a run, so it is safe to call with
    the lock already held (the dispatcher then commits its idempotency record in
    the same hold)."""

    handler: Handler
    one_hold: bool = False


def page_limit(requested: int | None, default: int, maximum: int) -> int:
    """The page size for a requested ``limit``: the default when absent."""
    if requested is None:
        return default
    if requested > maximum:
        raise LimitTooLarge(
            f"limit {requested} is above the maximum of {maximum}",
            details={"field": "limit", "maximum": maximum},
        )
    if requested < 1:
        raise InvalidRequest("limit must be at least 1", details={"field": "limit"})
    return requested


def check_wait(ctx: Context, wait: float) -> float:
    """``wait`` if it is 0 to the runtime's ``max_event_wait_s`` seconds."""
    maximum = ctx.config.max_event_wait_s
    # NaN passes every comparison, and a NaN deadline would spin forever.
    if not (math.isfinite(wait) and 0 <= wait <= maximum):
        raise InvalidRequest(
            f"wait must be 0 to {maximum:g} seconds",
            details={"field": "wait", "maximum": maximum},
        )
    return float(wait)
