"""Middleware: every per-request step in one pass, in the order that matters.

:class:`FrontDoor` is the app's only middleware, with two hooks, so a request
pays two middleware calls in all. On the way in it gives the request an id
(so that even a refused request gets an ``X-Request-Id`` and an access
line), refuses browsers (any ``Origin`` header, before auth: a browser is
refused whatever it presents, and learns nothing about the token), checks
the bearer token on every route but ``/healthz`` and ``/readyz``, refuses an
oversize body by its ``Content-Length`` before anything reads it, and answers
``OPTIONS`` and unknown methods on a route with 405. On the way out it
reports the request to the metrics and writes one access record.

Headers are read straight from the WSGI environ: the hot path does the
fewest lookups Falcon allows.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable

import falcon
from falcon.routing import CompiledRouter

from .errors import ApiError
from .logs import UNMATCHED_ROUTE

__all__ = ["OPEN_PATHS", "FrontDoor", "RequestObserver"]

access_log = logging.getLogger("adapters.access")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ACCESS_FORMAT = "%s %s %d %.1fms %s"
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
_METHODS = frozenset(falcon.COMBINED_METHODS) - {"OPTIONS"}
"""Methods a route may serve; any other (OPTIONS, BREW) on a route is 405."""


RequestObserver = Callable[[str, str, int, float], None]
"""``(route template or "unmatched", method, status, seconds)`` for every answered request."""


class FrontDoor:
    """The app's one middleware (see the module docstring for its steps).

    Every request gets an id (a sane incoming ``X-Request-Id`` is kept), is
    reported to ``observe`` (the metrics) and gets one access record: method,
    path, status, duration, request id; the record also carries them as
    attributes (``method``, ``route``, ``status``, ``duration_ms``,
    ``request_id``) for the JSON format. Never the query string, headers or
    bodies, so never the token.

    ``router`` (the app's) names the route template of a request refused before
    routing (a 401 or 403), so metrics and access lines never see a raw path
    (a path no route serves is ``unmatched``), and finds the resource whose
    methods a 405 lists.
    """

    def __init__(
        self,
        token: str,
        max_body_bytes: int,
        observe: RequestObserver | None = None,
        router: CompiledRouter | None = None,
    ) -> None:
        self._token = token.encode("ascii")
        self._header = b"Bearer " + self._token  # the usual spelling, compared whole
        self._max_body_bytes = max_body_bytes
        # A random prefix per app and a counter: unique, and cheaper than
        # drawing random bytes on every request.
        self._prefix = secrets.token_hex(4) + "-"
        self._counter = itertools.count(1)
        self._observe = observe
        self._router = router
        # An access record's fixed attributes, made once (see _access_record).
        self._record_template = access_log.makeRecord(
            access_log.name, logging.INFO, __file__, 0, _ACCESS_FORMAT, (), None
        ).__dict__.copy()

    # -- in -----------------------------------------------------------------------

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        env = req.env
        incoming = env.get("HTTP_X_REQUEST_ID")
        if incoming is not None and _REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = f"{self._prefix}{next(self._counter):x}"
        context = req.context
        context.request_id = request_id
        context.started = time.perf_counter()
        resp.set_header("X-Request-Id", request_id)
        if "HTTP_ORIGIN" in env:
            raise ApiError(
                403,
                "browser_origin_forbidden",
                "browsers may not call the runtime; go through the Backend",
            )
        if not self._authorized(env.get("HTTP_AUTHORIZATION")) and req.path not in OPEN_PATHS:
            raise ApiError(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                headers=_UNAUTHORIZED_HEADERS,
            )
        if env.get("CONTENT_LENGTH"):
            length = req.content_length
            if length is not None and length > self._max_body_bytes:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"the request body is larger than {self._max_body_bytes} bytes",
                    details={"maximum": self._max_body_bytes},
                )
        if req.method not in _METHODS:
            self._refuse_method(req)

    def _refuse_method(self, req: falcon.Request) -> None:
        # OPTIONS (no CORS preflight here) and unknown methods get the same 405
        # as any other method a route does not serve (an unknown path stays 404).
        found = self._router.find(req.path) if self._router is not None else None
        if found is not None:
            resource = found[0]
            allowed = [m for m in falcon.COMBINED_METHODS if hasattr(resource, f"on_{m.lower()}")]
            raise falcon.HTTPMethodNotAllowed(sorted(allowed))

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        # Compare bytes: hmac.compare_digest raises on non-ASCII str, and a
        # header such as "Bearer café" must be a 401, not a 500.
        if hmac.compare_digest(header.encode("utf-8", "replace"), self._header):
            return True
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        presented = credentials.strip().encode("utf-8", "replace")
        return hmac.compare_digest(presented, self._token)

    # -- out ----------------------------------------------------------------------

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - req.context.started
        status = resp.status_code
        route = self._route(req)
        if self._observe is not None:
            self._observe(route, req.method, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.handle(self._access_record(req, status, elapsed, route))

    def _access_record(
        self, req: falcon.Request, status: int, elapsed: float, route: str
    ) -> logging.LogRecord:
        """The record ``Logger.info`` would make, minus its per-call lookups (the
        caller's frame, the file name split, the process name): the fixed
        attributes are copied from a template, the rest set here."""
        elapsed_ms = round(elapsed * 1000, 1)
        method = _printable(req.method, 16)
        request_id = req.context.request_id
        record = logging.LogRecord.__new__(logging.LogRecord)
        fields = record.__dict__
        fields.update(self._record_template)
        now = time.time()
        fields["created"] = now
        fields["msecs"] = int((now - int(now)) * 1000) + 0.0
        fields["relativeCreated"] = (now - _START) * 1000
        fields["thread"] = threading.get_ident()
        fields["threadName"] = threading.current_thread().name
        fields["process"] = os.getpid()
        fields["args"] = (method, _printable(req.path), status, elapsed_ms, request_id)
        fields["method"] = method
        fields["route"] = route
        fields["status"] = status
        fields["duration_ms"] = elapsed_ms
        fields["request_id"] = request_id
        return record

    def _route(self, req: falcon.Request) -> str:
        template = req.uri_template
        if template is None and self._router is not None:
            found = self._router.find(req.path)
            template = found[3] if found else None
        return template or UNMATCHED_ROUTE


_START = getattr(logging, "_startTime", time.time())
"""When logging was imported: ``relativeCreated`` counts from it, as LogRecord's does."""


def _printable(text: str, limit: int = 200) -> str:
    # Paths are percent-decoded: escape control characters so a request cannot
    # forge log lines.
    text = text[:limit]
    return text if text.isprintable() else ascii(text)[1:-1]
