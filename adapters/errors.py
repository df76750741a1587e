"""Error codes to HTTP statuses, and the handlers that answer every error as JSON.

Every error response is ``{"error": {"code", "message", "details"?}}``. Three
kinds of exception reach the handlers:

* :class:`ApiError`, raised by the adapter itself (auth, body, query);
* :class:`~worker_runtime.errors.WorkerRuntimeError`, raised by the core; its
  class picks the status, its ``code`` goes on the wire unchanged;
* ``falcon.HTTPError`` (unknown route, wrong method, bad header), re-coded.

Anything else is a bug: 500 ``internal_error``, logged with the request id and
the traceback, and never a traceback in the body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import falcon

from worker_runtime import errors as core

__all__ = ["ApiError", "error_body", "register_error_handlers", "status_for", "status_of_code"]

log = logging.getLogger("adapters.errors")

RETRY_AFTER_S = "1"

# Most specific first: the first class the error is an instance of wins.
_STATUS_BY_CLASS: tuple[tuple[type[core.WorkerRuntimeError], int], ...] = (
    (core.PayloadTooLarge, 413),
    (core.UnsupportedMediaType, 415),
    (core.InvalidRequest, 400),
    (core.Unauthorized, 401),
    (core.BrowserOriginForbidden, 403),
    (core.NotFound, 404),
    (core.MethodNotAllowed, 405),
    (core.Conflict, 409),
    (core.Unprocessable, 422),
    (core.RuntimeUnavailable, 503),
    (core.OperationTimeout, 504),
)

# falcon's own errors, by status, re-coded with our stable codes.
_CODE_BY_FALCON_STATUS = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    411: "invalid_request",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "invalid_request",
}


class ApiError(Exception):
    """An error the adapter raises itself, with its status and stable code (each
    code has its class in ``worker_runtime.errors`` too, so a remote caller can
    catch it; :func:`status_of_code` gives the status that class maps to)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def status_for(error: core.WorkerRuntimeError) -> int:
    """The HTTP status for a core error (500 for anything unexpected)."""
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(error, cls):
            return status
    return 500


def _core_classes(
    cls: type[core.WorkerRuntimeError],
) -> Iterator[type[core.WorkerRuntimeError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _core_classes(sub)


def _class_status(cls: type[core.WorkerRuntimeError]) -> int:
    for base, status in _STATUS_BY_CLASS:
        if issubclass(cls, base):
            return status
    return 500


def status_of_code(code: str) -> int:
    """The HTTP status an error ``code`` is answered with (500 for a code no
    error class has)."""
    for cls in _core_classes(core.WorkerRuntimeError):
        if cls.code == code:
            return _class_status(cls)
    return 500


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The error envelope."""
    inner: dict[str, Any] = {"code": code, "message": message}
    if details:
        inner["details"] = dict(details)
    return {"error": inner}


def _answer(
    resp: falcon.Response, status: int, body: dict[str, Any], retry_after: Any = None
) -> None:
    resp.status = status
    resp.media = body
    if status == 503:
        resp.set_header("Retry-After", _seconds(retry_after))


def _seconds(value: Any) -> str:
    """Retry-After in whole seconds: the core's hint if it gave a sane one, else 1."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 3600:
        return str(math.ceil(value))
    return RETRY_AFTER_S


def handle_api_error(
    req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict[str, Any]
) -> None:
    _answer(resp, ex.status, error_body(ex.code, ex.message, ex.details))
    for name, value in ex.headers.items():
        resp.set_header(name, value)


def handle_runtime_error(
    req: falcon.Request, resp: falcon.Response, ex: core.WorkerRuntimeError, params: dict[str, Any]
) -> None:
    status = status_for(ex)
    if status == 500:
        log.error("request %s failed: %s", req.context.get("request_id"), ex.code, exc_info=ex)
        _answer(resp, 500, error_body("internal_error", "internal error; see the server log"))
        return
    _answer(resp, status, {"error": ex.to_json()}, ex.details.get("retry_after_s"))


def handle_http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = ex.status_code
    code = _CODE_BY_FALCON_STATUS.get(
        status, "invalid_request" if status < 500 else "internal_error"
    )
    _answer(resp, status, error_body(code, _falcon_message(req, ex, code)))
    for name, value in dict(ex.headers or {}).items():
        if name.lower() == "allow":
            # OPTIONS is answered with 405 too (no CORS, no preflight), so never offer it.
            value = ", ".join(m for m in value.split(", ") if m != "OPTIONS")
        resp.set_header(name, value)


def _falcon_message(req: falcon.Request, ex: falcon.HTTPError, code: str) -> str:
    if code == "not_found":
        return "no such route"
    if code == "method_not_allowed":
        return f"this route does not serve {req.method[:20]!r}"
    return str(ex.description or ex.title or code)[:300]


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.error("request %s failed with a bug", req.context.get("request_id"), exc_info=ex)
    _answer(resp, 500, error_body("internal_error", "internal error; see the server log"))


def register_error_handlers(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Answer every error with the JSON envelope (falcon picks the most specific handler)."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(core.WorkerRuntimeError, handle_runtime_error)
    app.add_error_handler(ApiError, handle_api_error)
