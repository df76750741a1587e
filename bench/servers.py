"""Server child processes for the benchmarks, and a Python keep-alive load client.

A server's stderr goes to a log file (never a pipe that could fill up: the
access log writes a line per request), and its port is read from the "Serving
on" line that waitress writes there. ``python_load`` is the fallback load when
``wrk`` is not installed.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_SERVING = re.compile(r"Serving on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    """Run ``argv`` (a waitress server listening on 127.0.0.1:0) until ``stop``."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        *,
        cwd: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.port = self._await_port(timeout)

    def _await_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _SERVING.search(self.log.read_text("utf-8", "replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start: " + self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _hammer(
    port: int, request: tuple[str, str, bytes | None, int], token: str, seconds: float
) -> int:
    # One keep-alive connection, as many requests as fit in ``seconds``.
    method, path, body, expected = request
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != expected:
            raise RuntimeError(f"the benchmark saw status {response.status}")
        count += 1
    conn.close()
    return count


def python_load(
    port: int,
    request: tuple[str, str, bytes | None, int],
    token: str,
    seconds: float,
    connections: int,
) -> float:
    """Requests/s of ``(method, path, body, expected status)`` from ``connections``
    client processes (processes, so the client does not share the server's GIL)."""
    with ProcessPoolExecutor(max_workers=connections) as pool:
        futures = [pool.submit(_hammer, port, request, token, seconds) for _ in range(connections)]
        return sum(f.result() for f in futures) / seconds
