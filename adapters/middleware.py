"""Middleware: request ids and the access log, the browser and token guard, body limits.

Order matters and is fixed in ``create_app``: :class:`RequestLog` runs first
so that even a refused request gets an ``X-Request-Id`` and an access line;
then :class:`Guard` refuses browsers (any ``Origin`` header, before auth: a
browser is refused whatever it presents, and learns nothing about the token),
then checks the bearer token on every route but ``/healthz``, then refuses an
oversize body by its ``Content-Length`` before anything reads it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import secrets
import time
from typing import Any

import falcon

from .errors import ApiError

__all__ = ["OPEN_PATHS", "Guard", "RequestLog"]

access_log = logging.getLogger("adapters.access")

OPEN_PATHS = frozenset({"/healthz"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ACCESS_FORMAT = "%s %s %d %.1fms %s"
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


class RequestLog:
    """Give every request an id (a sane incoming ``X-Request-Id`` is kept) and log
    one access line per request: method, path, status, duration, request id.
    Never the query string, headers or bodies, so never the token."""

    def __init__(self) -> None:
        # A random prefix per app and a counter: unique, and cheaper than
        # drawing random bytes on every request.
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        incoming = req.get_header("X-Request-Id")
        if incoming is not None and _REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = f"{self._prefix}-{next(self._counter):x}"
        req.context.request_id = request_id
        req.context.started = time.perf_counter()
        resp.set_header("X-Request-Id", request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        elapsed_ms = (time.perf_counter() - req.context.started) * 1000
        args = (
            _printable(req.method),
            _printable(req.path),
            resp.status_code,
            elapsed_ms,
            req.context.request_id,
        )
        # makeRecord + handle is what Logger.info does, minus the stack walk
        # that finds the caller: the same record and handlers, on every request.
        record = access_log.makeRecord(
            access_log.name, logging.INFO, __file__, 0, _ACCESS_FORMAT, args, None
        )
        access_log.handle(record)


def _printable(text: str, limit: int = 200) -> str:
    # Paths are percent-decoded: escape control characters so a request cannot
    # forge log lines.
    text = text[:limit]
    return text if text.isprintable() else ascii(text)[1:-1]


class Guard:
    """Refuse browsers, check the bearer token, and refuse oversize bodies."""

    def __init__(self, token: str, max_body_bytes: int) -> None:
        self._token = token.encode("ascii")
        self._max_body_bytes = max_body_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.get_header("Origin") is not None:
            raise ApiError(
                403,
                "browser_origin_forbidden",
                "browsers may not call the runtime; go through the Backend",
            )
        if req.path not in OPEN_PATHS and not self._authorized(req.get_header("Authorization")):
            raise ApiError(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                headers=_UNAUTHORIZED_HEADERS,
            )
        length = req.content_length
        if length is not None and length > self._max_body_bytes:
            raise ApiError(
                413,
                "payload_too_large",
                f"the request body is larger than {self._max_body_bytes} bytes",
                details={"maximum": self._max_body_bytes},
            )

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        # OPTIONS (no CORS preflight here) and unknown methods get the same 405
        # as any other method the route does not serve.
        if resource is not None and (
            req.method == "OPTIONS" or req.method not in falcon.COMBINED_METHODS
        ):
            allowed = [m for m in falcon.COMBINED_METHODS if hasattr(resource, f"on_{m.lower()}")]
            raise falcon.HTTPMethodNotAllowed(sorted(allowed))

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Compare bytes: hmac.compare_digest raises on non-ASCII str, and a
        # header such as "Bearer café" must be a 401, not a 500.
        presented = credentials.strip().encode("utf-8", "replace")
        return hmac.compare_digest(presented, self._token)
