"""Keep-alive HTTP connections to one server, shared by threads, with retries.

A :class:`Transport` lends each request an idle connection from a small pool
(or opens one) and takes it back once the answer has been read, so threads
never share a connection and a busy client reuses its sockets. A connection
failure, a 503 or a proxy's 502 is retried with backoff (a ``Retry-After``
wins), and a request on a reused connection that the server had already
closed is re-sent at once on a fresh one. Re-sending is safe: reads have no
effect and every request that changes state carries an ``Idempotency-Key``.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError, OperationTimeout
from .codec import ClientClosed, RuntimeUnreachable, retry_after

__all__ = ["Answer", "Transport"]

MAX_IDLE = 8
"""Idle connections kept for reuse; more threads than this open their own."""
RETRIED_STATUSES = frozenset({502, 503})
"""The runtime's 503, and a proxy's 502 (it could not reach the runtime: a
connection failure one hop further)."""

# OSError covers refused, reset, unreachable, unknown host and timeouts;
# HTTPException a connection closed before or during the answer.
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes


class Transport:
    """Requests to ``base_url`` over pooled keep-alive connections. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        retries: int,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{base_url!r} is not an http:// or https:// URL")
        if retries < 0:
            raise ConfigError("retries must be 0 or more")
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._auth = f"Bearer {token}"
        self._retries = retries
        self._pause = pause
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request, retrying connection failures, 503s and 502s; return
        the last answer (a 503 too, once the retries are spent)."""
        sent = {"Authorization": self._auth, "Accept": "application/json", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                answer = self._send(method, self._prefix + target, body, sent, timeout)
            except _CONNECTION_ERRORS as exc:
                if attempt >= self._retries:
                    raise self._failure(exc, attempt) from None
            else:
                if answer.status not in RETRIED_STATUSES or attempt >= self._retries:
                    return answer
                wait = retry_after(answer.headers)
                if wait is not None:
                    self._pause(wait)
                    attempt += 1
                    continue
            self._pause(_backoff(attempt))
            attempt += 1

    def _failure(self, exc: BaseException, attempts: int) -> Exception:
        details = {"url": self.base_url, "attempts": attempts + 1, "reason": type(exc).__name__}
        if isinstance(exc, TimeoutError):
            return OperationTimeout(f"{self.base_url} did not answer in time", details=details)
        return RuntimeUnreachable(f"cannot reach {self.base_url}: {exc}", details=details)

    def _send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> Answer:
        conn, reused = self._take(timeout)
        try:
            try:
                return self._exchange(conn, method, target, body, headers)
            except _CONNECTION_ERRORS as exc:
                if not reused or isinstance(exc, TimeoutError):
                    raise
                # The server closed this idle connection (keep-alive timeout,
                # restart) before we sent: once more at once on a fresh one.
                conn.close()
                conn = self._connect(timeout)
                return self._exchange(conn, method, target, body, headers)
        except BaseException:
            conn.close()
            raise
        finally:
            if conn.sock is not None:
                self._give_back(conn)

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Answer:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        answer = Answer(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=data,
        )
        if response.will_close:
            conn.close()
        return answer

    def _take(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed", details={"url": self.base_url})
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            return self._connect(timeout), False
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their answer is read."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _backoff(attempt: int) -> float:
    """Exponential with jitter: ~0.1 s, 0.2 s, 0.4 s ... at most 2 s."""
    return min(0.1 * 2.0**attempt, 2.0) * random.uniform(0.5, 1.0)
