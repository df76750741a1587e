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
the response goes on reading from it.

Connecting is done by the engine's own thread, without blocking: the TCP
connect and the TLS handshake wait in short polls that look at the signal, so
a request abandoned while its connection is still being made (a SYN nobody
answers, a server that accepts and never speaks) returns at once instead of
holding the run's pool thread until the connect timeout. Only name resolution
(``getaddrinfo``, which has no cancel) cannot be abandoned; it is bounded by
the system resolver's own timeout.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import os
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import SplitResult

from .base import RunSignal

__all__ = ["Abandoned", "AbortableConnection", "SseError", "iter_sse_data"]

POLL_S = 0.02
"""How often the watcher looks at the signal (its wait also ends when the request does)."""
MAX_LINE = 1_048_576


class SseError(ValueError):
    """The event stream was malformed (a line longer than :data:`MAX_LINE`)."""


class Abandoned(ConnectionAbortedError):
    """The run's signal was set while the connection was being made."""


class _HTTPConnection(http.client.HTTPConnection):
    last_sock: socket.socket | None = None
    abort_signal: RunSignal

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        self.sock = self.last_sock = _open_socket(self, self.abort_signal)


class _HTTPSConnection(http.client.HTTPSConnection):
    last_sock: socket.socket | None = None
    abort_signal: RunSignal
    tls: ssl.SSLContext

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        raw = _open_socket(self, self.abort_signal)
        try:
            self.sock = _handshake(self, raw, self.abort_signal)
        except BaseException:
            raw.close()
            raise
        self.last_sock = self.sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """What ``http.client`` would use by default: verified, ALPN ``http/1.1``.
    Made once (loading the CA store is slow) and shared: contexts are thread-safe."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _open_socket(conn: http.client.HTTPConnection, signal: RunSignal) -> socket.socket:
    """A connected TCP socket to ``conn``'s host (each address in turn, as
    :func:`socket.create_connection`), abandoned as soon as ``signal`` is set."""
    timeout = _timeout(conn)
    deadline = time.monotonic() + timeout
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(
        conn.host, conn.port, 0, socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                _wait(sock, selectors.EVENT_WRITE, deadline, signal)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(timeout)
            with contextlib.suppress(OSError):  # not every platform has it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except Abandoned:
            sock.close()
            raise
        except OSError as exc:  # try the next address, as create_connection does
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
    raise error or OSError(f"no address found for {conn.host}")


def _handshake(conn: _HTTPSConnection, raw: socket.socket, signal: RunSignal) -> ssl.SSLSocket:
    """The TLS handshake over ``raw``, abandoned as soon as ``signal`` is set."""
    timeout = _timeout(conn)
    deadline = time.monotonic() + timeout
    sock = conn.tls.wrap_socket(raw, server_hostname=conn.host, do_handshake_on_connect=False)
    sock.setblocking(False)
    while True:
        try:
            sock.do_handshake()
            break
        except ssl.SSLWantReadError:
            _wait(sock, selectors.EVENT_READ, deadline, signal)
        except ssl.SSLWantWriteError:
            _wait(sock, selectors.EVENT_WRITE, deadline, signal)
    sock.settimeout(timeout)
    return sock


def _timeout(conn: http.client.HTTPConnection) -> float:
    timeout = conn.timeout
    return float(timeout) if isinstance(timeout, int | float) else 60.0


def _wait(sock: socket.socket, events: int, deadline: float, signal: RunSignal) -> None:
    """Wait until ``sock`` is ready for ``events``, polling ``signal``; ``Abandoned``
    once it is set, ``TimeoutError`` past ``deadline``."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, events)
        while True:
            if signal.is_set():
                raise Abandoned("the request was abandoned while connecting")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            if selector.select(min(POLL_S, remaining)):
                return


class AbortableConnection:
    """One HTTP(S) connection to ``url``'s host, shut down when ``signal`` is set.

    Use as a context manager; ``conn`` is the :class:`http.client.HTTPConnection`.
    ``tls`` replaces the default (system CAs, hostname checked) for ``https``.
    """

    def __init__(
        self,
        url: SplitResult,
        *,
        timeout: float,
        signal: RunSignal,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host = url.hostname or ""
        if url.scheme == "https":
            context = tls or _tls_context()
            self.conn: _HTTPConnection | _HTTPSConnection = _HTTPSConnection(
                host, url.port, timeout=timeout, context=context
            )
            self.conn.tls = context
        else:
            self.conn = _HTTPConnection(host, url.port, timeout=timeout)
        self.conn.abort_signal = signal
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
