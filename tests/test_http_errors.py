"""Errors over HTTP: the envelope for every failure, auth, browsers, bodies, request ids,
the access log, and statuses for core failures (409 replays, 503, 504, 500)."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from falcon import testing

from worker_runtime import Runtime, RuntimeConfig, commands, errors
from worker_runtime.testing import state_lock_held_elsewhere

from .support.http_helpers import AUTH, ROUTES, TOKEN, client, error_code, hold_runtime
from .support.server import serve


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = hold_runtime()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def c(rt: Runtime) -> testing.TestClient:
    return client(rt, max_body_bytes=4096)


def path_of(template: str) -> str:
    return template.replace("{worker_id}", "w1")


# -- routing errors --------------------------------------------------------------


def test_unknown_route_is_404_not_found(c: testing.TestClient) -> None:
    result = c.simulate_get("/v2/nothing", headers=AUTH)
    assert (result.status_code, error_code(result)) == (404, "not_found")


def test_unknown_route_without_token_is_401(c: testing.TestClient) -> None:
    # Auth comes before routing: the route table is not disclosed to strangers.
    assert c.simulate_get("/v2/nothing").status_code == 401


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"])
def test_wrong_method_is_405_with_allow(c: testing.TestClient, method: str) -> None:
    result = c.simulate_request(method, "/v1/workers", headers=AUTH)
    assert result.status_code == 405
    assert result.headers["Allow"] == "GET, POST"
    if method != "HEAD":
        assert error_code(result) == "method_not_allowed"


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_nonstandard_method_is_405(c: testing.TestClient) -> None:
    result = c.simulate_request("BREW", "/v1/runtime", headers=AUTH)
    assert (result.status_code, error_code(result)) == (405, "method_not_allowed")


# -- bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b'{"a": NaN}', b"[" * 5000, b"1" * 5000])
def test_malformed_json_is_invalid_json(c: testing.TestClient, raw: bytes) -> None:
    result = c.simulate_post(
        "/v1/workers", body=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert result.status_code in (400, 413)
    assert error_code(result) in ("invalid_json", "payload_too_large")


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\uDFFF", b"x\\udbff"])
def test_a_lone_surrogate_is_invalid_json(c: testing.TestClient, escape: bytes) -> None:
    body = b'{"display_name": "' + escape + b'"}'
    result = c.simulate_post(
        "/v1/workers", body=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (result.status_code, error_code(result)) == (400, "invalid_json")


def test_a_surrogate_pair_is_fine(c: testing.TestClient) -> None:
    body = b'{"display_name": "\\ud83d\\ude00"}'
    result = c.simulate_post(
        "/v1/workers", body=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert result.status_code == 201
    assert result.json["worker"]["display_name"] == "\U0001f600"


def test_a_lone_surrogate_stored_in_process_is_still_readable(rt: Runtime) -> None:
    rt.dispatch(commands.CreateWorker(worker_id="odd", display_name="x\ud800"))
    result = client(rt).simulate_get("/v1/workers/odd", headers=AUTH)
    assert result.status_code == 200
    assert result.json["worker"]["display_name"] == "x\ud800"


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_invalid_request(c: testing.TestClient, raw: bytes) -> None:
    result = c.simulate_post(
        "/v1/workers", body=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (result.status_code, error_code(result)) == (400, "invalid_request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_media_type_is_415(c: testing.TestClient, content_type: str) -> None:
    result = c.simulate_post(
        "/v1/workers", body=b"{}", headers={**AUTH, "Content-Type": content_type}
    )
    assert (result.status_code, error_code(result)) == (415, "unsupported_media_type")


def test_json_with_charset_is_accepted(c: testing.TestClient) -> None:
    result = c.simulate_post(
        "/v1/workers",
        body=b"{}",
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
    )
    assert result.status_code == 201


def test_oversize_body_is_413_before_reading(c: testing.TestClient) -> None:
    body = b'{"display_name": "' + b"x" * 5000 + b'"}'
    result = c.simulate_post(
        "/v1/workers", body=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (result.status_code, error_code(result)) == (413, "payload_too_large")
    assert result.json["error"]["details"]["maximum"] == 4096


def test_oversize_body_without_token_is_401(c: testing.TestClient) -> None:
    result = c.simulate_post(
        "/v1/workers", body=b"x" * 5000, headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 401


def _unannounced(app: Any, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """Send ``body`` as a server passing a chunked body through would: no
    Content-Length, the stream ended by the server (``wsgi.input_terminated``)."""
    environ = testing.create_environ(
        method=method,
        path=path,
        body=body,
        headers={
            **AUTH,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    )
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    start = testing.StartResponseMock()
    chunks = b"".join(app(environ, start))
    return int(start.status.split()[0]), json.loads(chunks)


@pytest.mark.parametrize(("method", "template"), [*ROUTES, ("GET", "/healthz")])
def test_an_unannounced_oversize_body_is_a_json_413_on_every_route(
    rt: Runtime, method: str, template: str
) -> None:
    """A body past the limit that reaches the app without a Content-Length is
    refused as JSON too, also where the route takes no body."""
    rt.dispatch(commands.CreateWorker(worker_id="w1"))
    app = client(rt, max_body_bytes=4096).app
    body = b'{"display_name": "' + b"x" * 5000 + b'"}'
    status, answer = _unannounced(app, method, path_of(template), body)
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert answer["error"]["details"]["maximum"] == 4096


def test_an_unannounced_body_within_the_limit_is_read(rt: Runtime) -> None:
    app = client(rt, max_body_bytes=4096).app
    status, answer = _unannounced(app, "POST", "/v1/workers", b'{"worker_id": "chunky"}')
    assert (status, answer["worker"]["worker_id"]) == (201, "chunky")


def test_oversize_bodies_through_waitress_are_json_413() -> None:
    """Through the real server: an announced body past the app's limit (below
    waitress's own), and a chunked one (waitress measures it, then the app refuses)."""
    with serve({"WORKER_RUNTIME_MAX_BODY_BYTES": "4096"}) as server:
        body = b'{"display_name": "' + b"x" * 5000 + b'"}'
        announced = server.request(
            "POST", "/v1/workers", raw=body, headers={"Content-Type": "application/json"}
        )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request(
                "POST",
                "/v1/workers",
                body=iter([body[:3000], body[3000:]]),
                headers={**AUTH, "Content-Type": "application/json"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            chunked = (response.status, response.getheader("Content-Type"), response.read())
        finally:
            conn.close()
    assert announced.status == 413
    assert announced.headers["content-type"].startswith("application/json")
    assert announced.json()["error"]["code"] == "payload_too_large"
    assert chunked[0] == 413
    assert (chunked[1] or "").startswith("application/json")
    assert json.loads(chunked[2])["error"]["code"] == "payload_too_large"


# -- auth ----------------------------------------------------------------------------


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": "Bearer café"},
    {"Authorization": "Bearer \u20ac\u2603"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
]


@pytest.mark.parametrize(("method", "template"), ROUTES)
@pytest.mark.parametrize("headers", BAD_AUTH)
def test_every_route_refuses_a_bad_token(
    c: testing.TestClient, method: str, template: str, headers: dict[str, str]
) -> None:
    result = c.simulate_request(method, path_of(template), headers=headers)
    assert (result.status_code, error_code(result)) == (401, "unauthorized")
    assert result.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in result.text


def test_scheme_is_case_insensitive(c: testing.TestClient) -> None:
    assert (
        c.simulate_get("/v1/runtime", headers={"Authorization": f"bearer {TOKEN}"}).status_code
        == 200
    )


@pytest.mark.parametrize(("method", "template"), [*ROUTES, ("GET", "/healthz")])
def test_browsers_are_refused_everywhere(c: testing.TestClient, method: str, template: str) -> None:
    result = c.simulate_request(
        method, path_of(template), headers={**AUTH, "Origin": "https://example.org"}
    )
    assert (result.status_code, error_code(result)) == (403, "browser_origin_forbidden")
    assert not any(h.lower().startswith("access-control-") for h in result.headers)


def test_origin_is_checked_before_auth(c: testing.TestClient) -> None:
    result = c.simulate_get("/v1/runtime", headers={"Origin": "null"})
    assert error_code(result) == "browser_origin_forbidden"


# -- idempotency ------------------------------------------------------------------


def test_create_replay_returns_the_first_response(c: testing.TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "create-1"}
    first = c.simulate_post("/v1/workers", json={"display_name": "a"}, headers=headers)
    again = c.simulate_post("/v1/workers", json={"display_name": "a"}, headers=headers)
    assert (again.status_code, again.json) == (first.status_code, first.json)
    assert again.headers["Location"] == first.headers["Location"]
    assert len(c.simulate_get("/v1/workers", headers=AUTH).json["workers"]) == 1


def test_same_key_different_body_is_409(c: testing.TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "create-2"}
    c.simulate_post("/v1/workers", json={"display_name": "a"}, headers=headers)
    other = c.simulate_post("/v1/workers", json={"display_name": "b"}, headers=headers)
    assert (other.status_code, error_code(other)) == (409, "idempotency_key_reused")


def test_input_replay_does_not_start_a_second_run(c: testing.TestClient) -> None:
    c.simulate_post(
        "/v1/workers",
        json={"worker_id": "w", "profile": {"kind": "named", "value": "hold"}},
        headers=AUTH,
    )
    headers = {**AUTH, "Idempotency-Key": "input-1"}
    first = c.simulate_post("/v1/workers/w/input", json={"content": "x"}, headers=headers)
    again = c.simulate_post("/v1/workers/w/input", json={"content": "x"}, headers=headers)
    # Without the key the second input would be refused as worker_busy.
    assert (again.status_code, again.json) == (202, first.json)
    for suffix in ("cancel", "stop"):
        key = {**AUTH, "Idempotency-Key": f"{suffix}-1"}
        once = c.simulate_post(f"/v1/workers/w/{suffix}", headers=key)
        twice = c.simulate_post(f"/v1/workers/w/{suffix}", headers=key)
        assert (twice.status_code, twice.json) == (once.status_code, once.json)


def test_concurrent_duplicates_do_the_work_once(c: testing.TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "race"}
    answers: list[Any] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        barrier.wait(timeout=10)
        answers.append(c.simulate_post("/v1/workers", json={}, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert {a.status_code for a in answers} == {201}
    assert len({a.json["worker"]["worker_id"] for a in answers}) == 1
    assert len(c.simulate_get("/v1/workers", headers=AUTH).json["workers"]) == 1


def test_invalid_idempotency_key_is_invalid_request(c: testing.TestClient) -> None:
    result = c.simulate_post("/v1/workers", headers={**AUTH, "Idempotency-Key": "k" * 300})
    assert (result.status_code, error_code(result)) == (400, "invalid_request")


# -- core failures -------------------------------------------------------------------


def test_closed_runtime_is_503_with_retry_after(rt: Runtime, c: testing.TestClient) -> None:
    rt.close()
    result = c.simulate_get("/v1/runtime", headers=AUTH)
    assert (result.status_code, error_code(result)) == (503, "runtime_unavailable")
    assert int(result.headers["Retry-After"]) >= 1


def test_busy_state_is_504_operation_timeout() -> None:
    runtime = Runtime.open(RuntimeConfig(operation_timeout_s=0.05))
    with runtime, state_lock_held_elsewhere(runtime):
        result = client(runtime).simulate_get("/v1/workers", headers=AUTH)
    assert (result.status_code, error_code(result)) == (504, "operation_timeout")


class BrokenRuntime(Runtime):
    """A runtime with a bug in it: every command raises a plain exception."""

    def dispatch_json(self, wire: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        raise KeyError("secret internals")


def test_a_bug_is_500_internal_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = BrokenRuntime.open()
    try:
        with caplog.at_level(logging.ERROR, logger="adapters"):
            result = client(runtime).simulate_get("/v1/runtime", headers=AUTH)
    finally:
        runtime.close()
    assert (result.status_code, error_code(result)) == (500, "internal_error")
    assert "secret internals" not in result.text and "Traceback" not in result.text
    request_id = result.headers["X-Request-Id"]
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


# -- request ids and the access log ----------------------------------------------------


def test_every_response_has_a_request_id(c: testing.TestClient) -> None:
    ids = {
        c.simulate_get(path, headers=headers).headers["X-Request-Id"]
        for path, headers in [("/healthz", {}), ("/v1/runtime", {}), ("/nope", AUTH)]
    }
    assert len(ids) == 3


def test_a_sane_incoming_request_id_is_kept(c: testing.TestClient) -> None:
    kept = c.simulate_get("/healthz", headers={"X-Request-Id": "backend-42"})
    assert kept.headers["X-Request-Id"] == "backend-42"
    replaced = c.simulate_get("/healthz", headers={"X-Request-Id": "bad id\nforged"})
    assert replaced.headers["X-Request-Id"] != "bad id\nforged"


def test_access_log_has_one_line_per_request_without_secrets(
    c: testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="adapters.access"):
        result = c.simulate_post(
            "/v1/workers",
            json={"display_name": "body-secret"},
            params={"q": "query-secret"},
            headers=AUTH,
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "adapters.access"]
    assert len(lines) == 1
    assert lines[0].startswith("POST /v1/workers 400 ")
    assert lines[0].endswith(result.headers["X-Request-Id"])
    for secret in (TOKEN, "body-secret", "query-secret"):
        assert secret not in caplog.text


def test_access_log_escapes_control_characters(
    c: testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="adapters.access"):
        c.simulate_get("/v1/x%0Aforged 200", headers=AUTH)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "adapters.access"]
    assert "\n" not in line


class StoppingRuntime(Runtime):
    """A runtime whose store failed: every command is refused with the core's retry hint."""

    def dispatch_json(self, wire: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        raise errors.StoreCorrupt("events.jsonl line 7", details={"retry_after_s": 2.5})


def test_retry_after_follows_the_core_hint() -> None:
    runtime = StoppingRuntime.open()
    try:
        result = client(runtime).simulate_get("/v1/workers", headers=AUTH)
    finally:
        runtime.close()
    assert (result.status_code, error_code(result)) == (503, "store_corrupt")
    assert result.headers["Retry-After"] == "3"
