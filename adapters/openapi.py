"""The OpenAPI 3.1 document, assembled from the core's JSON Schemas.

Component schemas are the ``$defs`` of ``worker_runtime.wire.schema_document()``
(the schemas the dispatcher validates with), with ``#/$defs/X`` references
rewritten to ``#/components/schemas/X``: one source of truth. Request bodies
and query parameters are derived from the command schemas; responses describe
the exact envelopes the resources send.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker_runtime import __version__
from worker_runtime.config import RuntimeConfig
from worker_runtime.wire import schema_document

__all__ = ["build_openapi"]

_REF = "#/components/schemas/"
_JSON = "application/json"
_ERROR_STATUSES = {
    "400": "invalid_json, invalid_request, invalid_worker_id, invalid_query, limit_too_large",
    "401": "unauthorized",
    "403": "browser_origin_forbidden",
    "404": "worker_not_found, not_found",
    "409": "worker_busy, worker_exists, worker_stopped, idempotency_key_reused",
    "413": "payload_too_large",
    "415": "unsupported_media_type",
    "422": "unknown_profile, unsupported_capability, unsupported_operation",
    "503": "runtime_unavailable, store_corrupt (retry after Retry-After seconds)",
    "504": "operation_timeout",
}


def _rewrite(node: Any) -> Any:
    """Point ``#/$defs/X`` references at ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {
            k: _REF + v.removeprefix("#/$defs/") if k == "$ref" else _rewrite(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is never JSON null: drop the null branch of a nullable schema."""
    branches = schema.get("anyOf")
    if branches:
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            return dict(kept[0])
    return schema


def _resolved(defs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow plain references (and drop null branches) down to a concrete schema."""
    schema = _non_null(schema)
    while "$ref" in schema and len(schema) == 1:
        schema = _non_null(defs[schema["$ref"].removeprefix(_REF)])
    return copy.deepcopy(schema)


def _query(defs: dict[str, Any], command: str, limits: Mapping[str, float]) -> list[dict[str, Any]]:
    parameters = []
    for name, schema in defs[command]["properties"].items():
        if name == "worker_id":
            continue
        schema = _resolved(defs, schema)
        if name in limits:
            schema["maximum"] = limits[name]
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    return parameters


def _body(defs: dict[str, Any], command: str, *, required: bool) -> dict[str, Any]:
    schema = copy.deepcopy(defs[command])
    if command != "CreateWorker":
        # The worker id is in the path; the body carries the rest of the args.
        schema["properties"].pop("worker_id")
        schema["required"] = [r for r in schema.get("required", []) if r != "worker_id"]
        if not schema["required"]:
            del schema["required"]
    return {"required": required, "content": {_JSON: {"schema": schema}}}


def _envelope(key: str | None, result: str) -> dict[str, Any]:
    if key is None:
        return _ref(result)
    return {
        "type": "object",
        "required": [key],
        "properties": {key: _ref(result)},
        "additionalProperties": False,
    }


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


def _responses(status: str, body: dict[str, Any], *, created: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
    if created:
        headers["Location"] = _header("the new worker's path, /v1/workers/{worker_id}")
    responses = {
        status: {
            "description": "success",
            "headers": headers,
            "content": {_JSON: {"schema": body}},
        }
    }
    for code in _ERROR_STATUSES:
        responses[code] = {"$ref": f"#/components/responses/Error{code}"}
    return responses


def _error_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, codes in _ERROR_STATUSES.items():
        headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
        if code == "401":
            headers["WWW-Authenticate"] = _header("always 'Bearer'", {"const": "Bearer"})
        if code == "503":
            headers["Retry-After"] = _header(
                "whole seconds to wait before retrying",
                {"type": "string", "pattern": "^[0-9]+$"},
            )
        responses[f"Error{code}"] = {
            "description": f"error codes: {codes}",
            "headers": headers,
            "content": {_JSON: {"schema": _ref("ErrorEnvelope")}},
        }
    return responses


@dataclass(frozen=True, kw_only=True)
class _Op:
    """One REST operation: which command it runs and how its answer is wrapped."""

    path: str
    method: str
    op_id: str
    summary: str
    command: str
    result: str
    envelope: str | None
    status: str = "200"
    query: bool = False
    body_required: bool | None = None
    """None: no body; else the body is the command's args (less the path's worker id)."""


_OPS = (
    _Op(path="/v1/runtime", method="get", op_id="getRuntime", summary="Runtime summary",
        command="GetRuntime", result="RuntimeInfo", envelope="runtime"),
    _Op(path="/v1/workers", method="get", op_id="listWorkers", summary="Workers, in creation order",
        command="ListWorkers", result="WorkerPage", envelope=None, query=True),
    _Op(path="/v1/workers", method="post", op_id="createWorker", summary="Create a worker",
        command="CreateWorker", result="WorkerDetail", envelope="worker", status="201",
        body_required=False),
    _Op(path="/v1/workers/{worker_id}", method="get", op_id="getWorker", summary="One worker",
        command="GetWorker", result="WorkerDetail", envelope="worker"),
    _Op(path="/v1/workers/{worker_id}/input", method="post", op_id="sendInput",
        summary="Send input; starts a run", command="SendInput", result="InputAck",
        envelope="ack", status="202", body_required=True),
    _Op(path="/v1/workers/{worker_id}/stop", method="post", op_id="stopWorker",
        summary="Stop the worker for good", command="StopWorker", result="StopAck",
        envelope="ack", body_required=False),
    _Op(path="/v1/workers/{worker_id}/cancel", method="post", op_id="cancelRun",
        summary="Cancel the active run", command="CancelRun", result="CancelAck",
        envelope="ack", body_required=False),
    _Op(path="/v1/workers/{worker_id}/transcript", method="get", op_id="getTranscript",
        summary="A page of the transcript", command="GetTranscript", result="TranscriptPage",
        envelope="transcript", query=True),
    _Op(path="/v1/events", method="get", op_id="readEvents",
        summary="Events from a cursor; wait seconds to long-poll", command="ReadEvents",
        result="EventPage", envelope=None, query=True),
    _Op(path="/v1/diagnostics", method="get", op_id="getDiagnostics", summary="Diagnostics",
        command="GetDiagnostics", result="DiagnosticList", envelope=None, query=True),
)  # fmt: skip

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key and body replays the first response",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        # Printable ASCII; HTTP trims the ends, so inner spaces are all that can arrive.
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}
_WORKER_ID = {"name": "worker_id", "in": "path", "required": True, "schema": _ref("Id")}


def _maxima(config: RuntimeConfig) -> dict[str, dict[str, float]]:
    """The runtime's limits, so that a value the document allows is one the runtime takes."""
    return {
        "ListWorkers": {"limit": config.max_worker_page},
        "GetTranscript": {"limit": config.max_transcript_page},
        "ReadEvents": {"limit": config.max_event_page, "wait": config.max_event_wait_s},
    }


def _operation(defs: dict[str, Any], op: _Op, maxima: dict[str, dict[str, float]]) -> Any:
    parameters: list[dict[str, Any]] = []
    if "{worker_id}" in op.path:
        parameters.append(_WORKER_ID)
    if op.query:
        parameters += _query(defs, op.command, maxima.get(op.command, {}))
    operation: dict[str, Any] = {"operationId": op.op_id, "summary": op.summary}
    if op.body_required is not None:
        parameters.append(_IDEMPOTENCY_KEY)
        operation["requestBody"] = _body(defs, op.command, required=op.body_required)
    if parameters:
        operation["parameters"] = parameters
    body = _envelope(op.envelope, op.result)
    operation["responses"] = _responses(op.status, body, created=op.status == "201")
    return operation


_HEALTH = {
    "operationId": "health",
    "summary": "Liveness; the only route without a token",
    "security": [],
    "responses": {
        "200": {
            "description": "serving",
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "ok"}},
                        "additionalProperties": False,
                    }
                }
            },
        },
        "403": {"$ref": "#/components/responses/Error403"},
    },
}


def _paths(defs: dict[str, Any], config: RuntimeConfig) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    maxima = _maxima(config)
    for op in _OPS:
        paths.setdefault(op.path, {})[op.method] = _operation(defs, op, maxima)
    paths["/v1/openapi.json"] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "responses": _responses("200", {"type": "object"}),
        }
    }
    paths["/healthz"] = {"get": _HEALTH}
    return paths


def build_openapi(config: RuntimeConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a runtime configured by ``config`` (its limits
    become the parameters' maxima)."""
    defs = _rewrite(schema_document()["$defs"])
    schemas = {**defs, "ErrorEnvelope": _envelope("error", "Error")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "worker-runtime",
            "version": __version__,
            "description": "Control-plane API of a worker runtime, for a trusted Backend. "
            "Browsers must go through the Backend: requests with an Origin header are refused.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"bearer": []}],
        "paths": _paths(defs, config),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {"RequestId": _header("the request id, also in the access log")},
            "responses": _error_responses(),
        },
    }
