"""Serve a runtime the test built on a real waitress server, in this process.

``served(rt)`` wraps ``rt`` (its fake engines, manual clock and store still the
test's to drive) in ``adapters.app.create_app``, serves it on a free loopback
port from a thread, and yields a :class:`RemoteRuntime` talking to it. So a test
written against a ``RuntimeAPI`` runs on both targets while it keeps its hands
on the in-process engines: ``on_target(kind, rt)`` yields ``rt`` itself or such
a client (``TARGETS`` lists the kinds).

The server's event loop runs on its own thread until the block ends; stopping
wakes it through waitress's trigger, waits for it to end, then closes every
socket (never while the loop runs: it is not thread-safe) and waits for the
request threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from adapters.app import create_app
from adapters.settings import HttpSettings
from worker_runtime import Runtime, RuntimeAPI
from worker_runtime.client import RemoteRuntime

from .server import TOKEN

__all__ = ["TARGETS", "Served", "on_target", "served", "serving"]

TARGETS = ("in-process", "remote")

THREADS = 12
"""Request threads: a test may hold a few long polls and still be answered."""
_LOOP_TIMEOUT_S = 1.0
"""How long one turn of the event loop may wait; a stop pulls the trigger anyway."""


class Served:
    """A waitress server for one runtime, on a thread of this process."""

    def __init__(
        self, runtime: Runtime, *, threads: int = THREADS, settings: HttpSettings | None = None
    ) -> None:
        self.runtime = runtime
        self._server: Any = create_server(
            create_app(runtime, token=TOKEN, settings=settings),
            host="127.0.0.1",
            port=0,
            threads=threads,
            # Quiet: a client that hangs up mid-answer is part of some tests.
            expose_tracebacks=False,
            log_socket_errors=False,
        )
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="served", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                wasyncore.loop(
                    timeout=_LOOP_TIMEOUT_S, map=self._server._map, use_poll=True, count=1
                )
        except BaseException as exc:
            self._failure = exc  # raised by close(): a dead loop must fail the test
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection, wait for the request threads."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._server.pull_trigger()  # wakes the loop; only this thread closes the trigger
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the served event loop did not stop"
        wasyncore.close_all(self._server._map)
        self._server.task_dispatcher.shutdown(timeout=timeout)
        if self._failure is not None:
            raise AssertionError("the served event loop failed") from self._failure

    def client(self, **kwargs: Any) -> RemoteRuntime:
        """A client of this server. No retries by default: a 503 is the answer
        under test, not something to wait out."""
        kwargs.setdefault("retries", 0)
        return RemoteRuntime(self.base_url, token=TOKEN, **kwargs)


@contextmanager
def serving(runtime: Runtime, *, settings: HttpSettings | None = None) -> Iterator[Served]:
    """``runtime`` served on loopback until the block ends (``settings`` are the
    adapter's). The runtime stays the caller's to close."""
    server = Served(runtime, settings=settings)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def served(
    runtime: Runtime, *, settings: HttpSettings | None = None, **client: Any
) -> Iterator[RemoteRuntime]:
    """A :class:`RemoteRuntime` (``client`` are its keyword arguments) of ``runtime``
    served on loopback until the block ends."""
    with serving(runtime, settings=settings) as server, server.client(**client) as remote:
        yield remote


@contextmanager
def on_target(kind: str, runtime: Runtime, **client: Any) -> Iterator[RuntimeAPI]:
    """``runtime`` itself (``in-process``), or a client of it served on loopback
    (``remote``)."""
    if kind == "in-process":
        yield runtime
    elif kind == "remote":
        with served(runtime, **client) as remote:
            yield remote
    else:
        raise ValueError(kind)
