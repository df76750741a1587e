"""HTTP for engines: a request that a run's abort signal can abandon at once,
and a reader for server-sent events (``text/event-stream``).

``http.client`` blocks its thread in socket reads. To abandon a request, a small
watcher thread (one per request, joined when the request ends) waits for the
run's signal and then shuts the socket down; the blocked read returns at once
and the engine, seeing the signal, returns. ``shutdown`` rather than ``close``
because closing a socket another thread is reading is a race; it is called on
the plain :class:`socket.socket` so that a TLS socket is not torn apart under
its reader either. The socket is remembered at connect, because ``http.client``
drops its own reference once a ``Connection: close`` response starts, while
the response goes on reading from it. A request still connecting is abandoned
once connected (or when the connect times out).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import SplitResult

from .base import RunSignal

__all__ = ["AbortableConnection", "SseError", "iter_sse_data"]

POLL_S = 0.02
"""How often the watcher looks at the signal (its wait also ends when the request does)."""
MAX_LINE = 1_048_576


class SseError(ValueError):
    """The event stream was malformed (a line longer than :data:`MAX_LINE`)."""


class _HTTPConnection(http.client.HTTPConnection):
    last_sock: socket.socket | None = None

    def connect(self) -> None:
        super().connect()
        self.last_sock = self.sock


class _HTTPSConnection(http.client.HTTPSConnection):
    last_sock: socket.socket | None = None

    def connect(self) -> None:
        super().connect()
        self.last_sock = self.sock


class AbortableConnection:
    """One HTTP(S) connection to ``url``'s host, shut down when ``signal`` is set.

    Use as a context manager; ``conn`` is the :class:`http.client.HTTPConnection`.
    """

    def __init__(self, url: SplitResult, *, timeout: float, signal: RunSignal) -> None:
        host = url.hostname or ""
        conn_type = _HTTPSConnection if url.scheme == "https" else _HTTPConnection
        self.conn: _HTTPConnection | _HTTPSConnection = conn_type(host, url.port, timeout=timeout)
        self._signal = signal
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="wr-http-abort", daemon=True)

    def __enter__(self) -> http.client.HTTPConnection:
        self._watcher.start()
        return self.conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._watcher.join()
        self.conn.close()

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            if self._signal.is_set() and self._shut_down():
                return

    def _shut_down(self) -> bool:
        """Shut the socket down; False while there is none yet (still connecting)."""
        sock = self.conn.last_sock
        if sock is None:
            return False
        # An OSError means the peer closed it already: the reader is unblocked either way.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        return True


def iter_sse_data(response: http.client.HTTPResponse) -> Iterator[str]:
    """The ``data`` of each server-sent event, in order (multi-line data joined
    with newlines; comments and other fields ignored). Ends at end of stream."""
    data: list[str] = []
    while True:
        raw = response.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise SseError("an event-stream line is too long")
        if not raw:
            break
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
