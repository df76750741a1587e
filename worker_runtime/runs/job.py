"""A run in flight (:class:`Job`) and how a cancelled one ended (:class:`Ended`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..domain import RunStatus, TranscriptEntry, WorkerIntent
from ..engines import Engine, RunSignal

__all__ = ["Accepted", "Ended", "Job"]


@dataclass(kw_only=True, eq=False)
class Job:
    """One run in flight: what to execute and how to stop it."""

    worker_id: str
    run_id: str
    engine: Engine
    timeout_s: float
    entry: TranscriptEntry
    intent: WorkerIntent
    signal: RunSignal = field(default_factory=RunSignal)
    returned: threading.Event = field(default_factory=threading.Event)
    abort_error: str | None = None
    """The abort's message (with the caller's reason), set with the signal."""
    final_event_id: int | None = None
    final_status: RunStatus | None = None
    drain: Callable[[], str] | None = None
    """Set while the engine runs: stream what is pending and return the whole
    reply (``RunOutput.drain``), called once when the run ends."""

    def abort_message(self, reason: RunStatus) -> str:
        """The error a run aborted for ``reason`` ends with."""
        if reason is RunStatus.TIMED_OUT:
            return f"timed out after {self.timeout_s:g}s"
        return self.abort_error or "cancelled"


@dataclass(frozen=True, kw_only=True, slots=True)
class Ended:
    """How a cancelled run ended: its final status and the event that said so."""

    run_id: str
    status: RunStatus | None
    event_id: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Accepted:
    """An acknowledged input: its run, the event that said so, and where its
    input is (``transcript_sequence`` None while the run waits in the queue)."""

    run_id: str
    event_id: int
    transcript_sequence: int | None
    queued: bool
