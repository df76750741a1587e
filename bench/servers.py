"""A server child process for the benchmarks, on a kernel-chosen loopback port.

Its stderr goes to a log file (never a pipe that could fill up: the access log
writes a line per request), and its port is read from the "Serving on" line
that waitress writes there.
"""

from __future__ import annotations

import re
import subprocess
import time
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
