"""Thin resources: the rows of ``worker_runtime.routes``, served.

One :class:`RouteResource` serves one path template; each of its rows (one per
HTTP method) becomes a responder, an :class:`Operation`, that builds the wire
command ``{"command": NAME, "args": {...}}`` from the path, the query and the
body, hands it to ``runtime.dispatch_json`` and answers the result in the
row's envelope and status. All worker semantics stay in the core; a new
command is a new row, not a new class.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import falcon

from worker_runtime import Runtime
from worker_runtime.errors import InvalidQuery, InvalidRequest, InvalidWorkerId, LimitTooLarge
from worker_runtime.routes import QueryKind, Route
from worker_runtime.waits import abandon_when

from .parsing import parse_query, read_body, read_json_object
from .settings import DEFAULT_MAX_BODY_BYTES

__all__ = [
    "HealthResource",
    "OpenApiResource",
    "Operation",
    "RouteResource",
    "encode",
    "enveloped",
    "route_resources",
    "send",
]


def encode(body: Mapping[str, Any]) -> bytes:
    """``body`` as compact JSON bytes."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate that reached the runtime some other way (the adapter
        # refuses them) is still sent, escaped, rather than failing every read.
        return json.dumps(body, separators=(",", ":")).encode()


def send(resp: falcon.Response, body: Mapping[str, Any], status: int = 200) -> None:
    """Answer ``body`` as compact JSON (straight to bytes: the hot path skips
    falcon's media handlers)."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = encode(body)


def enveloped(envelope: str | None) -> Callable[[dict[str, Any]], bytes]:
    """The encoder of a route's answers: the result under ``envelope`` (if any),
    as compact JSON bytes. Made once per route: the runtime's answer cache
    keys on it."""
    if envelope is None:
        return encode
    return lambda result: encode({envelope: result})


def _field(error: InvalidRequest) -> str:
    field = str(error.details.get("field", ""))
    return field.removeprefix("/args").lstrip("/").split("/", 1)[0]


def _for_http(error: InvalidRequest, route: Route, maxima: Mapping[str, Any]) -> InvalidRequest:
    """Point a core validation error at what the HTTP client sent: a fault in a
    query parameter is ``invalid_query`` (keeping the core's other details, such
    as ``maximum``); body fields lose the ``/args`` prefix."""
    name = _field(error)
    if name in route.query and not isinstance(
        error, InvalidQuery | InvalidWorkerId | LimitTooLarge
    ):
        reason = error.details.get("reason", error.message)
        kept = {k: v for k, v in error.details.items() if k not in ("field", "reason")}
        return _query_error(
            InvalidQuery(
                f"query parameter {name!r}: {reason}", details={"parameter": name, **kept}
            ),
            maxima,
        )
    if isinstance(error, InvalidQuery):
        return _query_error(error, maxima)
    field = error.details.get("field")
    if isinstance(field, str) and field.startswith("/args"):
        details = {**error.details, "field": field.removeprefix("/args") or "/"}
        message = error.message.removeprefix("/args")
        if message.startswith(":"):
            message = "body" + message
        return type(error)(message, details=details)
    return error


def _query_error(error: InvalidQuery, maxima: Mapping[str, Any]) -> InvalidQuery:
    """A refused number with a configured maximum (``wait``) names that maximum,
    whatever refused it (the parser, the schema, the runtime), as the runtime's
    own refusal does."""
    name = error.details.get("parameter")
    if isinstance(name, str) and name in maxima and "maximum" not in error.details:
        return InvalidQuery(error.message, details={**error.details, "maximum": maxima[name]})
    return error


def _maxima(runtime: Runtime, route: Route) -> dict[str, Any]:
    return {
        name: getattr(runtime.config, bound)
        for name, bound in route.bounds.items()
        if route.query.get(name) is QueryKind.NUMBER
    }


class Operation:
    """The responder of one route: request in, command dispatched, envelope out."""

    def __init__(
        self,
        runtime: Runtime,
        route: Route,
        *,
        max_body_bytes: int,
        waiters: threading.Semaphore | None = None,
    ) -> None:
        self.route = route
        self._rt = runtime
        self._max_body_bytes = max_body_bytes
        self._path_params = frozenset(route.path_params)
        self._encode = enveloped(route.envelope)
        self._waiters = waiters if route.long_poll else None
        self._maxima = _maxima(runtime, route)

    def __call__(self, req: falcon.Request, resp: falcon.Response, **path: str) -> None:
        route = self.route
        args: dict[str, Any] = {}
        if route.body:
            # The body is judged before the query: its faults are the likelier ones.
            args = self._body(req)
        else:
            # A body here means nothing, but one past the limit is still a JSON 413.
            read_body(req, self._max_body_bytes)
        key = req.get_header("Idempotency-Key") if route.idempotent_key else None
        try:
            args.update(parse_query(req, route.query))
        except InvalidQuery as error:
            raise _query_error(error, self._maxima) from None
        args.update(path)
        # A long-poll (``wait``) holds this server thread until an event or the deadline.
        if self._waiters is not None and _positive(args.get("wait")):
            result = self._held(req, resp, args, key, self._waiters)
            send(resp, {route.envelope: result} if route.envelope else result, route.status)
            return
        if route.location is not None:
            result = self._dispatch(args, key)
            resp.location = route.location.format_map(result)
            send(resp, {route.envelope: result} if route.envelope else result, route.status)
            return
        # Straight to bytes; a read of an unchanged record comes from the
        # runtime's cache of encoded answers.
        resp.data = self._dispatch_encoded(args, key)
        resp.status = route.status
        resp.content_type = falcon.MEDIA_JSON

    def _body(self, req: falcon.Request) -> dict[str, Any]:
        body = read_json_object(req, self._max_body_bytes)
        for name in self._path_params & body.keys():
            raise InvalidRequest(
                f"{name} comes from the path, not the body", details={"field": f"/{name}"}
            )
        return body

    def _held(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        args: dict[str, Any],
        key: str | None,
        waiters: threading.Semaphore,
    ) -> dict[str, Any]:
        """A wait, if one of the ``max_waiters`` slots is free: else answered at
        once with what is there and ``Retry-After: 1`` (SPEC section 7), so waits
        never hold every server thread. A wait whose client hung up ends early."""
        if not waiters.acquire(blocking=False):
            resp.set_header("Retry-After", "1")
            return self._dispatch({**args, "wait": 0}, key)
        try:
            gone = req.env.get("waitress.client_disconnected")
            with abandon_when(gone if callable(gone) else None):
                return self._dispatch(args, key)
        finally:
            waiters.release()

    def _dispatch(self, args: dict[str, Any], key: str | None) -> dict[str, Any]:
        wire = {"command": self.route.command, "args": args}
        try:
            return self._rt.dispatch_json(wire, idempotency_key=key)
        except InvalidRequest as error:
            raise _for_http(error, self.route, self._maxima) from None

    def _dispatch_encoded(self, args: dict[str, Any], key: str | None) -> bytes:
        wire = {"command": self.route.command, "args": args}
        try:
            return self._rt.dispatch_encoded(wire, self._encode, idempotency_key=key)
        except InvalidRequest as error:
            raise _for_http(error, self.route, self._maxima) from None


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


class RouteResource:
    """Serves every route of one path template: an ``on_<method>`` responder per
    row, so falcon answers 405 (with ``Allow``) for the methods no row names."""

    def __init__(
        self,
        runtime: Runtime,
        routes: Iterable[Route],
        *,
        max_body_bytes: int,
        waiters: threading.Semaphore | None = None,
    ) -> None:
        self.routes = tuple(routes)
        paths = {route.path for route in self.routes}
        if len(paths) != 1:
            raise ValueError(f"one resource serves one path template, not {sorted(paths)}")
        for route in self.routes:
            name = f"on_{route.method.lower()}"
            if hasattr(self, name):
                raise ValueError(f"two routes for {route.method} {route.path}")
            setattr(
                self,
                name,
                Operation(runtime, route, max_body_bytes=max_body_bytes, waiters=waiters),
            )


def route_resources(
    runtime: Runtime, routes: Iterable[Route], *, max_body_bytes: int
) -> dict[str, RouteResource]:
    """One resource per path template, holding that path's routes (in table order).
    Their long-polls share one gate of ``runtime.config.max_waiters`` held waits."""
    waiters = threading.Semaphore(runtime.config.max_waiters)
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    return {
        path: RouteResource(runtime, rows, max_body_bytes=max_body_bytes, waiters=waiters)
        for path, rows in by_path.items()
    }


class HealthResource:
    """The only route without a token: says the process serves HTTP, nothing more."""

    def __init__(self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._max_body_bytes = max_body_bytes

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_body(req, self._max_body_bytes)
        send(resp, {"status": "ok"})


class OpenApiResource:
    """Serves the OpenAPI document built once by ``create_app`` (encoded once, too)."""

    def __init__(
        self, document: Mapping[str, Any], *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self._body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        self._max_body_bytes = max_body_bytes

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_body(req, self._max_body_bytes)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body
