"""The OpenAPI 3.1 document, assembled from the route table and the core's JSON Schemas.

Component schemas are the ``$defs`` of ``worker_runtime.wire.schema_document()``
(the schemas the dispatcher validates with), with ``#/$defs/X`` references
rewritten to ``#/components/schemas/X``: one source of truth. The operations
are the rows of ``worker_runtime.routes``, the same rows ``create_app`` mounts:
parameters and bodies come from the command schemas, tightened to the bounds
the runtime really enforces (its configured limits, the adapter's integer
range); responses are the exact envelopes the resources send, and for errors
only the statuses and codes that operation can answer.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from worker_runtime import __version__
from worker_runtime.commands import COMMANDS
from worker_runtime.config import RuntimeConfig
from worker_runtime.routes import ROUTES, QueryKind, Route
from worker_runtime.wire import schema_document

from .errors import status_of_code
from .parsing import MAX_QUERY_INTEGER

__all__ = ["build_openapi", "error_codes"]

_REF = "#/components/schemas/"
_JSON = "application/json"

# What each code means, for the response descriptions.
_MEANING = {
    "invalid_json": "the body is not JSON text",
    "invalid_request": "a field breaks the schema (details.field points at it)",
    "invalid_worker_id": "the worker id is not a valid id",
    "invalid_query": "a query parameter is unknown, repeated, malformed or refused",
    "limit_too_large": "limit is above the runtime's maximum",
    "unauthorized": "no valid bearer token",
    "browser_origin_forbidden": "the request carries an Origin header",
    "worker_not_found": "no such worker",
    "not_found": "no such route (a worker id with a '/' names another path)",
    "worker_busy": "the worker is running another input (details.queue_full: its queue is full)",
    "run_not_found": "the worker has no such run",
    "worker_not_stopped": "only a stopped worker can be deleted",
    "cursor_ahead": "the cursor is past the log's end (details.next_event_id): reset to it",
    "worker_exists": "a worker with this id exists",
    "worker_stopped": "the worker is stopped",
    "idempotency_key_reused": "this Idempotency-Key came with another request",
    "payload_too_large": "the body is larger than the configured maximum",
    "unsupported_media_type": "the body is not application/json",
    "unknown_profile": "the profile names none the runtime has",
    "unsupported_capability": "the profile does not offer a requested capability",
    "runtime_unavailable": "the runtime is stopping or its store failed; retry later",
    "store_corrupt": "a record or log cannot be trusted; an operator must look",
    "operation_timeout": "the runtime's state stayed busy past the operation deadline",
}

# Every operation behind the token: the guard's refusals, a query parameter
# it does not take, and the runtime's own unavailability and deadline.
_EVERY_COMMAND = (
    "unauthorized",
    "browser_origin_forbidden",
    "invalid_query",
    "payload_too_large",
    "runtime_unavailable",
    "store_corrupt",
    "operation_timeout",
)
_PATH_ID = ("invalid_worker_id", "worker_not_found", "not_found")
_BODY = ("invalid_json", "invalid_request", "unsupported_media_type")
_IDEMPOTENT = ("invalid_request", "idempotency_key_reused")


def error_codes(route: Route) -> dict[int, list[str]]:
    """The error codes ``route`` can answer, by HTTP status: those of its shape
    (token, path id, body, idempotency key) and its command's own refusals."""
    codes = list(_EVERY_COMMAND)
    if route.path_params:
        codes += _PATH_ID
    if route.body:
        codes += _BODY
    if route.idempotent_key:
        codes += _IDEMPOTENT
    codes += route.refusals
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(status_of_code(code), []).append(code)
    return dict(sorted(by_status.items()))


def _rewrite(node: Any) -> Any:
    """Point ``#/$defs/X`` references (and discriminator mappings) at
    ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {k: _rewrite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):
        return _REF + node.removeprefix("#/$defs/")
    return node


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is never JSON null: drop the null branch of a nullable schema."""
    branches = schema.get("anyOf")
    if branches:
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            return {**{k: v for k, v in schema.items() if k != "anyOf"}, **kept[0]}
    return schema


def _resolved(defs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow references (and drop null branches) down to a concrete schema;
    annotations beside a reference are kept."""
    schema = _non_null(schema)
    while "$ref" in schema:
        target = defs[schema["$ref"].removeprefix(_REF)]
        schema = {**_non_null(target), **{k: v for k, v in schema.items() if k != "$ref"}}
    return copy.deepcopy(schema)


def _bound(schema: dict[str, Any], limit: float) -> None:
    """Tighten ``schema`` to the runtime's configured ``limit``."""
    if schema.get("type") == "string":
        schema["maxLength"] = min(int(limit), schema.get("maxLength", int(limit)))
    else:
        schema["maximum"] = min(limit, schema.get("maximum", limit))


def _query(defs: dict[str, Any], route: Route, config: RuntimeConfig) -> list[dict[str, Any]]:
    properties = defs[route.command].get("properties", {})
    parameters = []
    for name, kind in route.query.items():
        schema = _resolved(defs, properties[name])
        description = schema.pop("description", None)
        if kind is QueryKind.INTEGER:
            # The adapter takes a signed 64-bit integer; the core bounds it further.
            schema.setdefault("maximum", MAX_QUERY_INTEGER)
            schema.setdefault("format", "int64")
        if name in route.bounds:
            _bound(schema, getattr(config, route.bounds[name]))
        parameter = {"name": name, "in": "query", "required": False, "schema": schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _body(defs: dict[str, Any], route: Route, config: RuntimeConfig) -> dict[str, Any]:
    schema = copy.deepcopy(defs[route.command])
    # The path's ids are not in the body; the body carries the rest of the args.
    for name in route.path_params:
        schema["properties"].pop(name, None)
    required = [r for r in schema.get("required", []) if r not in route.path_params]
    schema.pop("required", None)
    if required:
        schema["required"] = required
    for name, field in route.bounds.items():
        if name in schema["properties"]:
            bounded = _resolved(defs, schema["properties"][name])
            _bound(bounded, getattr(config, field))
            schema["properties"][name] = bounded
    return {"required": route.body_required, "content": {_JSON: {"schema": schema}}}


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


_REQUEST_ID = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}


def _error_response(defs: dict[str, Any], status: int, codes: list[str]) -> dict[str, Any]:
    headers: dict[str, Any] = dict(_REQUEST_ID)
    if status == 401:
        headers["WWW-Authenticate"] = _header("always 'Bearer'", {"const": "Bearer"})
    if status == 503:
        headers["Retry-After"] = _header(
            "whole seconds to wait before retrying", {"type": "string", "pattern": "^[0-9]+$"}
        )
    error = copy.deepcopy(defs["Error"])
    error["properties"]["code"] = {"enum": codes}
    return {
        "description": "; ".join(f"{code}: {_MEANING.get(code, code)}" for code in codes),
        "headers": headers,
        "content": {
            _JSON: {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": error},
                    "additionalProperties": False,
                }
            }
        },
    }


def _errors(defs: dict[str, Any], by_status: Mapping[int, list[str]]) -> dict[str, Any]:
    responses = {}
    for status, codes in by_status.items():
        responses[str(status)] = _error_response(defs, status, codes)
    return responses


def _result_name(command: str) -> str:
    """The result schema of ``command``: the ``R`` of its ``Command[R]`` base."""
    for base in getattr(COMMANDS[command], "__orig_bases__", ()):
        args = typing.get_args(base)
        if args:
            return str(args[0].__name__)
    raise LookupError(f"command {command} declares no result type")


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


def _operation(defs: dict[str, Any], route: Route, config: RuntimeConfig) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _ref("Id")}
        for name in route.path_params
    ]
    parameters += _query(defs, route, config)
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.idempotent_key:
        parameters.append(_IDEMPOTENCY_KEY)
    if route.body:
        operation["requestBody"] = _body(defs, route, config)
    if parameters:
        operation["parameters"] = parameters
    headers: dict[str, Any] = dict(_REQUEST_ID)
    if route.location is not None:
        headers["Location"] = _header(f"the created resource's path, {route.location}")
    if route.long_poll:
        # SPEC section 7: with every waiter slot held, a wait is answered at once.
        headers["Retry-After"] = _header(
            "'1' when every waiter slot was held: the wait was answered at once with "
            "what is there; poll again after that many seconds",
            {"type": "string", "pattern": "^[0-9]+$"},
        )
    success = {
        "description": route.summary,
        "headers": headers,
        "content": {_JSON: {"schema": _envelope(route.envelope, _result_name(route.command))}},
    }
    operation["responses"] = {str(route.status): success, **_errors(defs, error_codes(route))}
    return operation


def _plain_get(
    defs: dict[str, Any], operation_id: str, summary: str, body: dict[str, Any], codes: list[str]
) -> dict[str, Any]:
    """An operation outside the route table (no command behind it)."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(status_of_code(code), []).append(code)
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            "200": {
                "description": summary,
                "headers": dict(_REQUEST_ID),
                "content": {_JSON: {"schema": body}},
            },
            **_errors(defs, by_status),
        },
    }


_HEALTH_BODY = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
    "additionalProperties": False,
}


_READY_BODY = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ready"}},
    "additionalProperties": False,
}

_NOT_READY_BODY = {
    "type": "object",
    "required": ["status", "runtime_id"],
    "properties": {
        "status": {"enum": ["stopping", "unavailable"]},
        "runtime_id": _ref("Id"),
    },
    "additionalProperties": False,
}


def _paths(defs: dict[str, Any], routes: Iterable[Route], config: RuntimeConfig) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(defs, route, config)
    guarded = ["unauthorized", "browser_origin_forbidden", "payload_too_large"]
    paths["/v1/openapi.json"] = {
        "get": _plain_get(defs, "getOpenApi", "This document", {"type": "object"}, guarded)
    }
    health = _plain_get(
        defs,
        "health",
        "Liveness; the only route without a token",
        _HEALTH_BODY,
        ["browser_origin_forbidden", "payload_too_large"],
    )
    paths["/healthz"] = {"get": {**health, "security": []}}
    ready = _plain_get(
        defs,
        "ready",
        "Readiness: 200 while the runtime accepts commands; no token",
        _READY_BODY,
        ["browser_origin_forbidden", "payload_too_large"],
    )
    ready["responses"]["503"] = {
        "description": "stopping, or unavailable after a store write failure",
        "headers": {
            **_REQUEST_ID,
            "Retry-After": _header("seconds to wait", {"type": "string", "pattern": "^[0-9]+$"}),
        },
        "content": {_JSON: {"schema": _NOT_READY_BODY}},
    }
    paths["/readyz"] = {"get": {**ready, "security": []}}
    metrics = _plain_get(defs, "metrics", "Prometheus metrics (text exposition)", {}, guarded)
    metrics["responses"]["200"]["content"] = {
        "text/plain": {"schema": {"type": "string"}},
    }
    paths["/metrics"] = {"get": metrics}
    return paths


def build_openapi(config: RuntimeConfig, routes: Iterable[Route] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (by default the runtime's route
    table) on a runtime configured by ``config`` (its limits become the bounds)."""
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
        "paths": _paths(defs, routes, config),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {"RequestId": _header("the request id, also in the access log")},
        },
    }
