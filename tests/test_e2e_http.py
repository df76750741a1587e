"""End to end: ``waitress-serve adapters.falcon_app:app`` as a real subprocess on a free
loopback port, spoken to over HTTP: the whole lifecycle, each error code, auth on every
route, the logs, and a generated token."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.http_helpers import ROUTES, SPEC_CODES, cli_argv
from .support.server import TOKEN, Server, serve

SLOW = {"profile": {"kind": "named", "value": "slow"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    profiles = tmp_path_factory.mktemp("profiles") / "profiles.json"
    profiles.write_text(
        json.dumps(
            {"profiles": {"slow": {"engine": "command", "argv": ["sh", "-c", "sleep 30; cat"]}}}
        )
    )
    env = {
        "WORKER_RUNTIME_ID": "rt-e2e",
        "WORKER_RUNTIME_PROFILES": str(profiles),
        "WORKER_RUNTIME_MAX_BODY_BYTES": "4096",
    }
    with serve(env) as running:
        yield running


def follow(server: Server, run_id: str, until: set[str]) -> dict[str, Any]:
    """Follow the event log with long-polls until ``run_id`` emits one of ``until``."""
    cursor = 0
    for _ in range(20):
        page = server.request("GET", f"/v1/events?cursor={cursor}&wait=5").json()
        for event in page["events"]:
            if event.get("run_id") == run_id and event["type"] in until:
                return dict(event)
        cursor = page["cursor"]["next_event_id"]
    raise AssertionError(f"run {run_id} never reached {until}")


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert code in SPEC_CODES[status]
    assert response.headers["x-request-id"]


def test_the_whole_lifecycle(server: Server) -> None:
    lifecycle(server)
    assert server.request("GET", "/v1/runtime").json()["runtime"]["runtime_id"] == "rt-e2e"


def test_the_whole_lifecycle_on_worker_runtime_serve() -> None:
    with serve(argv=cli_argv("--runtime-id=rt-cli-e2e")) as running:
        lifecycle(running)
        summary = running.request("GET", "/v1/runtime").json()["runtime"]
        assert summary["runtime_id"] == "rt-cli-e2e"


def lifecycle(server: Server) -> None:
    """Create, input, follow events to the run's end, read the transcript, stop."""
    assert server.request("GET", "/healthz", token=None).json() == {"status": "ok"}
    created = server.request("POST", "/v1/workers", {"worker_id": "scout", "display_name": "S"})
    assert (created.status, created.headers["location"]) == (201, "/v1/workers/scout")
    sent = server.request("POST", "/v1/workers/scout/input", {"content": "hello"})
    assert sent.status == 202
    run_id = sent.json()["ack"]["run_id"]
    assert follow(server, run_id, {"run_completed", "run_failed"})["type"] == "run_completed"
    page = server.request("GET", "/v1/workers/scout/transcript?start=0&limit=10").json()
    assert [(i["role"], i["content"]) for i in page["transcript"]["items"]] == [
        ("user", "hello"),
        ("assistant", "hello"),
    ]
    worker = server.request("GET", "/v1/workers/scout").json()["worker"]
    assert (worker["status"], worker["last_run"]["status"]) == ("idle", "completed")
    stopped = server.request("POST", "/v1/workers/scout/stop", raw=b"")
    assert stopped.json()["ack"]["status"] == "stopped"
    listed = server.request("GET", "/v1/workers?status=stopped").json()["workers"]
    assert "scout" in [w["worker_id"] for w in listed]
    assert server.request("GET", "/v1/diagnostics").json()["diagnostics"]


def test_busy_worker_and_cancel(server: Server) -> None:
    server.request("POST", "/v1/workers", {"worker_id": "sleeper", **SLOW})
    run_id = server.request("POST", "/v1/workers/sleeper/input", {"content": "z"}).json()["ack"][
        "run_id"
    ]
    assert_error(
        server.request("POST", "/v1/workers/sleeper/input", {"content": "z"}), 409, "worker_busy"
    )
    cancel = server.request("POST", "/v1/workers/sleeper/cancel", {"run_id": run_id})
    assert cancel.json()["ack"]["cancelled_run_id"] == run_id
    assert follow(server, run_id, {"run_cancelled"})["type"] == "run_cancelled"


def test_idempotent_retry_over_http(server: Server) -> None:
    key = {"Idempotency-Key": "e2e-create"}
    first = server.request("POST", "/v1/workers", {"display_name": "once"}, headers=key)
    again = server.request("POST", "/v1/workers", {"display_name": "once"}, headers=key)
    assert (again.status, again.json()) == (first.status, first.json()) == (201, first.json())
    other = server.request("POST", "/v1/workers", {"display_name": "twice"}, headers=key)
    assert_error(other, 409, "idempotency_key_reused")


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
BROWSER = {"Origin": "https://x.org"}
NO_PROFILE = {"profile": {"kind": "named", "value": "x"}}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/v1/workers", {"raw": b"{nope", "headers": JSON}, 400, "invalid_json"),
        ("POST", "/v1/workers", {"body": {"colour": "red"}}, 400, "invalid_request"),
        ("GET", "/v1/workers/-x-", {}, 400, "invalid_worker_id"),
        ("GET", "/v1/events?wait=forever", {}, 400, "invalid_query"),
        ("GET", "/v1/events?limit=100000", {}, 400, "limit_too_large"),
        ("GET", "/v1/runtime", {"token": "wrong-token-0123456789"}, 401, "unauthorized"),
        ("GET", "/v1/runtime", {"headers": BROWSER}, 403, "browser_origin_forbidden"),
        ("GET", "/v1/workers/ghost", {}, 404, "worker_not_found"),
        ("GET", "/v1/nothing", {}, 404, "not_found"),
        ("DELETE", "/v1/workers", {}, 405, "method_not_allowed"),
        ("POST", "/v1/workers", {"raw": b"x" * 5000, "headers": JSON}, 413, "payload_too_large"),
        ("POST", "/v1/workers", {"raw": b"{}", "headers": TEXT}, 415, "unsupported_media_type"),
        ("POST", "/v1/workers", {"body": NO_PROFILE}, 422, "unknown_profile"),
    ],
)  # fmt: skip
def test_each_error_code_over_http(
    server: Server, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    assert_error(server.request(method, path, **kwargs), status, code)


def test_conflicts_over_http(server: Server) -> None:
    server.request("POST", "/v1/workers", {"worker_id": "dup"})
    assert_error(server.request("POST", "/v1/workers", {"worker_id": "dup"}), 409, "worker_exists")
    server.request("POST", "/v1/workers/dup/stop")
    late = server.request("POST", "/v1/workers/dup/input", {"content": "x"})
    assert_error(late, 409, "worker_stopped")


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_auth_on_every_route(server: Server, method: str, template: str) -> None:
    path = template.replace("{worker_id}", "anyone")
    for token in (None, "", "wrong-token-0123456789", TOKEN + "x"):
        assert_error(server.request(method, path, token=token), 401, "unauthorized")
    refused = server.request(method, path, token=None, headers={"Authorization": "Bearer café"})
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"] == "Bearer"
    assert server.request(method, path).status not in (401, 403)


def test_non_ascii_authorization_bytes_are_401(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", "/v1/runtime")
        conn.putheader("Authorization", "Bearer caf\u00e9".encode())
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 401
        assert json.loads(response.read())["error"]["code"] == "unauthorized"
    finally:
        conn.close()


def wait_for_log(server: Server, text: str, timeout: float = 10.0) -> str:
    """The server's stderr once it contains ``text`` (it is read by a background thread)."""
    deadline = time.monotonic() + timeout
    while True:
        log = bytes(server.stderr).decode("utf-8", "replace")
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never logged")
        server.request("GET", "/healthz", token=None)  # a round trip, instead of a sleep


def test_logs_carry_requests_but_never_the_token(server: Server) -> None:
    response = server.request("GET", "/v1/runtime?limit=secret-query")
    request_id = response.headers["x-request-id"]
    log = wait_for_log(server, request_id)
    (line,) = [x for x in log.splitlines() if request_id in x]
    assert "GET /v1/runtime 400 " in line
    assert TOKEN not in log
    assert "secret-query" not in log


def test_openapi_is_served(server: Server) -> None:
    document = server.request("GET", "/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/workers/{worker_id}/input" in document["paths"]


def test_generated_token_is_shown_once_and_works() -> None:
    with serve(token=None) as running:
        log = bytes(running.stderr).decode()
        line = next(x for x in log.splitlines() if "generated API token" in x)
        token = line.rsplit(" ", 1)[-1]
        assert len(token) >= 43
        assert running.request("GET", "/v1/runtime", token=token).status == 200
        assert running.request("GET", "/v1/runtime", token=None).status == 401
        running.request("GET", "/v1/runtime", token=token)
        assert bytes(running.stderr).decode().count(token) == 1


def test_generated_token_file_with_the_fs_store(tmp_path: Path) -> None:
    env = {
        "WORKER_RUNTIME_STORE": "fs",
        "WORKER_RUNTIME_DATA_DIR": str(tmp_path),
        "WORKER_RUNTIME_ID": "rt-fs",
    }
    with serve(env, token=None) as running:
        token = (tmp_path / "runtimes" / "rt-fs" / "http-token").read_text().strip()
        assert (tmp_path / "runtimes" / "rt-fs" / "http-token").stat().st_mode & 0o777 == 0o600
        assert running.request("GET", "/v1/runtime", token=token).status == 200


def test_bad_configuration_stops_start_up_with_one_line() -> None:
    with pytest.raises(RuntimeError) as failed, serve({"WORKER_RUNTIME_STORE": "bogus"}):
        pass
    message = str(failed.value)
    assert "WORKER_RUNTIME_STORE" in message
    assert "Traceback" not in message
