"""Helpers for the client's tests: both targets behind one opener, result
normalisation for comparing them, and a loopback HTTP proxy that can misbehave.

``open_target("in-process" | "remote")`` yields a :class:`RuntimeAPI`: an
embedded ``Runtime``, or a ``RemoteRuntime`` talking to a real waitress server
(subprocess, loopback) configured the same way. Tests written against the
yielded object run unchanged on both (see ``TARGETS``).
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker_runtime import Runtime, RuntimeAPI, RuntimeConfig
from worker_runtime.client import RemoteRuntime
from worker_runtime.domain import Event
from worker_runtime.testing import TERMINAL_EVENTS
from worker_runtime.wire import to_json

from .server import TOKEN, serve

TARGETS = ("in-process", "remote")

_GENERATED = re.compile(r"\b(run|w)-[0-9a-f]{16}\b")


@contextmanager
def open_target(
    kind: str, *, runtime_id: str = "rt-both", env: Mapping[str, str] | None = None
) -> Iterator[RuntimeAPI]:
    """A runtime of ``kind`` with ``runtime_id`` (memory store, echo engine);
    ``env`` holds ``WORKER_RUNTIME_*`` settings for both kinds."""
    settings = {"WORKER_RUNTIME_ID": runtime_id, **(env or {})}
    if kind == "in-process":
        with Runtime.open(RuntimeConfig.from_env(settings)) as rt:
            yield rt
    elif kind == "remote":
        with serve(settings) as server, RemoteRuntime(server.base_url, token=TOKEN) as remote:
            yield remote
    else:
        raise ValueError(kind)


def normalize(value: Any) -> Any:
    """``value``'s JSON with what differs between two equal runtimes blanked:
    times (``*_at``), generated ids, and the version-independent rest kept."""
    data = to_json(value)
    return _blank(data)


def _blank(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: "<time>" if k.endswith("_at") else _blank(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_blank(v) for v in data]
    if isinstance(data, str):
        return _GENERATED.sub(r"\1-*", data)
    return data


def run_end(api: RuntimeAPI, run_id: str, cursor: int, *, limit: int = 1000) -> Event:
    """The terminal event of ``run_id``, followed from ``cursor``."""
    for seen, event in enumerate(api.follow(cursor=cursor)):
        if event.run_id == run_id and event.type in TERMINAL_EVENTS:
            return event
        assert seen < limit, "the run never ended"
    raise AssertionError("follow ended")


# -- a misbehaving proxy -------------------------------------------------------------


@dataclass
class Rules:
    """What the proxy does to the next requests."""

    drop_after_forward: Callable[[str, str], bool] | None = None
    """Forward a matching request, then hang up instead of relaying the answer (once)."""
    unavailable: int = 0
    """Answer this many requests 503 without forwarding."""
    unavailable_body: bytes = b'{"error":{"code":"runtime_unavailable","message":"busy"}}'
    """The body of those 503s (the runtime's, by default; a load balancer's page, say)."""
    retry_after: str | None = "1"
    hang: Callable[[str, str], bool] | None = None
    """Read a matching request and never answer it (once), as a hung server would;
    its connection is dropped when the proxy closes."""
    canned: tuple[int, bytes] | None = None
    """Answer every request with this status and body, without forwarding."""
    canned_headers: dict[str, str] = field(default_factory=dict)
    refused_parameter: str | None = None
    """Refuse requests whose query has this parameter with 400 ``invalid_query``,
    as a server that does not know it would."""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """(method, path, headers) of every request the proxy received."""


class Proxy:
    """An HTTP/1.1 keep-alive proxy on loopback in front of ``upstream`` (a port,
    changeable while it runs); no upstream, or a dead one, is a hang-up."""

    def __init__(self, upstream: int | None = None) -> None:
        self.upstream = upstream
        self.rules = Rules()
        self._lock = threading.Lock()
        self._closing = threading.Event()  # releases the hung requests
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_DELETE = do_GET

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        with self._lock:
            rules = self.rules
            rules.seen.append((h.command, h.path, dict(h.headers.items())))
            drop = rules.drop_after_forward is not None and rules.drop_after_forward(
                h.command, h.path
            )
            if drop:
                rules.drop_after_forward = None
            unavailable = rules.unavailable > 0
            if unavailable:
                rules.unavailable -= 1
            hang = rules.hang is not None and rules.hang(h.command, h.path)
            if hang:
                rules.hang = None
        if hang:
            self._closing.wait(120)
            h.close_connection = True
            return
        if rules.refused_parameter is not None and rules.refused_parameter in parse_qs(
            urlsplit(h.path).query
        ):
            name = rules.refused_parameter
            body_400 = (
                '{"error":{"code":"invalid_query","message":"unknown parameter",'
                f'"details":{{"parameter":"{name}"}}}}}}'
            ).encode()
            self._answer(h, 400, body_400, {})
            return
        if rules.canned is not None:
            self._answer(h, *rules.canned, rules.canned_headers)
            return
        if unavailable:
            extra = {"Retry-After": rules.retry_after} if rules.retry_after else {}
            self._answer(h, 503, rules.unavailable_body, extra)
            return
        try:
            status, headers, data = self._forward(h, body)
        except OSError:
            h.close_connection = True  # the upstream is down: hang up
            return
        if drop:
            h.close_connection = True  # the work is done; the answer is lost
            return
        self._answer(h, status, data, headers)

    def _forward(
        self, h: http.server.BaseHTTPRequestHandler, body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.upstream is None:
            raise ConnectionRefusedError
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        try:
            skip = {"host", "connection", "content-length"}
            headers = {k: v for k, v in h.headers.items() if k.lower() not in skip}
            conn.request(h.command, h.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            keep = {"retry-after", "location", "x-request-id", "content-type"}
            return (
                response.status,
                {k: v for k, v in response.getheaders() if k.lower() in keep},
                data,
            )
        finally:
            conn.close()

    @staticmethod
    def _answer(
        h: http.server.BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        if "content-type" not in {k.lower() for k in headers}:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
