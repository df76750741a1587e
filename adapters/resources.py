"""Thin resources: each maps one REST verb onto one dispatcher command.

A responder builds the wire command ``{"command": NAME, "args": {...}}`` from
the path, the query and the body, hands it to ``runtime.dispatch_json`` and
wraps the result in its envelope. All worker semantics stay in the core.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import falcon

from worker_runtime import Runtime
from worker_runtime.errors import InvalidQuery, InvalidRequest, InvalidWorkerId, LimitTooLarge

from .parsing import Kind, parse_query, read_json_object

__all__ = [
    "CancelResource",
    "CommandResource",
    "DiagnosticsResource",
    "EventsResource",
    "HealthResource",
    "InputResource",
    "OpenApiResource",
    "RuntimeResource",
    "StopResource",
    "TranscriptResource",
    "WorkerResource",
    "WorkersResource",
]

LIST_QUERY = {"status": Kind.TEXT, "limit": Kind.INTEGER, "after": Kind.TEXT}
TRANSCRIPT_QUERY = {"start": Kind.INTEGER, "limit": Kind.INTEGER}
DIAGNOSTICS_QUERY = {"after": Kind.INTEGER, "limit": Kind.INTEGER}
EVENTS_QUERY = {"cursor": Kind.INTEGER, "limit": Kind.INTEGER, "wait": Kind.NUMBER}
NO_QUERY: Mapping[str, Kind] = {}


def send(resp: falcon.Response, body: Mapping[str, Any], status: int = 200) -> None:
    """Answer ``body`` as compact JSON (straight to bytes: the hot path skips
    falcon's media handlers)."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    try:
        resp.data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate that reached the runtime some other way (the adapter
        # refuses them) is still sent, escaped, rather than failing every read.
        resp.data = json.dumps(body, separators=(",", ":")).encode()


def _field(error: InvalidRequest) -> str:
    field = str(error.details.get("field", ""))
    return field.removeprefix("/args").lstrip("/").split("/", 1)[0]


def _for_http(error: InvalidRequest, query: Mapping[str, Kind]) -> InvalidRequest:
    """Point a core validation error at what the HTTP client sent: a fault in a
    query parameter is ``invalid_query``; body fields lose the ``/args`` prefix."""
    name = _field(error)
    if name in query and not isinstance(error, InvalidQuery | InvalidWorkerId | LimitTooLarge):
        reason = error.details.get("reason", error.message)
        return InvalidQuery(f"query parameter {name!r}: {reason}", details={"parameter": name})
    field = error.details.get("field")
    if isinstance(field, str) and field.startswith("/args"):
        details = {**error.details, "field": field.removeprefix("/args") or "/"}
        message = error.message.removeprefix("/args")
        if message.startswith(":"):
            message = "body" + message
        return type(error)(message, details=details)
    return error


class CommandResource:
    """Holds the runtime; ``_run`` dispatches one wire command."""

    def __init__(self, runtime: Runtime, *, max_body_bytes: int) -> None:
        self._rt = runtime
        self._max_body_bytes = max_body_bytes

    def _run(
        self,
        command: str,
        args: dict[str, Any],
        *,
        query: Mapping[str, Kind] = NO_QUERY,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        wire = {"command": command, "args": args}
        try:
            return self._rt.dispatch_json(wire, idempotency_key=idempotency_key)
        except InvalidRequest as error:
            raise _for_http(error, query) from None

    def _body(self, req: falcon.Request, *, path_owned: bool = True) -> dict[str, Any]:
        body = read_json_object(req, self._max_body_bytes)
        if path_owned and "worker_id" in body:
            raise InvalidRequest(
                "worker_id comes from the path, not the body", details={"field": "/worker_id"}
            )
        return body

    def _post(
        self, req: falcon.Request, command: str, args: dict[str, Any], query: Mapping[str, Kind]
    ) -> dict[str, Any]:
        parse_query(req, query)
        key = req.get_header("Idempotency-Key")
        return self._run(command, args, idempotency_key=key)


class RuntimeResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        parse_query(req, NO_QUERY)
        send(resp, {"runtime": self._run("GetRuntime", {})})


class WorkersResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send(resp, self._run("ListWorkers", parse_query(req, LIST_QUERY), query=LIST_QUERY))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        worker = self._post(req, "CreateWorker", self._body(req, path_owned=False), NO_QUERY)
        resp.location = f"/v1/workers/{worker['worker_id']}"
        send(resp, {"worker": worker}, 201)


class WorkerResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
        parse_query(req, NO_QUERY)
        send(resp, {"worker": self._run("GetWorker", {"worker_id": worker_id})})


class InputResource(CommandResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
        args = {**self._body(req), "worker_id": worker_id}
        send(resp, {"ack": self._post(req, "SendInput", args, NO_QUERY)}, 202)


class StopResource(CommandResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
        args = {**self._body(req), "worker_id": worker_id}
        send(resp, {"ack": self._post(req, "StopWorker", args, NO_QUERY)})


class CancelResource(CommandResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
        args = {**self._body(req), "worker_id": worker_id}
        send(resp, {"ack": self._post(req, "CancelRun", args, NO_QUERY)})


class TranscriptResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
        args = {**parse_query(req, TRANSCRIPT_QUERY), "worker_id": worker_id}
        send(resp, {"transcript": self._run("GetTranscript", args, query=TRANSCRIPT_QUERY)})


class EventsResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # A long-poll (``wait``) holds this server thread until an event or the deadline.
        send(resp, self._run("ReadEvents", parse_query(req, EVENTS_QUERY), query=EVENTS_QUERY))


class DiagnosticsResource(CommandResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(req, DIAGNOSTICS_QUERY)
        send(resp, self._run("GetDiagnostics", query, query=DIAGNOSTICS_QUERY))


class HealthResource:
    """The only route without a token: says the process serves HTTP, nothing more."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        send(resp, {"status": "ok"})


class OpenApiResource:
    """Serves the OpenAPI document built once by ``create_app`` (encoded once, too)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body
