"""Each resource through falcon.testing: envelopes, statuses, and conformance to the
served OpenAPI document."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from falcon import testing

from worker_runtime import Runtime

from .support.http_helpers import AUTH, Conformance, client, error_code, hold_runtime

HOLD = {"profile": {"kind": "named", "value": "hold"}}


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = hold_runtime()
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def c(rt: Runtime) -> testing.TestClient:
    return client(rt)


@pytest.fixture
def conf(c: testing.TestClient) -> Conformance:
    return Conformance(c.simulate_get("/v1/openapi.json", headers=AUTH).json)


def create(c: testing.TestClient, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return c.simulate_post("/v1/workers", json=body or {}, headers={**AUTH, **headers})


def wait_for(c: testing.TestClient, event_type: str, run_id: str) -> dict[str, Any]:
    """Follow the event log (long-poll) until ``run_id`` emits ``event_type``."""
    cursor = 0
    for _ in range(50):
        page = c.simulate_get(
            "/v1/events", params={"cursor": str(cursor), "wait": "5"}, headers=AUTH
        ).json
        for event in page["events"]:
            if event.get("run_id") == run_id and event["type"] == event_type:
                return dict(event)
        cursor = page["cursor"]["next_event_id"]
    raise AssertionError(f"no {event_type} for {run_id}")


def test_healthz_needs_no_token(c: testing.TestClient, conf: Conformance) -> None:
    result = c.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}
    assert result.headers["X-Request-Id"]
    conf.check("GET", "/healthz", 200, result.json)


def test_get_runtime(c: testing.TestClient, conf: Conformance) -> None:
    result = c.simulate_get("/v1/runtime", headers=AUTH)
    assert result.status_code == 200
    assert result.json["runtime"]["runtime_id"] == "rt-http"
    assert "hold" in [p["name"] for p in result.json["runtime"]["profiles"]]
    conf.check("GET", "/v1/runtime", 200, result.json)


def test_create_answers_201_with_location(c: testing.TestClient, conf: Conformance) -> None:
    result = create(c, {"worker_id": "scout", "display_name": "Scout"})
    assert result.status_code == 201
    assert result.headers["Location"] == "/v1/workers/scout"
    worker = result.json["worker"]
    assert (worker["worker_id"], worker["display_name"], worker["status"]) == (
        "scout",
        "Scout",
        "idle",
    )
    conf.check("POST", "/v1/workers", 201, result.json)


def test_create_with_empty_body_generates_an_id(c: testing.TestClient) -> None:
    result = c.simulate_post("/v1/workers", headers=AUTH)
    assert result.status_code == 201
    assert result.headers["Location"] == f"/v1/workers/{result.json['worker']['worker_id']}"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"profile": {"kind": "named", "value": "nope"}}, 422, "unknown_profile"),
        ({"requested_capabilities": [{"name": "shell"}]}, 422, "unsupported_capability"),
        ({"intent": {"kind": "task"}}, 400, "invalid_request"),
        ({"bogus": 1}, 400, "invalid_request"),
        ({"worker_id": "../etc"}, 400, "invalid_worker_id"),
    ],
)
def test_create_refusals(
    c: testing.TestClient, conf: Conformance, body: dict[str, Any], status: int, code: str
) -> None:
    result = create(c, body)
    assert (result.status_code, error_code(result)) == (status, code)
    conf.check("POST", "/v1/workers", status, result.json)


def test_schema_errors_point_at_the_body_field(c: testing.TestClient) -> None:
    result = create(c, {"intent": {"kind": "task"}})
    assert result.json["error"]["details"]["field"].startswith("/intent")
    assert "/args" not in result.json["error"]["message"]


def test_create_duplicate_is_409(c: testing.TestClient) -> None:
    assert create(c, {"worker_id": "twin"}).status_code == 201
    result = create(c, {"worker_id": "twin"})
    assert (result.status_code, error_code(result)) == (409, "worker_exists")


def test_a_keyed_create_replays_after_its_worker_was_deleted(c: testing.TestClient) -> None:
    """As docs/http-api.md says (and why schemathesis's resource check is off):
    the key's first answer is replayed while the key is kept, and no second
    worker is created; a new key creates anew."""
    first = create(c, {}, **{"Idempotency-Key": "k-1"})
    worker_id = first.json["worker"]["worker_id"]
    c.simulate_post(f"/v1/workers/{worker_id}/stop", headers=AUTH)
    assert c.simulate_delete(f"/v1/workers/{worker_id}", headers=AUTH).status_code == 200
    again = create(c, {}, **{"Idempotency-Key": "k-1"})
    assert (again.status_code, again.json) == (201, first.json)
    gone = c.simulate_get(f"/v1/workers/{worker_id}", headers=AUTH)
    assert (gone.status_code, error_code(gone)) == (404, "worker_not_found")
    fresh = create(c, {}, **{"Idempotency-Key": "k-2"})
    assert fresh.status_code == 201
    assert fresh.json["worker"]["worker_id"] != worker_id


def test_list_workers_pages_in_creation_order(c: testing.TestClient, conf: Conformance) -> None:
    for name in ("a", "b", "c"):
        create(c, {"worker_id": name})
    first = c.simulate_get("/v1/workers", params={"limit": "2"}, headers=AUTH)
    assert [w["worker_id"] for w in first.json["workers"]] == ["a", "b"]
    assert first.json["next_after"] == "b"
    conf.check("GET", "/v1/workers", 200, first.json)
    rest = c.simulate_get("/v1/workers", params={"limit": "2", "after": "b"}, headers=AUTH)
    assert [w["worker_id"] for w in rest.json["workers"]] == ["c"]
    assert rest.json["next_after"] is None


def test_list_workers_filters_by_status(c: testing.TestClient) -> None:
    create(c, {"worker_id": "live"})
    create(c, {"worker_id": "gone"})
    c.simulate_post("/v1/workers/gone/stop", headers=AUTH)
    result = c.simulate_get("/v1/workers", params={"status": "stopped"}, headers=AUTH)
    assert [w["worker_id"] for w in result.json["workers"]] == ["gone"]


def test_get_worker(c: testing.TestClient, conf: Conformance) -> None:
    create(c, {"worker_id": "w1"})
    result = c.simulate_get("/v1/workers/w1", headers=AUTH)
    assert result.status_code == 200
    assert result.json["worker"]["worker_ref"] == {"runtime_id": "rt-http", "worker_id": "w1"}
    conf.check("GET", "/v1/workers/{worker_id}", 200, result.json)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/workers/missing", 404, "worker_not_found"),
        ("/v1/workers/-bad", 400, "invalid_worker_id"),
        ("/v1/workers/missing/transcript", 404, "worker_not_found"),
    ],
)
def test_worker_lookups(c: testing.TestClient, path: str, status: int, code: str) -> None:
    result = c.simulate_get(path, headers=AUTH)
    assert (result.status_code, error_code(result)) == (status, code)


def test_input_runs_and_fills_the_transcript(c: testing.TestClient, conf: Conformance) -> None:
    create(c, {"worker_id": "echo"})
    result = c.simulate_post("/v1/workers/echo/input", json={"content": "hello"}, headers=AUTH)
    assert result.status_code == 202
    ack = result.json["ack"]
    assert (ack["status"], ack["transcript_sequence"]) == ("running", 0)
    conf.check("POST", "/v1/workers/{worker_id}/input", 202, result.json)
    wait_for(c, "run_completed", ack["run_id"])
    page = c.simulate_get("/v1/workers/echo/transcript", headers=AUTH)
    assert [(i["role"], i["content"]) for i in page.json["transcript"]["items"]] == [
        ("user", "hello"),
        ("assistant", "hello"),
    ]
    conf.check("GET", "/v1/workers/{worker_id}/transcript", 200, page.json)
    second = c.simulate_get(
        "/v1/workers/echo/transcript", params={"start": "1", "limit": "1"}, headers=AUTH
    ).json["transcript"]
    assert ([i["sequence"] for i in second["items"]], second["total_items"]) == ([1], 2)


def test_input_to_a_busy_worker_is_409_and_cancel_frees_it(
    c: testing.TestClient, conf: Conformance
) -> None:
    create(c, {"worker_id": "slow", **HOLD})
    run_id = c.simulate_post("/v1/workers/slow/input", json={"content": "one"}, headers=AUTH).json[
        "ack"
    ]["run_id"]
    busy = c.simulate_post("/v1/workers/slow/input", json={"content": "two"}, headers=AUTH)
    assert (busy.status_code, error_code(busy)) == (409, "worker_busy")
    cancel = c.simulate_post("/v1/workers/slow/cancel", json={"reason": "enough"}, headers=AUTH)
    assert cancel.status_code == 200
    assert cancel.json["ack"]["cancelled_run_id"] == run_id
    conf.check("POST", "/v1/workers/{worker_id}/cancel", 200, cancel.json)
    idle = c.simulate_post("/v1/workers/slow/cancel", headers=AUTH)
    assert idle.json["ack"]["cancelled_run_id"] is None


def test_cancel_naming_a_finished_run_reports_it(c: testing.TestClient) -> None:
    create(c, {"worker_id": "w"})
    run_id = c.simulate_post("/v1/workers/w/input", json={"content": "x"}, headers=AUTH).json[
        "ack"
    ]["run_id"]
    wait_for(c, "run_completed", run_id)
    ack = c.simulate_post("/v1/workers/w/cancel", json={"run_id": run_id}, headers=AUTH).json
    assert (ack["ack"]["cancelled_run_id"], ack["ack"]["run_status"]) == (None, "completed")


def test_stop_is_final_and_idempotent(c: testing.TestClient, conf: Conformance) -> None:
    create(c, {"worker_id": "w", **HOLD})
    c.simulate_post("/v1/workers/w/input", json={"content": "x"}, headers=AUTH)
    stop = c.simulate_post("/v1/workers/w/stop", json={"reason": "done"}, headers=AUTH)
    assert stop.status_code == 200
    assert (stop.json["ack"]["status"], stop.json["ack"]["already_stopped"]) == ("stopped", False)
    conf.check("POST", "/v1/workers/{worker_id}/stop", 200, stop.json)
    again = c.simulate_post("/v1/workers/w/stop", headers=AUTH)
    assert again.json["ack"]["already_stopped"] is True
    late = c.simulate_post("/v1/workers/w/input", json={"content": "y"}, headers=AUTH)
    assert (late.status_code, error_code(late)) == (409, "worker_stopped")


@pytest.mark.parametrize("suffix", ["input", "stop", "cancel"])
def test_body_may_not_name_another_worker(c: testing.TestClient, suffix: str) -> None:
    create(c, {"worker_id": "w"})
    result = c.simulate_post(
        f"/v1/workers/w/{suffix}", json={"worker_id": "other", "content": "x"}, headers=AUTH
    )
    assert (result.status_code, error_code(result)) == (400, "invalid_request")
    assert result.json["error"]["details"]["field"] == "/worker_id"


def test_input_needs_content(c: testing.TestClient) -> None:
    create(c, {"worker_id": "w"})
    result = c.simulate_post("/v1/workers/w/input", headers=AUTH)
    assert (result.status_code, error_code(result)) == (400, "invalid_request")
    assert result.json["error"]["details"]["field"] == "/content"


def test_events_page_with_a_cursor(c: testing.TestClient, conf: Conformance) -> None:
    create(c, {"worker_id": "w"})
    first = c.simulate_get("/v1/events", params={"limit": "1"}, headers=AUTH)
    assert [e["type"] for e in first.json["events"]] == ["runtime_started"]
    assert first.json["has_more"] is True
    conf.check("GET", "/v1/events", 200, first.json)
    cursor = first.json["cursor"]["next_event_id"]
    rest = c.simulate_get("/v1/events", params={"cursor": str(cursor)}, headers=AUTH).json
    assert [e["type"] for e in rest["events"]] == ["worker_created"]
    assert rest["has_more"] is False


def test_events_long_poll_wakes_on_a_new_event(c: testing.TestClient) -> None:
    cursor = c.simulate_get("/v1/events", headers=AUTH).json["cursor"]["next_event_id"]
    answers: list[Any] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            c.simulate_get(
                "/v1/events", params={"cursor": str(cursor), "wait": "20"}, headers=AUTH
            ).json
        )
    )
    poll.start()
    create(c, {"worker_id": "late"})
    poll.join(timeout=20)
    assert [e["type"] for e in answers[0]["events"]] == ["worker_created"]


def test_diagnostics(c: testing.TestClient, conf: Conformance) -> None:
    create(c, {"worker_id": "w"})
    result = c.simulate_get("/v1/diagnostics", headers=AUTH)
    assert "created_without_config_bundle" in [d["code"] for d in result.json["diagnostics"]]
    conf.check("GET", "/v1/diagnostics", 200, result.json)


def test_diagnostics_are_read_in_pages(c: testing.TestClient, conf: Conformance) -> None:
    for name in ("a", "b", "c"):
        create(c, {"worker_id": name})
    seen: list[int] = []
    after: int | None = 0
    while after is not None:
        page = c.simulate_get(
            "/v1/diagnostics", params={"after": str(after), "limit": "2"}, headers=AUTH
        ).json
        conf.check("GET", "/v1/diagnostics", 200, page)
        assert len(page["diagnostics"]) <= 2
        seen += [d["id"] for d in page["diagnostics"]]
        after = page["next_after"]
    assert seen == sorted(set(seen)) and len(seen) >= 3
    too_many = c.simulate_get("/v1/diagnostics", params={"limit": "100000"}, headers=AUTH)
    assert (too_many.status_code, error_code(too_many)) == (400, "limit_too_large")


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/v1/workers", {"limit": "abc"}, "limit"),
        ("/v1/workers", {"limit": "0"}, "limit"),
        ("/v1/workers", {"limit": "1.5"}, "limit"),
        ("/v1/workers", {"status": "sleeping"}, "status"),
        ("/v1/workers", {"after": "no-such-worker"}, "after"),
        ("/v1/workers", {"after": "bad id"}, "after"),
        ("/v1/workers", {"colour": "red"}, "colour"),
        ("/v1/events", {"wait": "nan"}, "wait"),
        ("/v1/diagnostics", {"after": "-1"}, "after"),
        ("/v1/diagnostics", {"limit": "x"}, "limit"),
        ("/v1/events", {"wait": "1e999"}, "wait"),
        ("/v1/events", {"wait": "31"}, "wait"),
        ("/v1/events", {"wait": "-1"}, "wait"),
        ("/v1/events", {"cursor": "-1"}, "cursor"),
        ("/v1/events", {"cursor": ""}, "cursor"),
        ("/v1/runtime", {"x": "1"}, "x"),
    ],
)
def test_bad_query_parameters_are_invalid_query(
    c: testing.TestClient, path: str, params: dict[str, str], parameter: str
) -> None:
    result = c.simulate_get(path, params=params, headers=AUTH)
    assert (result.status_code, error_code(result)) == (400, "invalid_query")
    assert result.json["error"]["details"]["parameter"] == parameter


def test_repeated_query_parameter_is_invalid_query(c: testing.TestClient) -> None:
    result = c.simulate_get("/v1/workers", query_string="limit=1&limit=2", headers=AUTH)
    assert (result.status_code, error_code(result)) == (400, "invalid_query")


def test_limit_above_the_maximum(c: testing.TestClient) -> None:
    create(c, {"worker_id": "w"})
    for path in ("/v1/workers", "/v1/events", "/v1/workers/w/transcript"):
        result = c.simulate_get(path, params={"limit": "100000"}, headers=AUTH)
        assert (result.status_code, error_code(result)) == (400, "limit_too_large"), path


@pytest.mark.parametrize("wait", ["0", "0.015", "1e-2", "8.875987204936308", "2E0"])
def test_wait_takes_any_json_style_number(c: testing.TestClient, wait: str) -> None:
    # cursor 0 has events already, so the long-poll answers at once.
    result = c.simulate_get("/v1/events", params={"cursor": "0", "wait": wait}, headers=AUTH)
    assert result.status_code == 200, result.json
