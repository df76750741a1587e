"""The ``openai_chat`` engine against a loopback stub server (never the internet)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker_runtime import Runtime, commands
from worker_runtime.domain import Role, TranscriptEntry, WorkerIntent
from worker_runtime.engines import RunContext, RunSignal
from worker_runtime.engines.openai_chat import build_messages
from worker_runtime.testing import wait_for_run_end, wait_until

from .support.engine_support import create, open_runtime, reply, run_once, send
from .support.openai_stub import KEY, KEY_ENV, Stub


@pytest.fixture
def make(tmp_path: Path, stub: Stub, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make(model, **settings)``: a runtime with one ``llm`` profile on the stub."""
    monkeypatch.setenv(KEY_ENV, KEY)
    opened: list[Runtime] = []

    def _make(model: str, *, config: dict[str, Any] | None = None, **settings: Any) -> Runtime:
        profile = {
            "engine": "openai_chat",
            "base_url": stub.base_url,
            "model": model,
            "api_key_env": KEY_ENV,
            **settings,
        }
        rt = open_runtime(tmp_path, {"llm": profile}, **(config or {}))
        opened.append(rt)
        return rt

    yield _make
    for rt in opened:
        rt.close()


def test_streamed_reply_lands_in_the_transcript(make: Any, stub: Stub) -> None:
    rt = make("echo", system_prompt="Be brief.", temperature=0.2, max_tokens=50)
    worker = create(rt, "llm", WorkerIntent(kind="role", role="critic"))
    end = run_once(rt, worker, "hello there")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "you said: hello there"
    [request] = stub.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.body == {
        "model": "echo",
        "stream": True,
        "temperature": 0.2,
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "Be brief.\n\nYou are working as a role.\nRole: critic"},
            {"role": "user", "content": "hello there"},
        ],
    }


def test_the_transcript_is_the_conversation(make: Any, stub: Stub) -> None:
    rt = make("echo")
    worker = create(rt, "llm")
    assert run_once(rt, worker, "one").type == "run_completed"
    assert run_once(rt, worker, "two").type == "run_completed"
    assert stub.requests[1].body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "you said: one"},
        {"role": "user", "content": "two"},
    ]


def test_assistant_entries_of_one_run_are_one_message() -> None:
    def entry(seq: int, role: Role, content: str, run: str) -> TranscriptEntry:
        return TranscriptEntry(
            sequence=seq, role=role, content=content, event_id=seq, created_at="t", run_id=run
        )

    history = [
        entry(0, Role.USER, "q1", "r1"),
        entry(1, Role.ASSISTANT, "a", "r1"),
        entry(2, Role.ASSISTANT, "b", "r1"),
        entry(3, Role.SYSTEM, "note", "r2"),
        entry(4, Role.ASSISTANT, "c", "r2"),
        entry(5, Role.USER, "q3", "r3"),
    ]
    ctx = RunContext(
        runtime_id="rt",
        worker_id="w",
        run_id="r3",
        input=history[-1],
        intent=WorkerIntent(kind="task", objective="sum it up"),
        deadline=0.0,
        signal=RunSignal(),
        history=lambda: history,
    )
    assert build_messages(ctx, None) == [
        {"role": "system", "content": "You are working as a task.\nObjective: sum it up"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "ab"},
        {"role": "system", "content": "note"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "q3"},
    ]


@pytest.mark.parametrize(("model", "stream"), [("echo", False), ("plain-json", True)])
def test_non_streaming_replies(make: Any, stub: Stub, model: str, stream: bool) -> None:
    rt = make(model, stream=stream)
    worker = create(rt, "llm")
    end = run_once(rt, worker, "hi")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "you said: hi"
    assert stub.requests[0].body["stream"] is stream


@pytest.mark.parametrize(
    ("model", "stream", "error", "settings"),
    [
        (
            "error-500",
            True,
            "the endpoint answered HTTP 500 Internal Server Error: model exploded (details)",
            {"max_retries": 0},  # retries: see test_engine_openai_hardening.py
        ),
        (
            "rate-limit",
            False,
            "rate limited by the endpoint (HTTP 429), retry after 7s: slow down",
            {"timeout_s": 5},  # the retry would end past the deadline: not tried
        ),
        ("stream-error", True, "the endpoint reported an error: overloaded", {}),
        ("drop", True, "the endpoint closed the stream before the reply was complete", {}),
        (
            "drop",
            False,
            "the connection to 127.0.0.1:{port} was lost before the reply was complete",
            {},
        ),
    ],
)
def test_endpoint_failures_fail_the_run_readably(
    make: Any, stub: Stub, model: str, stream: bool, error: str, settings: dict[str, Any]
) -> None:
    rt = make(model, stream=stream, **settings)
    worker = create(rt, "llm")
    end = run_once(rt, worker, "hi")
    assert end.type == "run_failed"
    assert end.data["error"] == error.format(port=stub.port)


def test_the_api_key_never_leaks(make: Any, stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    rt = make("auth-echo")
    worker = create(rt, "llm")
    with caplog.at_level(logging.DEBUG):
        end = run_once(rt, worker, f"is {KEY[:8]} enough?")
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    assert end.type == "run_failed"
    assert end.data["error"] == (
        "the endpoint answered HTTP 401 Unauthorized: Incorrect API key provided: Bearer ***"
    )
    everything = repr(
        (
            rt.dispatch(commands.ReadEvents(cursor=0, limit=1000)),
            rt.dispatch(commands.GetTranscript(worker_id=worker)),
            rt.dispatch(commands.GetDiagnostics()),
            rt.dispatch(commands.GetWorker(worker_id=worker)),
            rt.dispatch(commands.GetRuntime()),
        )
    )
    assert KEY not in everything
    assert KEY not in caplog.text


def test_a_missing_key_is_named_not_sent(
    make: Any, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make("auth-echo")
    monkeypatch.delenv(KEY_ENV)
    end = run_once(rt, create(rt, "llm"), "hi")
    assert "authorization" not in stub.requests[0].headers
    assert str(end.data["error"]).startswith(
        f"the endpoint answered HTTP 401 Unauthorized (the API key variable {KEY_ENV} is not set)"
    )


@pytest.mark.parametrize("model", ["slow", "slow-stream"])
def test_cancel_abandons_a_slow_request_at_once(
    make: Any, stub: Stub, caplog: pytest.LogCaptureFixture, model: str
) -> None:
    rt = make(model, config={"cancel_grace_s": 20})
    worker = create(rt, "llm")
    run_id = send(rt, worker, "hi")
    assert stub.received.wait(10)
    with caplog.at_level(logging.WARNING):
        ack = rt.dispatch(commands.CancelRun(worker_id=worker, run_id=run_id))
    assert ack.run_status == "cancelled"
    assert "did not stop within the grace period" not in caplog.text
    assert stub.client_gone.wait(10), "the stub never saw the request abandoned"
    assert reply(rt, worker, run_id) in ("", "thinking")


def test_the_run_deadline_times_out_a_slow_request(make: Any, stub: Stub) -> None:
    rt = make("slow", timeout_s=0.3)
    end = run_once(rt, create(rt, "llm"), "hi")
    assert end.type == "run_timed_out"
    assert stub.client_gone.wait(10)


def test_a_silent_endpoint_fails_after_the_request_timeout(make: Any, stub: Stub) -> None:
    rt = make("slow", request_timeout_s=0.3)
    end = run_once(rt, create(rt, "llm"), "hi")
    assert end.type == "run_failed"
    assert end.data["error"] == f"the endpoint 127.0.0.1:{stub.port} did not respond within 0.3s"


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = {"engine": "openai_chat", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}
    rt = open_runtime(tmp_path, {"llm": profile})
    try:
        end = run_once(rt, create(rt, "llm"), "hi")
    finally:
        rt.close()
    assert end.type == "run_failed"
    assert end.data["error"] == f"could not connect to 127.0.0.1:{port}: connection refused"


def test_stop_during_a_stream_request_ends_the_run(make: Any, stub: Stub) -> None:
    rt = make("slow")
    worker = create(rt, "llm")
    run_id = send(rt, worker, "hi")
    assert stub.received.wait(10)
    rt.dispatch(commands.StopWorker(worker_id=worker))
    assert wait_for_run_end(rt, run_id).type == "run_cancelled"
    wait_until(stub.client_gone.is_set, what="the request to be abandoned")
