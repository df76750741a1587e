"""SIGTERM and SIGINT: stop the way SPEC section 9 says, under any waitress command.

On the first signal the runtime is closed on a helper thread while the server
keeps answering: new commands get 503 (the runtime is ``stopping``), held
long-polls are answered at once, active runs end and their processes are
killed, the store is flushed. Then the same signal is sent again to this
process, and this time the handler raises ``SystemExit`` in the main thread:
waitress's loop catches it, stops its threads and returns from ``serve``.
Further signals while closing are ignored (the close is bounded by the cancel
grace). Both ``worker-runtime serve`` and ``waitress-serve`` use this.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from worker_runtime import Runtime

__all__ = ["GracefulStop"]

log = logging.getLogger("adapters.signals")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """The signal handlers that close ``runtime`` before the server stops."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._closing = False
        self._closed = threading.Event()

    def install(self) -> bool:
        """Handle SIGTERM and SIGINT; False (nothing done) off the main thread,
        where Python cannot install handlers."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            signal.signal(signum, self._handle)
        return True

    @property
    def closed(self) -> bool:
        """True once the runtime has been closed by a signal."""
        return self._closed.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._closed.is_set():
            raise SystemExit(0)  # the runtime is closed: now stop the server
        with self._lock:
            if self._closing:
                return
            self._closing = True
        log.info("%s: stopping runtime %s", signal.Signals(signum).name, self._runtime.runtime_id)
        # Not daemon: the interpreter must not exit halfway through the close.
        threading.Thread(
            target=self._close, args=(signum,), name="worker-runtime-stop", daemon=False
        ).start()

    def _close(self, signum: int) -> None:
        try:
            self._runtime.close()
        except Exception:  # a failed flush must still let the server stop
            log.exception("closing runtime %s failed", self._runtime.runtime_id)
        finally:
            self._closed.set()
            # Wake the main thread (blocked in waitress's select) into the handler.
            os.kill(os.getpid(), signum)
