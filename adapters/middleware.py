"""Middleware: request ids and the access log, the browser and token guard, body limits.

Order matters and is fixed in ``create_app``: :class:`RequestLog` runs first
so that even a refused request gets an ``X-Request-Id`` and an access line;
then :class:`Guard` refuses browsers (any ``Origin`` header, before auth: a
browser is refused whatever it presents, and learns nothing about the token),
then checks the bearer token on every route but ``/healthz`` and ``/readyz``,
then refuses an oversize body by its ``Content-Length`` before anything reads it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import falcon
from falcon.routing import CompiledRouter

from .errors import ApiError

__all__ = ["OPEN_PATHS", "Guard", "RequestLog"]

access_log = logging.getLogger("adapters.access")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ACCESS_FORMAT = "%s %s %d %.1fms %s"
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


RequestObserver = Callable[[str | None, str, int, float], None]
"""``(route template or None, method, status, seconds)`` for every answered request."""


class RequestLog:
    """Give every request an id (a sane incoming ``X-Request-Id`` is kept), report
    it to ``observe`` (the metrics) and log one access line per request: method,
    path, status, duration, request id; the record also carries them as
    attributes (``method``, ``route``, ``status``, ``duration_ms``,
    ``request_id``) for the JSON format. Never the query string, headers or
    bodies, so never the token.

    ``router`` (the app's) names the route template of a request refused before
    routing (a 401 or 403), so metrics never see a raw path.
    """

    def __init__(
        self, observe: RequestObserver | None = None, router: CompiledRouter | None = None
    ) -> None:
        # A random prefix per app and a counter: unique, and cheaper than
        # drawing random bytes on every request.
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._observe = observe
        self._router = router

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
        elapsed = time.perf_counter() - req.context.started
        if self._observe is not None:
            self._observe(self._route(req), req.method, resp.status_code, elapsed)
        if not access_log.isEnabledFor(logging.INFO):
            return
        elapsed_ms = round(elapsed * 1000, 1)
        method = _printable(req.method, 16)
        args = (method, _printable(req.path), resp.status_code, elapsed_ms, req.context.request_id)
        # makeRecord + handle is what Logger.info does, minus the stack walk
        # that finds the caller: the same record and handlers, on every request.
        record = access_log.makeRecord(
            access_log.name,
            logging.INFO,
            __file__,
            0,
            _ACCESS_FORMAT,
            args,
            None,
            extra={
                "method": method,
                "route": self._route(req),
                "status": resp.status_code,
                "duration_ms": elapsed_ms,
                "request_id": req.context.request_id,
            },
        )
        access_log.handle(record)

    def _route(self, req: falcon.Request) -> str | None:
        template = req.uri_template
        if template is None and self._router is not None:
            found = self._router.find(req.path)
            template = found[3] if found else None
        return template


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
