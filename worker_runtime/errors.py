"""Typed errors raised by the runtime, each with a stable ``code``.

The hierarchy::

    WorkerRuntimeError                      internal_error
    ├── InvalidRequest (ValueError)         invalid_request
    │   ├── InvalidWorkerId                 invalid_worker_id
    │   ├── InvalidQuery                    invalid_query
    │   ├── LimitTooLarge                   limit_too_large
    │   ├── InvalidJson                     invalid_json              *
    │   ├── PayloadTooLarge                 payload_too_large         *
    │   └── UnsupportedMediaType            unsupported_media_type    *
    ├── Unauthorized                        unauthorized              *
    ├── BrowserOriginForbidden              browser_origin_forbidden  *
    ├── MethodNotAllowed                    method_not_allowed        *
    ├── NotFound (LookupError)              not_found
    │   ├── WorkerNotFound                  worker_not_found
    │   └── RunNotFound                     run_not_found
    ├── Conflict
    │   ├── WorkerExists                    worker_exists
    │   ├── WorkerBusy                      worker_busy
    │   ├── WorkerStopped                   worker_stopped
    │   ├── WorkerNotStopped                worker_not_stopped
    │   ├── CursorAhead                     cursor_ahead
    │   └── IdempotencyKeyReused            idempotency_key_reused
    ├── Unprocessable
    │   ├── UnknownProfile                  unknown_profile
    │   ├── UnsupportedCapability           unsupported_capability
    │   └── UnsupportedOperation            unsupported_operation
    ├── RuntimeUnavailable                  runtime_unavailable
    │   └── StoreCorrupt                    store_corrupt
    ├── OperationTimeout (TimeoutError)     operation_timeout
    ├── ConfigError (ValueError)            invalid_config
    └── InternalError                       internal_error

``*``: answered by the HTTP adapter only (a request the runtime never saw); the
classes exist so that a remote caller (``worker_runtime.client``) can catch them.

Codes are part of the API and never change. Mapping them to transport status
codes (HTTP or otherwise) is the adapter's job; the core knows no transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "BrowserOriginForbidden",
    "ConfigError",
    "Conflict",
    "CursorAhead",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidJson",
    "InvalidQuery",
    "InvalidRequest",
    "InvalidWorkerId",
    "LimitTooLarge",
    "MethodNotAllowed",
    "NotFound",
    "OperationTimeout",
    "PayloadTooLarge",
    "RunNotFound",
    "RuntimeUnavailable",
    "StoreCorrupt",
    "Unauthorized",
    "UnknownProfile",
    "Unprocessable",
    "UnsupportedCapability",
    "UnsupportedMediaType",
    "UnsupportedOperation",
    "WorkerBusy",
    "WorkerExists",
    "WorkerNotFound",
    "WorkerNotStopped",
    "WorkerRuntimeError",
    "WorkerStopped",
]


class WorkerRuntimeError(Exception):
    """Base of every error the runtime raises on purpose.

    ``details`` is a small JSON-safe mapping that points at what went wrong
    (a field, a worker id, a limit). It never carries secrets.
    """

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"code", "message", "details"?}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(WorkerRuntimeError, ValueError):
    code = "invalid_request"


class InvalidWorkerId(InvalidRequest):
    code = "invalid_worker_id"


class InvalidQuery(InvalidRequest):
    code = "invalid_query"


class LimitTooLarge(InvalidRequest):
    code = "limit_too_large"


class InvalidJson(InvalidRequest):
    """The request body is not JSON (HTTP only)."""

    code = "invalid_json"


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the server takes (HTTP only;
    ``details.maximum`` is its limit in bytes)."""

    code = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A request body that is not ``application/json`` (HTTP only)."""

    code = "unsupported_media_type"


class Unauthorized(WorkerRuntimeError):
    """No or a wrong bearer token (HTTP only)."""

    code = "unauthorized"


class BrowserOriginForbidden(WorkerRuntimeError):
    """A request with an ``Origin`` header: browsers may not call the runtime (HTTP only)."""

    code = "browser_origin_forbidden"


class MethodNotAllowed(WorkerRuntimeError):
    """The route does not serve that HTTP method (HTTP only)."""

    code = "method_not_allowed"


class NotFound(WorkerRuntimeError, LookupError):
    """The thing named does not exist (a worker, a run)."""

    code = "not_found"


class WorkerNotFound(NotFound):
    code = "worker_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class Conflict(WorkerRuntimeError):
    code = "conflict"


class WorkerExists(Conflict):
    code = "worker_exists"


class WorkerBusy(Conflict):
    code = "worker_busy"


class WorkerStopped(Conflict):
    code = "worker_stopped"


class WorkerNotStopped(Conflict):
    """Only a stopped worker can be deleted."""

    code = "worker_not_stopped"


class CursorAhead(Conflict):
    """The event cursor is past the log's end (the log was reset, e.g. a memory
    store restarted): ``details.next_event_id`` is where to resume."""

    code = "cursor_ahead"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class Unprocessable(WorkerRuntimeError):
    code = "unprocessable"


class UnknownProfile(Unprocessable):
    code = "unknown_profile"


class UnsupportedCapability(Unprocessable):
    code = "unsupported_capability"


class UnsupportedOperation(Unprocessable):
    code = "unsupported_operation"


class RuntimeUnavailable(WorkerRuntimeError):
    """The runtime cannot serve now (stopping, or its store failed); retry later."""

    code = "runtime_unavailable"


class StoreCorrupt(RuntimeUnavailable):
    """A stored record could not be read back; ``details`` names the file."""

    code = "store_corrupt"


class OperationTimeout(WorkerRuntimeError, TimeoutError):
    code = "operation_timeout"


class ConfigError(WorkerRuntimeError, ValueError):
    """Bad configuration found at start-up; the message names the source."""

    code = "invalid_config"


class InternalError(WorkerRuntimeError):
    code = "internal_error"
