"""Operations over HTTP, in-process: ``/readyz``, ``/metrics`` (agreeing with
``GET /v1/runtime``), and the access log in the JSON format."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from adapters.app import create_app
from adapters.logs import ACCESS_FIELDS, TEXT_FORMAT, TextFormatter, start_logging
from adapters.settings import LogSettings
from worker_runtime import Runtime
from worker_runtime.errors import RuntimeUnavailable
from worker_runtime.stores.memory import MemoryStore
from worker_runtime.testing import GateEngine, ScriptEngine, fail_with, make_runtime

from .support.http_helpers import AUTH, TOKEN

ROOT = Path(__file__).resolve().parent.parent
# SPEC section 9: the families of /metrics, and nothing else.
SPEC_FAMILIES = {
    "worker_runtime_workers": "gauge",
    "worker_runtime_runs_total": "counter",
    "worker_runtime_runs_active": "gauge",
    "worker_runtime_runs_queued": "gauge",
    "worker_runtime_events_total": "counter",
    "worker_runtime_waiters": "gauge",
    "worker_runtime_http_requests_total": "counter",
    "worker_runtime_http_request_duration_seconds": "histogram",
    "worker_runtime_store_sync_seconds": "histogram",
}


class BrokenDiskStore(MemoryStore):
    """A memory store whose syncs fail once ``broken`` is set (a full disk)."""

    broken = False

    def sync(self) -> None:
        if self.broken:
            raise RuntimeUnavailable("could not write: no space left on device")


@pytest.fixture
def gate() -> GateEngine:
    return GateEngine()


@pytest.fixture
def rt(gate: GateEngine) -> Iterator[Runtime]:
    runtime = make_runtime(
        {"gate": gate, "bad": ScriptEngine(fail_with("boom"))}, store=BrokenDiskStore("rt-test")
    )
    try:
        yield runtime
    finally:
        gate.open_all()
        runtime.close()


def app_client(rt: Runtime) -> testing.TestClient:
    return testing.TestClient(create_app(rt, token=TOKEN))


def samples(client: testing.TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.simulate_get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_readyz_is_open_and_ready_while_running(rt: Runtime) -> None:
    resp = app_client(rt).simulate_get("/readyz")
    assert (resp.status_code, resp.json) == (200, {"status": "ready"})


def test_readyz_says_stopping_once_closed(rt: Runtime) -> None:
    client = app_client(rt)
    rt.close()
    resp = client.simulate_get("/readyz")
    assert resp.status_code == 503
    assert resp.json["status"] == "stopping"
    assert resp.headers["retry-after"] == "1"
    assert client.simulate_get("/healthz").status_code == 200  # alive, not ready


def test_readyz_says_unavailable_after_a_store_write_failure(rt: Runtime) -> None:
    client = app_client(rt)
    assert isinstance(rt.store, BrokenDiskStore)
    rt.store.broken = True
    failed = client.simulate_post("/v1/workers", json={"worker_id": "w"}, headers=AUTH)
    assert failed.status_code == 503
    resp = client.simulate_get("/readyz")
    assert (resp.status_code, resp.json["status"]) == (503, "unavailable")
    assert "retry-after" in resp.headers
    rt.store.broken = False  # so the fixture can close it


def test_metrics_need_the_token(rt: Runtime) -> None:
    client = app_client(rt)
    assert client.simulate_get("/metrics").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all-0000"}
    assert client.simulate_get("/metrics", headers=wrong).status_code == 401


def _wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_metrics_agree_with_the_runtime_summary(rt: Runtime, gate: GateEngine) -> None:
    client = app_client(rt)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = client.simulate_post(path, json=body, headers=AUTH)
        assert resp.status_code in (200, 201, 202), resp.text
        return dict(resp.json)

    def wait_idle(worker_id: str) -> None:
        def idle() -> bool:
            resp = client.simulate_get(f"/v1/workers/{worker_id}", headers=AUTH)
            return bool(resp.json["worker"]["status"] == "idle")

        _wait_until(idle)

    named = {"kind": "named", "value": ""}
    post("/v1/workers", {"worker_id": "echo"})
    post("/v1/workers", {"worker_id": "bad", "profile": {**named, "value": "bad"}})
    post("/v1/workers", {"worker_id": "held", "profile": {**named, "value": "gate"}})
    post("/v1/workers", {"worker_id": "cut", "profile": {**named, "value": "gate"}})
    post("/v1/workers", {"worker_id": "gone"})
    post("/v1/workers/gone/stop", {})
    for worker_id in ("echo", "bad"):
        post(f"/v1/workers/{worker_id}/input", {"content": "hi"})
        wait_idle(worker_id)
    cut = post("/v1/workers/cut/input", {"content": "hi"})["ack"]["run_id"]
    gate.wait_started(cut)
    post("/v1/workers/cut/cancel", {})
    wait_idle("cut")
    held = post("/v1/workers/held/input", {"content": "hi"})["ack"]["run_id"]
    gate.wait_started(held)
    client.simulate_get("/v1/workers/nobody", headers=AUTH)  # a 404 on a template
    client.simulate_get("/v1/workers/someone")  # a 401 refused before routing
    client.simulate_get("/no/such/route", headers=AUTH)

    found = samples(client)
    info = client.simulate_get("/v1/runtime", headers=AUTH).json["runtime"]
    for status in ("idle", "running", "stopped"):
        assert found[("worker_runtime_workers", (("status", status),))] == info["workers"][status]
    assert info["workers"] == {"idle": 3, "running": 1, "stopped": 1, "total": 5}
    for status, count in info["runs"].items():
        assert found[("worker_runtime_runs_total", (("status", status),))] == count
    assert (info["runs"]["completed"], info["runs"]["failed"], info["runs"]["cancelled"]) == (
        1,
        1,
        1,
    )
    assert found[("worker_runtime_runs_active", ())] == info["active_runs"] == 1
    assert found[("worker_runtime_runs_queued", ())] == info["queued_runs"] == 0
    assert found[("worker_runtime_waiters", ())] == info["waiters"] == 0
    # The summary was read after the scrape: the scrape's own events are none.
    assert found[("worker_runtime_events_total", ())] == info["last_event_id"]

    def requests(route: str, method: str, status: int) -> float:
        key = (("method", method), ("route", route), ("status", str(status)))
        return found.get(("worker_runtime_http_requests_total", key), 0.0)

    assert requests("/v1/workers", "POST", 201) == 5
    assert requests("/v1/workers/{worker_id}", "GET", 404) == 1
    assert requests("/v1/workers/{worker_id}", "GET", 401) == 1
    assert requests("unmatched", "GET", 404) == 1
    assert not any("/nobody" in str(key) or "/no/such" in str(key) for key in found)
    assert found[("worker_runtime_http_request_duration_seconds_count", ())] >= 10
    assert found[("worker_runtime_store_sync_seconds_count", ())] >= 5


def _doc_section(heading: str) -> str:
    text = (ROOT / "docs" / "operations.md").read_text("utf-8")
    match = re.search(rf"^## {heading}\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, heading
    return match[1]


def test_metrics_are_exactly_the_spec_families(rt: Runtime) -> None:
    """No extra family (such as the ``*_created`` gauge ``prometheus_client``'s
    Histogram adds), none missing, each of its type; the docs' table agrees."""
    client = app_client(rt)
    client.simulate_post("/v1/workers", json={"worker_id": "w"}, headers=AUTH)  # a sync
    text = client.simulate_get("/metrics", headers=AUTH).text
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert declared == SPEC_FAMILIES
    histograms = {n for n, kind in SPEC_FAMILIES.items() if kind == "histogram"}
    allowed = set(SPEC_FAMILIES) | {
        f"{n}{suffix}" for n in histograms for suffix in ("_bucket", "_count", "_sum")
    }
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert names <= allowed, names - allowed
    table = re.findall(r"^\| `(worker_runtime_\w+)` \| (\w+) \|", _doc_section("Metrics"), re.M)
    assert dict(table) == SPEC_FAMILIES


def test_the_logs_section_names_every_access_field() -> None:
    logs = _doc_section("Logs")
    for name in ACCESS_FIELDS:
        assert f"`{name}`" in logs, name


def test_waiters_shows_a_held_long_poll(rt: Runtime) -> None:
    client = app_client(rt)
    ahead = client.simulate_get("/v1/runtime", headers=AUTH).json["runtime"]["last_event_id"] + 1
    answered = threading.Event()

    def long_poll() -> None:
        client.simulate_get("/v1/events", params={"cursor": ahead, "wait": 20}, headers=AUTH)
        answered.set()

    thread = threading.Thread(target=long_poll)
    thread.start()
    try:
        _wait_until(lambda: samples(client)[("worker_runtime_waiters", ())] == 1)
        info = client.simulate_get("/v1/runtime", headers=AUTH).json["runtime"]
        assert info["waiters"] == 1
    finally:
        rt.close()  # answers the wait at once
        thread.join(10)
    assert answered.is_set()


def test_json_access_log_lines_parse_and_never_hold_the_token(rt: Runtime) -> None:
    client = app_client(rt)
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    pipeline = start_logging(LogSettings(level="INFO", format="json"), stream)
    try:
        client.simulate_post(
            "/v1/workers", json={"worker_id": "w"}, headers={**AUTH, "X-Request-Id": "req-1"}
        )
        client.simulate_get("/v1/workers/w", headers=AUTH)
        client.simulate_get("/v1/runtime", headers={"Authorization": f"Bearer {TOKEN}x"})
        client.simulate_get("/no/such/route", headers=AUTH)
        logging.getLogger("worker_runtime.test").warning("a plain line")
    finally:
        pipeline.stop()  # drains the queue: every line is in ``stream`` now
        root.setLevel(level)
    text = stream.getvalue()
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert {"level", "logger", "message", "timestamp"} <= line.keys()
    access = [line for line in lines if line["logger"] == "adapters.access"]
    assert len(access) == 4
    for line in access:
        assert set(ACCESS_FIELDS) <= line.keys()
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    first = access[0]
    assert (first["method"], first["route"], first["status"], first["request_id"]) == (
        "POST",
        "/v1/workers",
        201,
        "req-1",
    )
    assert access[1]["route"] == "/v1/workers/{worker_id}"
    assert access[2]["status"] == 401
    # A path no route serves: the same label as the metrics', never the raw path.
    assert (access[3]["route"], access[3]["status"]) == ("unmatched", 404)
    assert "/no/such" not in json.dumps({k: v for k, v in access[3].items() if k != "message"})
    assert any(line["message"] == "a plain line" for line in lines)


class GatedStream(io.StringIO):
    """Counts its writes; the first one waits for ``gate`` (a slow stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.writing.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().write(text)


def test_the_log_writer_writes_what_waits_with_one_write_in_order() -> None:
    stream = GatedStream()
    root = logging.getLogger()
    level = root.level
    pipeline = start_logging(LogSettings(level="INFO", format="text"), stream)
    log = logging.getLogger("worker_runtime.test.batch")
    try:
        log.info("line 0")
        assert stream.writing.wait(10)  # the writer is in its first write
        for n in range(1, 301):
            log.info("line %d", n)
        stream.gate.set()
    finally:
        pipeline.stop()
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == [str(n) for n in range(301)]
    # The 300 lines that queued up while the first was written: one write.
    assert stream.writes == 2


def test_the_text_format_is_loggings_own() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    for exc_info in (None, failure):
        for created in (1_765_111_807.042, 1_765_111_807.999, 1_765_111_808.0):
            mine, theirs = (
                logging.LogRecord("a.b", logging.WARNING, __file__, 1, "x %s", ("y",), exc_info)
                for _ in range(2)
            )
            for record in (mine, theirs):
                record.created, record.msecs = created, (created - int(created)) * 1000
            assert TextFormatter().format(mine) == logging.Formatter(TEXT_FORMAT).format(theirs)
