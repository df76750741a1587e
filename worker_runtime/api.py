"""``RuntimeAPI``: what a Backend holds, whether the runtime is in-process or remote.

Both :class:`worker_runtime.Runtime` and
:class:`worker_runtime.client.RemoteRuntime` satisfy it (mypy checks that
below), so code written against it runs unchanged on either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from .commands import Command, R_co
from .domain import Event

__all__ = ["RuntimeAPI"]


@runtime_checkable
class RuntimeAPI(Protocol):
    """Run typed commands, follow the event log, and close when done."""

    def dispatch(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        """Run ``command``; return its typed result or raise its typed error."""
        ...

    def follow(self, worker_id: str | None = None, cursor: int | None = None) -> Iterator[Event]:
        """Yield events as they arrive (from ``cursor``, else from now on)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


if TYPE_CHECKING:  # mypy proves both implementations fit the protocol
    from .client import RemoteRuntime
    from .runtime import Runtime

    def _both_fit(local: Runtime, remote: RemoteRuntime) -> tuple[RuntimeAPI, RuntimeAPI]:
        return local, remote
