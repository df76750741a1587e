"""Typed results: what :meth:`worker_runtime.Runtime.dispatch` returns.

Each result class has a schema at ``$defs/<class name>`` in
``schemas/worker_runtime.json``; its JSON form is ``wire.to_json(result)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .domain import (
    CapabilityRequest,
    ConfigBundleRef,
    Diagnostic,
    Event,
    OpaqueRef,
    ProfileSelector,
    RunStatus,
    TranscriptEntry,
    Usage,
    WorkerIntent,
    WorkerRef,
    WorkerStatus,
)

__all__ = [
    "CancelAck",
    "DeleteAck",
    "DiagnosticList",
    "EventCursor",
    "EventPage",
    "InputAck",
    "Limits",
    "ProfileInfo",
    "Result",
    "RunInfo",
    "RunPage",
    "RunTotals",
    "RuntimeInfo",
    "StopAck",
    "TranscriptPage",
    "WorkerCounts",
    "WorkerDetail",
    "WorkerPage",
    "WorkerSummary",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    """Base of all results."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerCounts:
    idle: int
    running: int
    stopped: int
    total: int


@dataclass(frozen=True, kw_only=True, slots=True)
class RunTotals:
    """Runs ended so far, by final status (summed over the workers that exist)."""

    completed: int
    failed: int
    cancelled: int
    timed_out: int
    interrupted: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """The runtime's configured bounds (its ``RuntimeConfig``), for a client to
    discover: page sizes, the longest wait, the run pool, queue and wait slots."""

    max_transcript_page: int
    default_transcript_page: int
    max_worker_page: int
    default_worker_page: int
    max_event_page: int
    default_event_page: int
    max_event_wait_s: float
    max_input_chars: int
    run_timeout_s: float
    operation_timeout_s: float
    max_concurrent_runs: int
    max_queued_runs: int
    """Inputs a worker's queue holds beside its active run (``on_busy="enqueue"``)."""
    max_waiters: int
    """Waits (``wait`` > 0) held at once over HTTP; beyond, answered at once."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileInfo:
    name: str
    kind: str
    engine: str
    timeout_s: float
    capabilities: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeInfo(Result):
    runtime_id: str
    display_name: str | None
    store: str
    status: str
    version: str
    started_at: str
    workers: WorkerCounts
    active_runs: int
    runs: RunTotals
    queued_runs: int
    waiters: int
    diagnostic_count: int
    last_event_id: int
    limits: Limits
    profiles: tuple[ProfileInfo, ...]
    engines: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSummary(Result):
    runtime_id: str
    worker_id: str
    worker_ref: WorkerRef
    display_name: str | None
    display_ref: str
    status: WorkerStatus
    intent: WorkerIntent
    profile: ProfileSelector
    transcript_len: int
    last_event_id: int
    created_at: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RunInfo(Result):
    """A run (SPEC section 7): ``input_sequence`` is null while it is queued (its
    input is not in the transcript yet), ``reply_sequence`` until its reply entry
    exists; ``queued_at`` is when its input was acknowledged."""

    run_id: str
    worker_ref: WorkerRef
    status: RunStatus
    input_sequence: int | None
    reply_sequence: int | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None
    output_chars: int


@dataclass(frozen=True, kw_only=True, slots=True)
class RunPage(Result):
    """A page of a worker's runs, oldest first; ``next_after`` is the ``after``
    for the next page, or null on the last."""

    runs: tuple[RunInfo, ...]
    next_after: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerDetail(WorkerSummary):
    updated_at: str
    config_bundle: ConfigBundleRef | None
    requested_capabilities: tuple[CapabilityRequest, ...]
    workspace_refs: tuple[OpaqueRef, ...]
    mount_refs: tuple[OpaqueRef, ...]
    active_run: RunInfo | None
    last_run: RunInfo | None
    last_error: str | None
    usage: Usage


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerPage(Result):
    workers: tuple[WorkerSummary, ...]
    next_after: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAck(Result):
    """``run_status`` is ``running`` when the run starts at once, ``queued`` when
    it waits in the worker's FIFO (then ``transcript_sequence`` is null: the
    input enters the transcript when its run starts)."""

    worker_ref: WorkerRef
    status: WorkerStatus
    event_id: int
    run_id: str
    transcript_sequence: int | None
    run_status: str


@dataclass(frozen=True, kw_only=True, slots=True)
class StopAck(Result):
    worker_ref: WorkerRef
    status: WorkerStatus
    event_id: int | None
    already_stopped: bool
    cancelled_run_id: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteAck(Result):
    """A stopped worker removed; ``event_id`` is its ``worker_deleted`` event."""

    worker_ref: WorkerRef
    event_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelAck(Result):
    """``cancelled_run_id`` is null when nothing was running; ``run_status`` is
    the final status of the run the caller named, or of the one cancelled."""

    worker_ref: WorkerRef
    status: WorkerStatus
    event_id: int | None
    cancelled_run_id: str | None
    run_id: str | None
    run_status: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptPage(Result):
    worker_ref: WorkerRef
    start: int
    limit: int
    items: tuple[TranscriptEntry, ...]
    total_items: int
    next_start: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class EventCursor:
    next_event_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class EventPage(Result):
    events: tuple[Event, ...]
    cursor: EventCursor
    has_more: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class DiagnosticList(Result):
    """``next_after`` is the ``after`` for the next page, or null on the last."""

    diagnostics: tuple[Diagnostic, ...]
    next_after: int | None
