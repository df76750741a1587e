"""The cache of encoded answers never serves a stale answer.

After any sequence of commands, ``GET /v1/workers/{id}`` and a transcript page
through the app equal a fresh ``to_json`` + ``json.dumps`` of the command's
result; the cache is really used (an unchanged record is not encoded again)
and a change to the record is seen at once.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.resources import enveloped
from worker_runtime import Runtime, RuntimeConfig, errors
from worker_runtime import commands as c
from worker_runtime.answers import AnswerCache
from worker_runtime.codec import to_json
from worker_runtime.testing import wait_until

from .support import strategies
from .support.http_helpers import AUTH, client

WORKER_IDS = st.sampled_from(["a", "b", "c"])


def fresh(result: Any, envelope: str | None) -> bytes:
    """What the app would answer without any cache."""
    data = to_json(result)
    return json.dumps(
        {envelope: data} if envelope else data, ensure_ascii=False, separators=(",", ":")
    ).encode()


def settle(rt: Runtime) -> None:
    """Wait until no run is active, so no record changes behind the comparison."""
    wait_until(lambda: rt.context.runs.count() == 0, what="runs to end")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(strategies.commands(WORKER_IDS, waits=st.just(0.0)), max_size=12))
def test_cached_gets_equal_fresh_answers_after_any_commands(
    commands: list[c.Command[Any]],
) -> None:
    rt = Runtime.open(RuntimeConfig(runtime_id="rt-cache"))
    try:
        app = client(rt)
        for command in [c.CreateWorker(worker_id="a"), *commands]:
            with contextlib.suppress(errors.WorkerRuntimeError):
                rt.dispatch(command)
            settle(rt)
            for worker_id in ("a", "b", "c"):
                for _ in range(2):  # the second is served from the cache
                    got = app.simulate_get(f"/v1/workers/{worker_id}", headers=AUTH)
                    try:
                        detail = rt.dispatch(c.GetWorker(worker_id=worker_id))
                    except errors.WorkerNotFound:
                        assert got.status_code == 404
                        continue
                    assert got.status_code == 200
                    assert got.content == fresh(detail, "worker")
                    path = f"/v1/workers/{worker_id}/transcript"
                    page = app.simulate_get(path, params={"start": "1", "limit": "2"}, headers=AUTH)
                    expected = rt.dispatch(c.GetTranscript(worker_id=worker_id, start=1, limit=2))
                    assert page.content == fresh(expected, "transcript")
    finally:
        rt.close()


def test_an_unchanged_record_is_not_encoded_again(runtime: Runtime) -> None:
    runtime.dispatch(c.CreateWorker(worker_id="w"))
    encoded: list[dict[str, Any]] = []

    def encode(data: dict[str, Any]) -> bytes:
        encoded.append(data)
        return json.dumps(data).encode()

    wire = {"command": "GetWorker", "args": {"worker_id": "w"}}
    first = runtime.dispatch_encoded(wire, encode)
    assert runtime.dispatch_encoded(wire, encode) == first
    assert len(encoded) == 1
    runtime.dispatch(c.StopWorker(worker_id="w"))
    changed = runtime.dispatch_encoded(wire, encode)
    assert len(encoded) == 2 and json.loads(changed)["status"] == "stopped"
    # Another encoder is another answer; an unknown worker is never cached.
    other = enveloped("worker")
    assert json.loads(runtime.dispatch_encoded(wire, other))["worker"] == json.loads(changed)
    for _ in range(2):
        with contextlib.suppress(errors.WorkerNotFound):
            runtime.dispatch_encoded({"command": "GetWorker", "args": {"worker_id": "x"}}, encode)
    assert len(encoded) == 2


def test_a_closed_runtime_refuses_even_a_cached_read() -> None:
    rt = Runtime.open()
    rt.dispatch(c.CreateWorker(worker_id="w"))
    wire = {"command": "GetWorker", "args": {"worker_id": "w"}}
    encode = enveloped(None)
    rt.dispatch_encoded(wire, encode)
    rt.close()
    try:
        rt.dispatch_encoded(wire, encode)
    except errors.RuntimeUnavailable:
        pass
    else:
        raise AssertionError("a closed runtime answered from its cache")


def test_the_cache_keeps_to_its_byte_budget() -> None:
    cache = AnswerCache(budget_bytes=1600)
    versions = [object() for _ in range(50)]
    for i, version in enumerate(versions):
        cache.put((i, None), version, b"x" * 100)
    assert len(cache) == 16  # the oldest went first
    assert cache.get((49, None), versions[49]) == b"x" * 100
    assert cache.get((0, None), versions[0]) is None
    assert cache.get((49, None), object()) is None  # another version: a miss
    cache.put((1000, None), object(), b"y" * 101)  # over budget // 16: not kept
    assert cache.get((1000, None), versions[0]) is None
