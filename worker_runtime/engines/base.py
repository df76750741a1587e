"""The engine interface: what executes one run of a worker.

An engine gets a :class:`RunContext` (who is running, the input, the history,
a deadline and an abort signal) and an ``emit`` callback for output chunks.
It returns normally when the run is done, raises :class:`EngineFailure` when
it failed, and must return promptly once ``ctx.signal`` is set (cancel, stop
or timeout); the runtime decides the run's final status.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..domain import RunStatus, TranscriptEntry, WorkerIntent

__all__ = ["Emit", "Engine", "EngineFailure", "RunContext", "RunSignal"]

Emit = Callable[[str], None]


class EngineFailure(Exception):
    """The run failed; the message becomes the run's ``error`` (keep it readable,
    never include secrets)."""


class RunSignal:
    """Set once, with the reason a run must stop (``cancelled`` or ``timed_out``)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: RunStatus | None = None
        self._lock = threading.Lock()

    def abort(self, reason: RunStatus) -> bool:
        """Ask the run to stop; the first reason wins. True if this call set it."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
        self._event.set()
        return True

    @property
    def reason(self) -> RunStatus | None:
        return self._reason

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds; True if the run was aborted."""
        return self._event.wait(timeout)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunContext:
    runtime_id: str
    worker_id: str
    run_id: str
    input: TranscriptEntry
    intent: WorkerIntent
    deadline: float
    """``time.monotonic()`` value past which the run is timed out."""
    signal: RunSignal
    history: Callable[[], Sequence[TranscriptEntry]]
    """The worker's transcript so far (including ``input``)."""
    on_process_start: Callable[[int], None] | None = None
    """Called by an engine that starts a process (``command``), on the run's
    thread, with the new process group id right after the process starts and
    before it is given any input, so that the core can record it durably and,
    after a crash, kill what is left of the group at recovery (with
    :func:`~worker_runtime.engines.process_groups.kill_stale_group`, passing
    this run's id). Called at most once per run. When it returns, the group id
    is the one to kill; by the time ``run`` returns the group is gone, so the
    record can be dropped when the run ends. If it raises, the engine kills the
    group at once and the run fails (``EngineFailure`` naming the error): a
    process whose group could not be recorded is never left running."""


class Engine(ABC):
    """Runs inputs; one instance per profile, shared by all its workers' runs."""

    name: ClassVar[str]
    capabilities: frozenset[str] = frozenset()

    @abstractmethod
    def run(self, ctx: RunContext, emit: Emit) -> None:
        """Execute one run, passing output chunks to ``emit``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release resources held by the engine (at runtime close)."""
