"""The HTTP API as data: one row per route, written once.

The Falcon adapter mounts its resources and builds its OpenAPI document from
this table, and the remote client (``worker_runtime.client``) sends commands
by it, so the server and the client cannot disagree on a path, a verb, an
envelope or a status. It is plain data: no HTTP library is imported here.

A command's arguments come from three places: ``{name}`` segments of the path,
the query string (``query``, each with how it is converted from text) and,
for routes with ``body``, a JSON object holding the remaining arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

__all__ = ["ROUTES", "ROUTES_BY_COMMAND", "QueryKind", "Route"]


class QueryKind(Enum):
    """How a query parameter's text becomes a command argument."""

    INTEGER = "integer"
    NUMBER = "number"
    TEXT = "text"


_NO_QUERY: Mapping[str, QueryKind] = MappingProxyType({})
_NO_BOUNDS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """One REST operation: the command it runs and how its answer is wrapped."""

    command: str
    """The command's wire name (its class name in ``commands``)."""
    method: str
    """``GET``, ``POST`` or ``DELETE``."""
    path: str
    """The path template; ``{worker_id}``-style segments are command arguments."""
    operation_id: str
    summary: str
    envelope: str | None
    """The key the result is wrapped in (``{"worker": ...}``), or None: the body is
    the result itself."""
    status: int = 200
    query: Mapping[str, QueryKind] = field(default_factory=lambda: _NO_QUERY)
    body: bool = False
    """True: the remaining arguments come as a JSON object body."""
    body_required: bool = False
    """With ``body``: whether an empty body is refused."""
    idempotent_key: bool = False
    """Whether the route accepts an ``Idempotency-Key`` header (every route that
    changes state: the remote client sends one on each, so a retry replays)."""
    long_poll: bool = False
    """Whether the command may hold the request while it waits (``wait``)."""
    location: str | None = None
    """A path template filled from the result's fields, sent as ``Location``
    (the created resource's path)."""
    ids: tuple[str, ...] = ()
    """Query or body arguments the runtime checks as worker ids before anything
    else (a malformed one is ``invalid_worker_id``, as a path id is): the remote
    client checks them, and the path ids, before sending, so it refuses them as
    the in-process dispatcher does."""
    bounds: Mapping[str, str] = field(default_factory=lambda: _NO_BOUNDS)
    """Argument name -> the ``RuntimeConfig`` field that bounds it (a number's
    maximum, a string's length): the runtime refuses more than its configuration
    allows, so the OpenAPI document states that configured bound."""
    refusals: tuple[str, ...] = ()
    """Error codes the command itself may answer (a conflict, an unknown name, a
    limit), beside those that follow from the route's shape (a path id: not
    found; a body: malformed; any command: unavailable, timeout), which the
    adapter adds: together, the codes the OpenAPI document lists per operation."""

    def __post_init__(self) -> None:
        # The table is shared by the server and the client: keep its rows read-only.
        object.__setattr__(self, "query", MappingProxyType(dict(self.query)))
        object.__setattr__(self, "bounds", MappingProxyType(dict(self.bounds)))

    @property
    def path_params(self) -> tuple[str, ...]:
        """The argument names taken from the path, in order."""
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))


_I, _N, _T = QueryKind.INTEGER, QueryKind.NUMBER, QueryKind.TEXT

ROUTES: tuple[Route, ...] = (
    Route(command="GetRuntime", method="GET", path="/v1/runtime", operation_id="getRuntime",
          summary="Runtime summary", envelope="runtime"),
    Route(command="ListWorkers", method="GET", path="/v1/workers", operation_id="listWorkers",
          summary="Workers, in creation order", envelope=None,
          query={"status": _T, "limit": _I, "after": _T}, ids=("after",),
          bounds={"limit": "max_worker_page"}, refusals=("limit_too_large",)),
    Route(command="CreateWorker", method="POST", path="/v1/workers",
          operation_id="createWorker", summary="Create a worker", envelope="worker", status=201,
          body=True, idempotent_key=True, location="/v1/workers/{worker_id}", ids=("worker_id",),
          refusals=("invalid_worker_id", "worker_exists", "unknown_profile",
                    "unsupported_capability")),
    Route(command="GetWorker", method="GET", path="/v1/workers/{worker_id}",
          operation_id="getWorker", summary="One worker", envelope="worker"),
    Route(command="SendInput", method="POST", path="/v1/workers/{worker_id}/input",
          operation_id="sendInput", summary="Send input; starts a run", envelope="ack",
          status=202, body=True, body_required=True, idempotent_key=True,
          bounds={"content": "max_input_chars"},
          refusals=("worker_busy", "worker_stopped")),
    Route(command="DeleteWorker", method="DELETE", path="/v1/workers/{worker_id}",
          operation_id="deleteWorker", summary="Delete a stopped worker", envelope="ack",
          idempotent_key=True, refusals=("worker_not_stopped",)),
    Route(command="StopWorker", method="POST", path="/v1/workers/{worker_id}/stop",
          operation_id="stopWorker", summary="Stop the worker for good", envelope="ack",
          body=True, idempotent_key=True),
    Route(command="CancelRun", method="POST", path="/v1/workers/{worker_id}/cancel",
          operation_id="cancelRun", summary="Cancel the active run", envelope="ack",
          body=True, idempotent_key=True),
    Route(command="GetTranscript", method="GET", path="/v1/workers/{worker_id}/transcript",
          operation_id="getTranscript", summary="A page of the transcript",
          envelope="transcript", query={"start": _I, "limit": _I},
          bounds={"limit": "max_transcript_page"},
          refusals=("limit_too_large",)),
    Route(command="ReadEvents", method="GET", path="/v1/events", operation_id="readEvents",
          summary="Events from a cursor; wait seconds to long-poll", envelope=None,
          query={"cursor": _I, "limit": _I, "wait": _N, "worker_id": _T}, long_poll=True,
          ids=("worker_id",),
          bounds={"limit": "max_event_page", "wait": "max_event_wait_s"},
          refusals=("limit_too_large", "invalid_worker_id", "cursor_ahead", "worker_not_found")),
    Route(command="ListRuns", method="GET", path="/v1/workers/{worker_id}/runs",
          operation_id="listRuns", summary="The worker's runs, oldest first", envelope=None,
          query={"limit": _I, "after": _T}, ids=("after",), bounds={"limit": "max_worker_page"},
          refusals=("limit_too_large",)),
    Route(command="GetRun", method="GET", path="/v1/workers/{worker_id}/runs/{run_id}",
          operation_id="getRun", summary="One run; wait seconds for it to end", envelope="run",
          query={"wait": _N}, long_poll=True, bounds={"wait": "max_event_wait_s"},
          refusals=("invalid_request", "run_not_found")),
    Route(command="GetDiagnostics", method="GET", path="/v1/diagnostics",
          operation_id="getDiagnostics", summary="Diagnostics", envelope=None,
          query={"after": _I, "limit": _I}, bounds={"limit": "max_event_page"},
          refusals=("limit_too_large",)),
)  # fmt: skip

ROUTES_BY_COMMAND: Mapping[str, Route] = MappingProxyType({r.command: r for r in ROUTES})
"""The route of each command, by the command's wire name."""
