"""Start the real server (waitress, in a subprocess) on a free loopback port.

The server is asked for port 0 and reports the port it bound on stderr
("Serving on http://127.0.0.1:PORT"), so there is no race for a free port.
Every server gets a start-up deadline and is killed on exit.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TOKEN = "test-token-0123456789abcdef0123456789abcdef"
_SERVING = re.compile(rb"Serving on http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(kw_only=True)
class Server:
    """A running server process and a minimal HTTP client for it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str | None
    stderr: bytearray = field(default_factory=bytearray)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        token: str | None = "default",
        timeout: float = 30.0,
    ) -> Response:
        """Send one request; ``body`` is sent as JSON, ``raw`` as is."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            auth = self.token if token == "default" else token
            if auth is not None:
                sent.setdefault("Authorization", f"Bearer {auth}")
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                sent.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            return Response(
                status=resp.status,
                headers={k.lower(): v for k, v in resp.getheaders()},
                body=resp.read(),
            )
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash), and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def waitress_argv(app: str = "adapters.falcon_app:app", threads: int = 16) -> list[str]:
    exe = shutil.which("waitress-serve", path=os.path.dirname(sys.executable))
    base = (
        [exe]
        if exe
        else [
            sys.executable,
            "-c",
            "import sys; from waitress.runner import run; run(argv=sys.argv)",
        ]
    )
    return [*base, "--listen=127.0.0.1:0", f"--threads={threads}", app]


@contextmanager
def serve(
    env: Mapping[str, str] | None = None,
    *,
    argv: list[str] | None = None,
    token: str | None = TOKEN,
    startup_timeout: float = 30.0,
    cwd: str | None = None,
) -> Iterator[Server]:
    """Run the server until the block ends. ``argv`` defaults to ``waitress-serve
    --listen=127.0.0.1:0 adapters.falcon_app:app``; any argv must bind port 0 on
    127.0.0.1 so the bound port can be read from stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    if token is not None:
        full_env["WORKER_RUNTIME_TOKEN"] = token
    full_env.update(env or {})
    process = subprocess.Popen(
        argv or waitress_argv(),
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server: Server | None = None
    try:
        server = _await_start(process, token, startup_timeout)
        yield server
    finally:
        _terminate(process)


def start(env: Mapping[str, str] | None = None, **kwargs: Any) -> Server:
    """Like ``serve`` but without a context: the caller must ``kill()`` or ``stop()``."""
    cm = serve(env, **kwargs)
    server = cm.__enter__()
    server.__dict__["_cm"] = cm
    return server


def stop(server: Server) -> None:
    cm = server.__dict__.get("_cm")
    if cm is not None:
        cm.__exit__(None, None, None)


def _await_start(process: subprocess.Popen[bytes], token: str | None, timeout: float) -> Server:
    assert process.stderr is not None
    stream = process.stderr
    os.set_blocking(stream.fileno(), False)
    buffer = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            match = _SERVING.search(buffer)
            if match:
                server = Server(
                    process=process, port=int(match.group(1)), token=token, stderr=buffer
                )
                _drain_in_background(server)
                return server
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise RuntimeError(
                    "server did not start: " + buffer.decode("utf-8", "replace")[-2000:]
                )
            if selector.select(timeout=min(remaining, 0.5)):
                chunk = stream.read(65536)
                if chunk:
                    buffer.extend(chunk)


def _drain_in_background(server: Server) -> None:
    # Keep reading stderr so a chatty server never blocks on a full pipe.
    stream = server.process.stderr
    assert stream is not None
    os.set_blocking(stream.fileno(), True)

    def drain() -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            server.stderr.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    # stderr is left to the drain thread, which ends at EOF now that the process is gone.
