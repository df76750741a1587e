"""SPEC section 9's signal rule under both serving commands, with real processes.

A ``command`` run whose shell ignores SIGTERM and has a grandchild is active, a
long-poll is held; on SIGTERM or SIGINT new commands get 503, the wait is
answered, the run's processes are gone, the store is flushed and the server
exits within the cancel grace + 2 s. The run's final status, read after a
restart, is ``interrupted`` (a shutdown, not a cancel).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .support.http_helpers import cli_argv
from .support.server import Response, Server, serve, waitress_argv

CANCEL_GRACE_S = 2.0


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


@pytest.mark.parametrize("command", ["waitress-serve", "worker-runtime serve"])
def test_json_logs_parse_and_lose_no_line_at_shutdown(command: str) -> None:
    env = {"WORKER_RUNTIME_LOG_FORMAT": "json", "WORKER_RUNTIME_STOR": "fs"}
    argv = waitress_argv() if command == "waitress-serve" else cli_argv("--log-level=info")
    with serve(env, argv=argv) as server:
        for i in range(20):
            assert server.request("POST", "/v1/workers", {"worker_id": f"w{i}"}).status == 201
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
        # The drain thread reads stderr to EOF now that the process is gone; the
        # last line written before exit tells the whole output is in.
        last = "closed" if command == "worker-runtime serve" else "SIGTERM"
        text = _wait_for(lambda: last in server.stderr.decode() and server.stderr.decode())
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"level", "logger", "message", "timestamp"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "adapters.access"]
    assert [line["route"] for line in access].count("/v1/workers") == 20
    assert any("did you mean WORKER_RUNTIME_STORE?" in line["message"] for line in lines)
    assert "test-token" not in text
    assert any("SIGTERM" in line["message"] for line in lines)
