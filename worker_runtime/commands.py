"""Typed commands: one frozen, keyword-only dataclass per runtime operation.

Each command has a JSON wire form, ``{"command": <class name>, "args": {...}}``,
described by the ``$defs/<class name>`` schema in ``schemas/worker_runtime.json``.
Pass a command to :meth:`worker_runtime.Runtime.dispatch`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .domain import (
    BusyPolicy,
    CapabilityRequest,
    ConfigBundleRef,
    InputKind,
    OpaqueRef,
    ProfileSelector,
    WorkerIntent,
    WorkerStatus,
)
from .results import (
    CancelAck,
    DeleteAck,
    DiagnosticList,
    EventPage,
    InputAck,
    Result,
    RunInfo,
    RunPage,
    RuntimeInfo,
    StopAck,
    TranscriptPage,
    WorkerDetail,
    WorkerPage,
)

R_co = TypeVar("R_co", bound=Result, covariant=True)

__all__ = [
    "COMMANDS",
    "RESULT_TYPES",
    "CancelRun",
    "Command",
    "CreateWorker",
    "DeleteWorker",
    "GetDiagnostics",
    "GetRun",
    "GetRuntime",
    "GetTranscript",
    "GetWorker",
    "ListRuns",
    "ListWorkers",
    "ReadEvents",
    "SendInput",
    "StopWorker",
    "result_type",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Command(Generic[R_co]):
    """Base of all commands; ``R_co`` is the result type dispatch returns."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GetRuntime(Command[RuntimeInfo]):
    """Summary of the runtime: ids, counters, limits, profiles."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ListWorkers(Command[WorkerPage]):
    """A page of workers in creation order, optionally only those in ``status``."""

    status: WorkerStatus | None = None
    limit: int | None = None
    after: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GetWorker(Command[WorkerDetail]):
    worker_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CreateWorker(Command[WorkerDetail]):
    """Create a worker; ``worker_id`` is generated when not given."""

    worker_id: str | None = None
    display_name: str | None = None
    intent: WorkerIntent = field(default_factory=WorkerIntent)
    profile: ProfileSelector = field(default_factory=ProfileSelector)
    config_bundle: ConfigBundleRef | None = None
    requested_capabilities: tuple[CapabilityRequest, ...] = ()
    workspace_refs: tuple[OpaqueRef, ...] = ()
    mount_refs: tuple[OpaqueRef, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class SendInput(Command[InputAck]):
    """Append input to an idle worker's transcript and start a run for it.

    A busy worker refuses it (``worker_busy``) unless ``on_busy`` is
    ``ENQUEUE``: then the run waits in the worker's FIFO and its input enters
    the transcript when it starts.
    """

    worker_id: str
    content: str
    kind: InputKind = InputKind.USER
    on_busy: BusyPolicy = BusyPolicy.REJECT


@dataclass(frozen=True, kw_only=True, slots=True)
class StopWorker(Command[StopAck]):
    """Cancel any active run and make the worker ``stopped`` for good."""

    worker_id: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelRun(Command[CancelAck]):
    """Cancel the worker's active run (or, with ``run_id``, only that run: a
    queued one ends ``cancelled`` without starting)."""

    worker_id: str
    run_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GetTranscript(Command[TranscriptPage]):
    worker_id: str
    start: int = 0
    limit: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadEvents(Command[EventPage]):
    """Events with ``event_id >= cursor`` (only ``worker_id``'s if given);
    ``wait`` seconds long-polls when none."""

    cursor: int = 0
    limit: int | None = None
    wait: float = 0.0
    worker_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GetDiagnostics(Command[DiagnosticList]):
    """Diagnostics with ``id > after``, oldest first, at most ``limit``."""

    after: int = 0
    limit: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ListRuns(Command[RunPage]):
    """A page of the worker's runs, oldest first, past run ``after``."""

    worker_id: str
    limit: int | None = None
    after: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class GetRun(Command[RunInfo]):
    """One run; with ``wait`` seconds, answers once it is terminal or at the deadline."""

    worker_id: str
    run_id: str
    wait: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteWorker(Command[DeleteAck]):
    """Remove a stopped worker, its transcript and runs; its id may be used again."""

    worker_id: str


COMMANDS: dict[str, type[Command[Result]]] = {
    cls.__name__: cls
    for cls in (
        GetRuntime,
        ListWorkers,
        GetWorker,
        CreateWorker,
        SendInput,
        StopWorker,
        CancelRun,
        GetTranscript,
        ReadEvents,
        GetDiagnostics,
        ListRuns,
        GetRun,
        DeleteWorker,
    )
}


def result_type(command: type[Command[Any]]) -> type[Result]:
    """The result class a command's dispatch returns: its ``Command[R]`` parameter."""
    known = _RESULT_TYPES.get(command)
    if known is None:
        known = _RESULT_TYPES[command] = _find_result_type(command)
    return known


def _find_result_type(command: type[Command[Any]]) -> type[Result]:
    for klass in command.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Command:
                (result,) = typing.get_args(base)
                if isinstance(result, type) and issubclass(result, Result):
                    return result
    raise TypeError(f"{command.__name__} does not name its result type")


_RESULT_TYPES: dict[type[Command[Any]], type[Result]] = {}

RESULT_TYPES: dict[type[Command[Result]], type[Result]] = {
    cls: result_type(cls) for cls in COMMANDS.values()
}
"""Each command's result class, read off its ``Command[R]`` base."""
