"""SPEC section 9's signal rule under both serving commands, with real processes.

A ``command`` run whose shell ignores SIGTERM and has a grandchild is active, a
long-poll is held; on SIGTERM or SIGINT new commands get 503, the wait is
answered, the run's processes are gone, the store is flushed and the server
exits within the cancel grace + 2 s. The run's final status, read after a
restart, is ``interrupted`` (a shutdown, not a cancel). And no access line is
lost at that exit, even with stderr unread and the log queue full of lines.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .support.http_helpers import cli_argv
from .support.server import TOKEN, Response, Server, serve, waitress_argv

CANCEL_GRACE_S = 2.0
SERVING = re.compile(rb"Serving on http://127\.0\.0\.1:(\d+)")
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Linux: the pipe's capacity


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _env(tmp_path: Path) -> dict[str, str]:
    pids = tmp_path / "pids"
    # The shell ignores SIGTERM (so does its child, by inheritance): only SIGKILL ends them.
    script = (
        f"trap '' TERM; sleep 60 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait; sleep 60"
    )
    profiles = {
        "profiles": {
            "stubborn": {"engine": "command", "argv": ["sh", "-c", script], "term_grace_s": 1.0}
        }
    }
    (tmp_path / "profiles.json").write_text(json.dumps(profiles))
    return {
        "WORKER_RUNTIME_PROFILES": str(tmp_path / "profiles.json"),
        "WORKER_RUNTIME_STORE": "fs",
        "WORKER_RUNTIME_DATA_DIR": str(tmp_path / "data"),
        "WORKER_RUNTIME_ID": "rt-sig",
        "WORKER_RUNTIME_CANCEL_GRACE_S": str(CANCEL_GRACE_S),
    }


def _start_stubborn_run(server: Server, tmp_path: Path) -> tuple[str, list[int]]:
    profile = {"kind": "named", "value": "stubborn"}
    created = server.request("POST", "/v1/workers", {"worker_id": "w", "profile": profile})
    assert created.status == 201, created.body
    ack = server.request("POST", "/v1/workers/w/input", {"content": "go"})
    assert ack.status == 202, ack.body
    pids_file = tmp_path / "pids"
    _wait_for(pids_file.exists)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(_alive(pid) for pid in pids)
    return str(ack.json()["ack"]["run_id"]), pids


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["waitress-serve", "worker-runtime serve"])
def test_signal_stops_everything_within_the_grace(
    tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    env = _env(tmp_path)
    argv = waitress_argv() if command == "waitress-serve" else cli_argv()
    with serve(env, argv=argv) as server:
        run_id, pids = _start_stubborn_run(server, tmp_path)
        # A wait on a worker nothing happens to (a cursor far ahead is now
        # refused as cursor_ahead): only the shutdown can answer it.
        assert server.request("POST", "/v1/workers", {"worker_id": "quiet"}).status == 201
        ahead = server.request("GET", "/v1/runtime").json()["runtime"]["last_event_id"] + 1
        polled: list[Response] = []
        poll = threading.Thread(
            target=lambda: polled.append(
                server.request("GET", f"/v1/events?cursor={ahead}&worker_id=quiet&wait=30")
            )
        )
        poll.start()
        _wait_for(lambda: server.request("GET", "/v1/runtime").json()["runtime"]["waiters"] == 1)

        started = time.monotonic()
        server.process.send_signal(signum)
        ready = _wait_for(lambda: server.request("GET", "/readyz").status == 503 or None)
        assert ready
        refused = server.request("POST", "/v1/workers", {"worker_id": "late"})
        assert refused.status == 503, refused.body
        assert refused.json()["error"]["code"] == "runtime_unavailable"
        poll.join(10)
        assert polled and polled[0].status == 200  # answered, before the server stopped
        code = server.process.wait(timeout=CANCEL_GRACE_S + 10)
        took = time.monotonic() - started
        print(f"{command} {signum.name}: exited {code} after {took:.2f}s")
        assert code == 0
        assert took <= CANCEL_GRACE_S + 2
        assert not [pid for pid in pids if _alive(pid)], "a run process survived"

    # The store was flushed: a restart finds the worker and the run's final status.
    with serve(env, argv=cli_argv()) as again:
        run = again.request("GET", f"/v1/workers/w/runs/{run_id}")
        assert run.status == 200
        status = run.json()["run"]["status"]
        print(f"run ended {status}")
        assert status == "interrupted"


def test_waitress_serve_refuses_a_generated_token_off_loopback(tmp_path: Path) -> None:
    argv = [*waitress_argv()[:-1], "--listen=0.0.0.0:0", "adapters.falcon_app:app"]
    argv = [a for a in argv if a != "--listen=127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30, cwd=tmp_path)
    assert done.returncode != 0
    assert b"not a loopback address" in done.stderr
    assert b"Serving on" not in done.stderr
    assert b"Traceback" not in done.stderr


class Traffic(threading.Thread):
    """Requests one after another, each with its own ``X-Request-Id``, until the
    server is gone; keeps the ids of those answered.

    A stopped server keeps its socket open (waitress does not close it) while
    the process writes its last lines: a request then goes unanswered, and after
    ``TIMEOUT_S`` the thread takes the server for gone."""

    TIMEOUT_S = 3.0

    LIMIT = 20000  # a bound, should the server never stop

    def __init__(self, server: Server, name: str) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix = server, name
        self.answered: list[tuple[str, int]] = []

    def run(self) -> None:
        for n in range(self.LIMIT):
            request_id = f"{self.prefix}-{n}"
            try:
                got = self.server.request(
                    "GET",
                    "/v1/runtime",
                    headers={"X-Request-Id": request_id},
                    timeout=self.TIMEOUT_S,
                )
            except (OSError, http.client.HTTPException):  # refused, reset, unanswered
                return
            assert got.headers["x-request-id"] == request_id
            self.answered.append((request_id, got.status))


@contextmanager
def _server_with_unread_stderr(env: dict[str, str], argv: list[str]) -> Iterator[Server]:
    """The server with its stderr read only up to "Serving on": from then on the
    pipe fills and the log writer blocks, until the caller reads the rest
    (``process.communicate``). Killed on exit, if still running."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    full_env.update({"WORKER_RUNTIME_TOKEN": TOKEN, **env})
    process = subprocess.Popen(
        argv,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        head = bytearray()
        deadline = time.monotonic() + 30
        while (found := SERVING.search(head)) is None:
            assert process.poll() is None and time.monotonic() < deadline, head.decode()[-2000:]
            if select.select([process.stderr], [], [], 0.5)[0]:
                head.extend(os.read(process.stderr.fileno(), 65536))
        yield Server(process=process, port=int(found[1]), token=TOKEN, stderr=head)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)


@pytest.mark.parametrize("command", ["waitress-serve", "worker-runtime serve"])
def test_json_logs_parse_and_lose_no_line_at_shutdown(tmp_path: Path, command: str) -> None:
    """SIGTERM while four threads send requests, a long-poll is held and a
    stubborn run keeps the shutdown going for its grace, with stderr unread:
    requests are still answered (the access log is written off the request
    thread), lines queue up, and at exit every request answered, before or
    during the shutdown (the 503s, the wait the shutdown answers), has its
    access line, and every line parses."""
    env = {
        **_env(tmp_path),
        "WORKER_RUNTIME_LOG_FORMAT": "json",
        "WORKER_RUNTIME_STOR": "fs",
        "WORKER_RUNTIME_URL": "http://127.0.0.1:8780",  # the client's: no warning
    }
    argv = waitress_argv() if command == "waitress-serve" else cli_argv("--log-level=info")
    with _server_with_unread_stderr(env, argv) as server:
        assert server.process.stderr is not None
        pipe_bytes = fcntl.fcntl(server.process.stderr.fileno(), F_GETPIPE_SZ)
        for i in range(20):
            assert server.request("POST", "/v1/workers", {"worker_id": f"w{i}"}).status == 201
        _start_stubborn_run(server, tmp_path)  # worker "w": the 21st create
        ahead = server.request("GET", "/v1/runtime").json()["runtime"]["last_event_id"] + 1
        polled: list[Response] = []
        poll = threading.Thread(
            target=lambda: polled.append(
                server.request(
                    "GET",
                    f"/v1/events?cursor={ahead}&worker_id=w0&wait=30",
                    headers={"X-Request-Id": "held-wait"},
                )
            )
        )
        poll.start()
        _wait_for(lambda: server.request("GET", "/v1/runtime").json()["runtime"]["waiters"] == 1)
        traffic = [Traffic(server, f"t{k}") for k in range(4)]
        for thread in traffic:
            thread.start()
        # Access lines (well over 100 bytes each) for twice what the pipe holds:
        # the rest waits in the log queue when the signal comes.
        _wait_for(lambda: sum(len(t.answered) for t in traffic) > 2 * pipe_bytes // 100, 60)
        server.process.send_signal(signal.SIGTERM)
        poll.join(CANCEL_GRACE_S + 10)
        for thread in traffic:
            thread.join(CANCEL_GRACE_S + 15)  # they end once the server stops answering
        assert not any(t.is_alive() for t in traffic)
        # Only now is stderr read: the lines still queued must be written at exit.
        _out, rest = server.process.communicate(timeout=CANCEL_GRACE_S + 15)
        assert server.process.returncode == 0
        text = (bytes(server.stderr) + rest).decode()
        assert polled and polled[0].status == 200  # answered by the shutdown
        answered = ["held-wait", *(request_id for t in traffic for request_id, _ in t.answered)]
        statuses = [status for t in traffic for _, status in t.answered]
        print(f"{command}: {len(answered)} answered, {statuses.count(503)} of them 503")
        assert set(statuses) <= {200, 503}
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"level", "logger", "message", "timestamp"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "adapters.access"]
    assert [line["route"] for line in access].count("/v1/workers") == 21
    logged = {line["request_id"] for line in access}
    missing = [request_id for request_id in answered if request_id not in logged]
    assert not missing, f"{len(missing)} answered requests have no access line: {missing[:5]}"
    assert any("did you mean WORKER_RUNTIME_STORE?" in line["message"] for line in lines)
    assert not any("WORKER_RUNTIME_URL" in line["message"] for line in lines)
    assert TOKEN not in text
    assert any("SIGTERM" in line["message"] for line in lines)
