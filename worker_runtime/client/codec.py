"""Commands to HTTP requests and HTTP answers back to typed results and errors.

Everything here is derived from data the server uses too: the route table
(``worker_runtime.routes``), the wire codec (``worker_runtime.wire``), the
result type each command declares (``Command[R]``) and the error hierarchy
(``worker_runtime.errors``). No route, envelope or error code is written twice.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from .. import errors
from ..commands import Command, result_type
from ..domain import ID_PATTERN, check_reason, check_run_id, check_worker_id
from ..fields import check_fields
from ..routes import ROUTES_BY_COMMAND, QueryKind, Route
from ..wire import to_json
from .decode import converter

__all__ = [
    "ClientClosed",
    "InvalidResponse",
    "Request",
    "RuntimeUnreachable",
    "build_request",
    "decode_error",
    "decode_result",
    "error_class",
    "retry_after",
]

_ID = re.compile(ID_PATTERN)
_HANDLER_CHECKS: dict[str, Callable[[Any], object]] = {
    "run_id": check_run_id,
    "reason": check_reason,
}
"""The handlers' own checks of these fields, made before sending: the wire
schema refuses the same values, but names the field otherwise."""


class RuntimeUnreachable(errors.RuntimeUnavailable):
    """The client could not reach the runtime (connection refused, reset, timed
    out) after its retries. A :class:`~worker_runtime.errors.RuntimeUnavailable`,
    so code that retries an unavailable runtime retries this too."""

    code = "runtime_unreachable"


class ClientClosed(errors.WorkerRuntimeError):
    """The client was closed: it sends nothing more (and ``follow`` ends)."""

    code = "client_closed"


class InvalidResponse(errors.WorkerRuntimeError):
    """The server's answer was not the API's JSON (a proxy's error page, say)."""

    code = "invalid_response"


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One HTTP request for one command."""

    route: Route
    method: str
    target: str
    """Path and query string."""
    body: bytes | None


def build_request(command: Command[Any]) -> Request:
    """The request that runs ``command`` on the server (its route, from the table).

    Raises ``UnsupportedOperation`` for a command the API has no route for,
    and ``InvalidWorkerId`` for a path argument that is not an id (sent as a
    path segment it could otherwise name another route). As the in-process
    dispatcher does first, it checks each field's type and the arguments the
    runtime takes as worker ids (``route.ids``), so those faults are refused
    with the same class and details on both targets.
    """
    name = type(command).__name__
    route = ROUTES_BY_COMMAND.get(name)
    if route is None:
        raise errors.UnsupportedOperation(
            f"no HTTP route for command {name}", details={"command": name}
        )
    check_fields(command)
    for field in route.ids:
        value = getattr(command, field)
        if value is not None:
            check_worker_id(value)
    for field, check in _HANDLER_CHECKS.items():
        value = getattr(command, field, None)
        if value is not None:
            check(value)
    args: dict[str, Any] = to_json(command)
    path = route.path
    for param in route.path_params:
        value = args.pop(param, None)
        if not isinstance(value, str) or not _ID.match(value):
            raise errors.InvalidWorkerId(
                f"{param} must match {ID_PATTERN}", details={"field": param}
            )
        path = path.replace("{" + param + "}", quote(value, safe=""))
    query = [
        (key, _query_text(route.query[key], args.pop(key))) for key in route.query if key in args
    ]
    body = None
    if route.body:
        body = json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode()
    elif args:
        # A field the route cannot carry: sending the command without it would
        # silently run a different command.
        field = next(iter(args))
        raise errors.UnsupportedOperation(
            f"the HTTP route of {name} cannot carry {field!r}",
            details={"command": name, "field": field},
        )
    target = path + ("?" + urlencode(query) if query else "")
    return Request(route=route, method=route.method, target=target, body=body)


def _query_text(kind: QueryKind, value: Any) -> str:
    if kind is QueryKind.NUMBER and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def decode_result(command: Command[Any], route: Route, body: bytes) -> Any:
    """The typed result in a success ``body`` (unwrapped from its envelope)."""
    data = _json(body)
    if route.envelope is not None:
        if not isinstance(data, dict) or route.envelope not in data:
            raise InvalidResponse(
                f"the answer has no {route.envelope!r} envelope",
                details={"envelope": route.envelope},
            )
        data = data[route.envelope]
    if not isinstance(data, dict):
        raise InvalidResponse("the answer is not a JSON object")
    try:
        return converter(result_type(type(command)))(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponse(f"the answer does not fit {type(command).__name__}: {exc}") from None


def decode_error(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> errors.WorkerRuntimeError:
    """The typed error in an error answer: the class is chosen by ``code``.

    An answer without the API's error envelope is ``InvalidResponse``, except
    what a proxy in front of the runtime answers while it cannot reach it (a
    load balancer's page during a restart): a 502 or 503 is
    ``RuntimeUnavailable`` (``retry_after_s`` from its ``Retry-After``), a 504
    ``OperationTimeout``, as the runtime's own answers of those statuses are.
    ``headers`` have lower-cased names.
    """
    try:
        inner = _json(body)["error"]
        code, message = inner["code"], inner["message"]
        details = inner.get("details") or {}
        if not (isinstance(code, str) and isinstance(message, str) and isinstance(details, dict)):
            raise TypeError
    except (InvalidResponse, KeyError, TypeError):
        return _without_envelope(status, headers or {})
    cls = error_class(code)
    error = cls(message, details=details)
    if cls.code != code:
        # An unknown code (a newer server): the base class, carrying that code.
        error.__dict__["code"] = code
    return error


def _without_envelope(status: int, headers: Mapping[str, str]) -> errors.WorkerRuntimeError:
    details: dict[str, Any] = {"status": status}
    if status in (502, 503):
        wait = retry_after(headers)
        if wait is not None:
            details["retry_after_s"] = wait
        return errors.RuntimeUnavailable(
            f"HTTP {status} from a proxy: the runtime is not reachable now", details=details
        )
    if status == 504:
        return errors.OperationTimeout(
            "HTTP 504 from a proxy: the runtime did not answer in time", details=details
        )
    return InvalidResponse(f"HTTP {status} without the API's error envelope", details=details)


MAX_RETRY_AFTER_S = 30.0
"""A larger ``Retry-After`` is capped: the caller asked for bounded retries."""


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` in seconds (the delta form; a date is ignored), capped at
    :data:`MAX_RETRY_AFTER_S`. ``headers`` have lower-cased names."""
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def error_class(code: str) -> type[errors.WorkerRuntimeError]:
    """The error class for ``code``, or the base class for a code it does not know."""
    return _error_classes().get(code, errors.WorkerRuntimeError)


@functools.cache
def _error_classes() -> Mapping[str, type[errors.WorkerRuntimeError]]:
    found: dict[str, type[errors.WorkerRuntimeError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.WorkerRuntimeError):
            known = found.get(value.code)
            # Two classes may share a code (the base and InternalError): the
            # more specific one wins.
            if known is None or issubclass(value, known):
                found[value.code] = value
    return found


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        raise InvalidResponse("the answer is not JSON") from None
