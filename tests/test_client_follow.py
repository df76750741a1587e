"""``follow`` across a server restart (fs store): the client reconnects and
yields every event once, in order, none lost and none repeated; over a hung
server it backs off and goes on; following a worker ends at its deletion."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from worker_runtime import Runtime
from worker_runtime import commands as c
from worker_runtime.client import RemoteRuntime, remote
from worker_runtime.domain import Event
from worker_runtime.testing import TERMINAL_EVENTS, wait_until

from .support.client_support import Proxy
from .support.served import serving
from .support.server import TOKEN, serve, start, stop

pytestmark = pytest.mark.timeout(120)


def next_end(events: queue.Queue[Event], run_id: str, seen: list[Event]) -> Event:
    """Collect followed events into ``seen`` until ``run_id`` ends."""
    deadline = time.monotonic() + 30
    while True:
        event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(event)
        if event.run_id == run_id and event.type in TERMINAL_EVENTS:
            return event


def test_follow_survives_a_restart_without_losing_or_repeating_events(tmp_path: Path) -> None:
    env = {
        "WORKER_RUNTIME_STORE": "fs",
        "WORKER_RUNTIME_DATA_DIR": str(tmp_path),
        "WORKER_RUNTIME_ID": "rt-follow",
    }
    server = start(env)
    proxy = Proxy(server.port)  # a stable address across the restart
    events: queue.Queue[Event] = queue.Queue()
    done = threading.Event()
    rt = RemoteRuntime(proxy.url, token=TOKEN, retries=2)

    def follower() -> None:
        for event in rt.follow(cursor=1):
            events.put(event)
            if done.is_set():
                return

    thread = threading.Thread(target=follower, daemon=True)
    try:
        thread.start()
        rt.dispatch(c.CreateWorker(worker_id="w"))
        seen: list[Event] = []
        ack = rt.dispatch(c.SendInput(worker_id="w", content="before"))
        assert next_end(events, ack.run_id, seen).type == "run_completed"

        stop(server)  # the follower's long poll is cut; it backs off and retries
        server = start(env)
        proxy.upstream = server.port

        ack = rt.dispatch(c.SendInput(worker_id="w", content="after"))
        assert next_end(events, ack.run_id, seen).type == "run_completed"
        ids = [e.event_id for e in seen]
        assert ids == list(range(1, ids[-1] + 1)), "an event was lost or repeated"
        assert [e.type for e in seen].count("runtime_started") == 2
        logged = rt.dispatch(c.ReadEvents(cursor=1, limit=1000)).events
        assert [e.event_id for e in logged] == ids
        done.set()
        rt.dispatch(c.CreateWorker(worker_id="wake"))  # one more event ends the follower
        thread.join(30)
        assert not thread.is_alive()
    finally:
        done.set()
        rt.close()
        proxy.close()
        stop(server)


class Pauses(list[float]):
    """Records the client's pauses instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_follow_backs_off_over_a_long_poll_that_never_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung server (it reads the request and says nothing) ends the poll at the
    client's timeout: ``operation_timeout``, which ``follow`` waits out like an
    unavailable server instead of raising."""
    monkeypatch.setattr(remote, "WAIT_MARGIN_S", 0.0)  # time out 2 s past the wait
    pauses = Pauses()
    with (
        serve({"WORKER_RUNTIME_MAX_EVENT_WAIT_S": "1"}) as server,
        Proxy(server.port) as proxy,
        RemoteRuntime(proxy.url, token=TOKEN, timeout=2, retries=0, pause=pauses) as rt,
    ):
        rt.dispatch(c.CreateWorker(worker_id="w"))
        proxy.rules.hang = lambda method, path: path.startswith("/v1/events")
        first = next(rt.follow(worker_id="w", cursor=1))
        polls = [path for _m, path, _h in proxy.rules.seen if path.startswith("/v1/events")]
    assert first.type == "worker_created"
    assert len(polls) == 2, polls  # the hung one, then the one answered
    assert len(pauses) == 1 and 0 < pauses[0] <= 5  # one backoff between them


def test_following_a_worker_ends_after_its_deletion() -> None:
    with serve() as server, RemoteRuntime(server.base_url, token=TOKEN) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        rt.dispatch(c.StopWorker(worker_id="w"))
        seen: list[Event] = []
        failed: list[BaseException] = []

        def follower() -> None:
            try:
                seen.extend(rt.follow(worker_id="w"))
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=follower, daemon=True)
        thread.start()
        # Its long poll is held on the server: the delete wakes it.
        wait_until(lambda: rt.dispatch(c.GetRuntime()).waiters == 1, 30, "a held poll")
        deleted = rt.dispatch(c.DeleteWorker(worker_id="w"))
        thread.join(30)
        assert not thread.is_alive(), "follow did not end"
        assert failed == []
        assert [(e.type, e.event_id) for e in seen] == [("worker_deleted", deleted.event_id)]


def test_follow_filters_itself_on_a_server_without_the_worker_filter() -> None:
    """A server that refuses ``worker_id`` on ``GET /v1/events`` (an older one):
    the client reads unfiltered and keeps only that worker's events."""
    with Runtime.open() as runtime, serving(runtime) as server, Proxy(server.port) as proxy:
        proxy.rules.refused_parameter = "worker_id"
        with RemoteRuntime(proxy.url, token=TOKEN) as rt:
            rt.dispatch(c.CreateWorker(worker_id="mine"))
            rt.dispatch(c.CreateWorker(worker_id="other"))
            rt.dispatch(c.StopWorker(worker_id="other"))
            rt.dispatch(c.StopWorker(worker_id="mine"))
            seen = []
            for event in rt.follow(worker_id="mine", cursor=1):
                assert event.worker_ref is not None
                seen.append((event.type, event.worker_ref.worker_id))
                if event.type == "worker_stopped":
                    break
        assert seen == [("worker_created", "mine"), ("worker_stopped", "mine")]
        reads = [path for method, path, _ in proxy.rules.seen if path.startswith("/v1/events")]
        assert "worker_id=mine" in reads[0]  # tried once,
        assert all("worker_id" not in path for path in reads[1:])  # then read unfiltered
