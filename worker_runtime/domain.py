"""Domain values: ids, worker and run states, and the records the stores keep.

Every value is a frozen, keyword-only dataclass so it can be shared across
threads and compared by value. Records are replaced, never mutated in place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import InvalidRequest, InvalidWorkerId

__all__ = [
    "ID_PATTERN",
    "MAX_REASON_CHARS",
    "RUN_END_EVENTS",
    "USAGE_FIELD",
    "BusyPolicy",
    "CapabilityRequest",
    "ConfigBundleRef",
    "Diagnostic",
    "Event",
    "InputKind",
    "OpaqueRef",
    "PendingInput",
    "ProfileSelector",
    "Role",
    "Run",
    "RunStatus",
    "RuntimeRecord",
    "Severity",
    "TranscriptEntry",
    "Usage",
    "WorkerIntent",
    "WorkerRecord",
    "WorkerRef",
    "WorkerStatus",
    "check_reason",
    "check_run_id",
    "check_runtime_id",
    "check_worker_id",
    "is_valid_id",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    """True if ``value`` is a legal runtime or worker id."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_worker_id(value: object) -> str:
    """Return ``value`` if it is a legal worker id, else raise ``InvalidWorkerId``."""
    if not is_valid_id(value):
        raise InvalidWorkerId("worker_id must match " + ID_PATTERN, details={"field": "worker_id"})
    assert isinstance(value, str)
    return value


def check_run_id(value: str) -> str:
    """Return ``value`` if it is a legal run id (the id pattern), else raise
    ``InvalidRequest`` naming ``run_id``: no run can have that name."""
    if not is_valid_id(value):
        raise InvalidRequest("run_id must match " + ID_PATTERN, details={"field": "run_id"})
    return value


MAX_REASON_CHARS = 1000
"""The longest ``reason`` a stop or cancel takes (the schema's ``Reason``)."""


def check_reason(value: str | None) -> str | None:
    """Return ``value`` if it is a stop or cancel reason the wire form accepts
    (at most ``MAX_REASON_CHARS``), else raise ``InvalidRequest`` naming it."""
    if value is not None and len(value) > MAX_REASON_CHARS:
        raise InvalidRequest(
            f"reason must be at most {MAX_REASON_CHARS} characters",
            details={"field": "reason", "maximum": MAX_REASON_CHARS},
        )
    return value


def check_runtime_id(value: object) -> str:
    """Return ``value`` if it is a legal runtime id, else raise ``InvalidRequest``."""
    if not is_valid_id(value):
        raise InvalidRequest("runtime_id must match " + ID_PATTERN, details={"field": "runtime_id"})
    assert isinstance(value, str)
    return value


class WorkerStatus(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    STOPPED = "stopped"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"

    @property
    def active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


class InputKind(StrEnum):
    USER = "user"
    SYSTEM = "system"


class BusyPolicy(StrEnum):
    """What input to a busy worker does: ``reject`` (``worker_busy``) or ``enqueue``."""

    REJECT = "reject"
    ENQUEUE = "enqueue"


class Role(StrEnum):
    USER = "user"
    SYSTEM = "system"
    ASSISTANT = "assistant"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerRef:
    """The authority of a worker: the pair ``runtime_id + worker_id``."""

    runtime_id: str
    worker_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerIntent:
    """What the worker is for: ``assistant`` (default), ``task`` or ``role``."""

    kind: str = "assistant"
    purpose: str | None = None
    objective: str | None = None
    role: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileSelector:
    """Which profile a worker runs on: ``runtime_default``, ``builtin`` or ``named``."""

    kind: str = "runtime_default"
    value: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ConfigBundleRef:
    """Placeholder for a later config-bundle sync; only the id is kept."""

    id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CapabilityRequest:
    name: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OpaqueRef:
    """A workspace or mount reference; opaque to the runtime, never a path it opens."""

    name: str
    reference: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    inputs: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    runs_cancelled: int = 0
    runs_timed_out: int = 0
    runs_interrupted: int = 0
    output_chars: int = 0


USAGE_FIELD = {
    RunStatus.COMPLETED: "runs_completed",
    RunStatus.FAILED: "runs_failed",
    RunStatus.CANCELLED: "runs_cancelled",
    RunStatus.TIMED_OUT: "runs_timed_out",
    RunStatus.INTERRUPTED: "runs_interrupted",
}
"""The :class:`Usage` counter of each final run status."""

RUN_END_EVENTS = frozenset(f"run_{status.value}" for status in USAGE_FIELD)
"""The event types that end a run: ``run_<final status>``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingInput:
    """An enqueued input, kept on its run until it enters the transcript."""

    kind: InputKind
    content: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """The durable run record (one per input); every version is put to the store.

    The defaults let records written by version 1 (which had no queue) load.
    """

    run_id: str
    status: RunStatus
    queued_at: str | None = None
    """None only in records written by version 1 (use ``started_at``)."""
    input_sequence: int | None = None
    """None while queued: its input is not in the transcript yet."""
    reply_sequence: int | None = None
    """The assistant entry holding its reply, once written."""
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    output_chars: int = 0
    pending: PendingInput | None = None
    """Internal: the queued input; None once it is in the transcript."""
    pgid: int | None = None
    """Internal: the engine's process group, recorded when it is spawned."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerRecord:
    """Everything the runtime keeps about one worker (its transcript lives apart)."""

    runtime_id: str
    worker_id: str
    display_name: str | None
    status: WorkerStatus
    intent: WorkerIntent
    profile: ProfileSelector
    config_bundle: ConfigBundleRef | None
    requested_capabilities: tuple[CapabilityRequest, ...]
    workspace_refs: tuple[OpaqueRef, ...]
    mount_refs: tuple[OpaqueRef, ...]
    created_at: str
    updated_at: str
    transcript_len: int = 0
    last_event_id: int = 0
    active_run: Run | None = None
    last_run: Run | None = None
    last_error: str | None = None
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    queued: tuple[str, ...] = ()
    """Ids of the runs waiting in the worker's FIFO, oldest first (bounded by
    ``max_queued_runs``, so the record stays small)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptEntry:
    sequence: int
    role: Role
    content: str
    event_id: int
    created_at: str
    run_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    event_id: int
    type: str
    created_at: str
    worker_ref: WorkerRef | None = None
    run_id: str | None = None
    data: dict[str, str | int | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Diagnostic:
    id: int
    severity: Severity
    code: str
    message: str
    created_at: str
    worker_ref: WorkerRef | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeRecord:
    runtime_id: str
    display_name: str | None
    created_at: str
