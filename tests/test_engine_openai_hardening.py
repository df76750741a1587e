"""The ``openai_chat`` engine under a hostile or unlucky network: cancel while the
connection is still being made, query strings, retries, and the API key echoed back."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from worker_runtime import commands
from worker_runtime.testing import wait_for_event, wait_for_run_end, wait_until

from .support.engine_support import create, reply, run_once, runtimes, send
from .support.openai_stub import KEY, KEY_ENV, Stub

GRACE_WARNING = "did not stop within the grace period"


@pytest.fixture
def open_rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``open_rt(profiles, **config)``: a runtime on those profiles, closed after the test."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with runtimes(tmp_path) as open_:
        yield open_


def llm(base_url: str, model: str = "echo", **settings: Any) -> dict[str, Any]:
    return {
        "engine": "openai_chat",
        "base_url": base_url,
        "model": model,
        "api_key_env": KEY_ENV,
        **settings,
    }


# -- cancel while connecting ------------------------------------------------------------


def _tcp_states(port: int) -> list[str]:
    """The states (``/proc/net/tcp`` codes: 01 established, 02 SYN sent) of the
    IPv4 sockets connecting to ``port``."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port:
            states.append(fields[3])
    return states


@contextmanager
def syn_never_answered() -> Iterator[tuple[str, Any]]:
    """A listener whose accept queue is full (``listen(0)`` and one connection
    never accepted): the kernel drops further SYNs, so a connect stays in SYN_SENT."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):

            def connecting() -> None:
                wait_until(lambda: "02" in _tcp_states(port), what="a connect in SYN_SENT")

            yield f"http://127.0.0.1:{port}/v1", connecting
        wait_until(lambda: "02" not in _tcp_states(port), what="the abandoned connect closed")


@contextmanager
def tls_never_answered() -> Iterator[tuple[str, Any]]:
    """A listener that takes the connection and never answers the TLS ClientHello."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        accepted: list[socket.socket] = []

        def connecting() -> None:
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.settimeout(10)
            assert conn.recv(1, socket.MSG_PEEK) == b"\x16"  # a TLS handshake record

        try:
            yield f"https://127.0.0.1:{port}/v1", connecting
            # The engine gave up on the handshake and closed its end (recv times out if not).
            while accepted[0].recv(65536):
                pass
        finally:
            for conn in accepted:
                conn.close()


@pytest.mark.parametrize("hole", [syn_never_answered, tls_never_answered])
def test_cancel_while_connecting_returns_and_frees_the_pool_slot(
    open_rt: Any, stub: Stub, caplog: pytest.LogCaptureFixture, hole: Any
) -> None:
    with hole() as (base_url, connecting):
        rt = open_rt(
            {
                "hole": llm(base_url, request_timeout_s=120, timeout_s=600),
                "llm": llm(stub.base_url),
            },
            max_concurrent_runs=1,
            cancel_grace_s=60,
        )
        stuck, other = create(rt, "hole"), create(rt, "llm")
        stuck_run = send(rt, stuck, "hi")
        connecting()  # the run holds the only pool thread, inside connect
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            ack = rt.dispatch(commands.CancelRun(worker_id=stuck, run_id=stuck_run))
        print(f"cancel while connecting took {time.monotonic() - started:.3f}s")
        assert ack.run_status == "cancelled"
        assert GRACE_WARNING not in caplog.text  # the engine returned by itself
        # The only pool thread is free: the next run (another worker) runs to the end.
        next_run = send(rt, other, "after")
        end = wait_for_run_end(rt, next_run)
    assert end.type == "run_completed"
    assert reply(rt, other, next_run) == "you said: after"
    cancelled = wait_for_run_end(rt, stuck_run)
    assert cancelled.type == "run_cancelled"
    started_event = wait_for_event(rt, lambda e: e.run_id == next_run and e.type == "run_started")
    assert cancelled.event_id < started_event.event_id


# -- base_url with a query string -------------------------------------------------------


def test_the_base_url_query_string_reaches_the_server(open_rt: Any, stub: Stub) -> None:
    base_url = stub.base_url + "/?api-version=2024-06-01&x=a%2Fb"
    rt = open_rt({"azure": llm(base_url)})
    worker = create(rt, "azure")
    end = run_once(rt, worker, "hi")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "you said: hi"
    assert [r.path for r in stub.requests] == [
        "/v1/chat/completions?api-version=2024-06-01&x=a%2Fb"
    ]


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        (429, {"Retry-After": "0"}),
        (429, {"retry-after-ms": "10"}),
        (503, {}),  # no hint: the policy's own backoff
        (502, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}),  # a date in the past
    ],
)
def test_rate_limits_and_server_errors_are_retried(
    open_rt: Any, stub: Stub, first: tuple[int, dict[str, str]]
) -> None:
    stub.script[:] = [first]
    rt = open_rt({"llm": llm(stub.base_url, "scripted")})
    worker = create(rt, "llm")
    end = run_once(rt, worker, "again")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "you said: again"
    assert len(stub.requests) == 2
    assert stub.requests[0].body == stub.requests[1].body


def test_retries_are_bounded(open_rt: Any, stub: Stub) -> None:
    stub.script[:] = [(503, {"Retry-After": "0"})] * 5
    rt = open_rt({"llm": llm(stub.base_url, "scripted", max_retries=2)})
    end = run_once(rt, create(rt, "llm"), "hi")
    assert end.type == "run_failed"
    assert end.data["error"] == (
        "the endpoint answered HTTP 503 Service Unavailable: scripted 503 (after 3 attempts)"
    )
    assert len(stub.requests) == 3


@pytest.mark.parametrize(
    ("retry_after", "settings"),
    [
        ("7", {"timeout_s": 5}),  # past the run's deadline
        ("3600", {"timeout_s": 7200}),  # longer than the longest wait honoured
    ],
)
def test_a_retry_after_that_cannot_be_honoured_fails_at_once(
    open_rt: Any, stub: Stub, retry_after: str, settings: dict[str, Any]
) -> None:
    stub.script[:] = [(429, {"Retry-After": retry_after})]
    rt = open_rt({"llm": llm(stub.base_url, "scripted", **settings)})
    end = run_once(rt, create(rt, "llm"), "hi")
    assert end.type == "run_failed"
    assert end.data["error"] == (
        f"rate limited by the endpoint (HTTP 429), retry after {retry_after}s: scripted 429"
    )
    assert len(stub.requests) == 1


def test_cancel_interrupts_a_retry_wait(
    open_rt: Any, stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    stub.script[:] = [(429, {"Retry-After": "25"})]
    rt = open_rt({"llm": llm(stub.base_url, "scripted")}, cancel_grace_s=60)
    worker = create(rt, "llm")
    run_id = send(rt, worker, "hi")
    assert stub.received.wait(10)
    with caplog.at_level(logging.WARNING):
        ack = rt.dispatch(commands.CancelRun(worker_id=worker, run_id=run_id))
    assert ack.run_status == "cancelled"
    assert GRACE_WARNING not in caplog.text
    assert len(stub.requests) == 1


# -- the API key, echoed ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_a_reply_that_echoes_the_key_shows_a_mask(
    open_rt: Any, stub: Stub, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    rt = open_rt({"llm": llm(stub.base_url, "key-echo", stream=stream)})
    worker = create(rt, "llm")
    with caplog.at_level(logging.DEBUG):
        end = run_once(rt, worker, "what is my key?")
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    assert end.type == "run_completed"
    expected = "your key is ***, twice: ***." if stream else "your key is ***, twice: ***"
    assert reply(rt, worker, end.run_id) == expected
    everything = repr(
        (
            rt.dispatch(commands.ReadEvents(cursor=0, limit=1000)),
            rt.dispatch(commands.GetTranscript(worker_id=worker)),
        )
    )
    assert KEY not in everything
    assert KEY[:15] not in everything  # nor a piece of it, streamed before the rest
    assert KEY not in caplog.text


def test_a_key_with_a_control_character_is_refused_without_showing_it(
    open_rt: Any, stub: Stub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rt = open_rt({"llm": llm(stub.base_url)})
    monkeypatch.setenv(KEY_ENV, KEY + "\nX-Injected: 1")
    with caplog.at_level(logging.DEBUG):
        end = run_once(rt, create(rt, "llm"), "hi")
    assert end.type == "run_failed"
    assert end.data["error"] == f"the API key in {KEY_ENV} has characters a header cannot carry"
    assert stub.requests == []
    assert KEY not in caplog.text


def test_whitespace_around_the_key_is_dropped(
    open_rt: Any, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = open_rt({"llm": llm(stub.base_url)})
    monkeypatch.setenv(KEY_ENV, f"  {KEY}\n")  # as read from a mounted secret file
    assert run_once(rt, create(rt, "llm"), "hi").type == "run_completed"
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"
