"""Retries, idempotency keys and odd answers: the client behind a loopback proxy
that drops connections, answers 503 with ``Retry-After``, or talks nonsense."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from worker_runtime import commands as c
from worker_runtime import errors
from worker_runtime.client import ClientClosed, InvalidResponse, RemoteRuntime, RuntimeUnreachable

from .support.client_support import Proxy, run_end
from .support.server import TOKEN, Server, serve

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve() as running:
        yield running


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    with Proxy(server.port) as running:
        yield running


class Pauses(list[float]):
    """Records the client's pauses instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_a_post_whose_answer_is_lost_is_retried_and_applied_once(proxy: Proxy) -> None:
    with RemoteRuntime(proxy.url, token=TOKEN, pause=Pauses()) as rt:
        rt.dispatch(c.CreateWorker(worker_id="once"))
        proxy.rules.drop_after_forward = lambda method, path: path.endswith("/input")
        ack = rt.dispatch(c.SendInput(worker_id="once", content="just once"))
        assert run_end(rt, ack.run_id, ack.event_id).type == "run_completed"
        posts = [(m, p, h) for m, p, h in proxy.rules.seen if p.endswith("/input")]
        assert len(posts) == 2, "the lost answer was not retried"
        assert posts[0][2]["Idempotency-Key"] == posts[1][2]["Idempotency-Key"]
        page = rt.dispatch(c.GetTranscript(worker_id="once"))
        assert [e.content for e in page.items] == ["just once", "just once"]  # input, echo
        assert rt.dispatch(c.GetWorker(worker_id="once")).usage.inputs == 1


def test_a_delete_whose_answer_is_lost_is_retried_and_answers_its_ack(proxy: Proxy) -> None:
    with RemoteRuntime(proxy.url, token=TOKEN, pause=Pauses()) as rt:
        rt.dispatch(c.CreateWorker(worker_id="gone"))
        rt.dispatch(c.StopWorker(worker_id="gone"))
        proxy.rules.drop_after_forward = lambda method, path: method == "DELETE"
        ack = rt.dispatch(c.DeleteWorker(worker_id="gone"))
        assert ack.worker_ref.worker_id == "gone"
        deletes = [h for m, _p, h in proxy.rules.seen if m == "DELETE"]
        assert len(deletes) == 2, "the lost answer was not retried"
        assert deletes[0]["Idempotency-Key"] == deletes[1]["Idempotency-Key"]
        (event,) = rt.dispatch(c.ReadEvents(cursor=ack.event_id, limit=1)).events
        assert event.type == "worker_deleted"
        with pytest.raises(errors.WorkerNotFound):
            rt.dispatch(c.GetWorker(worker_id="gone"))
        # A new call (a new key) finds nothing to delete.
        with pytest.raises(errors.WorkerNotFound):
            rt.dispatch(c.DeleteWorker(worker_id="gone"))


def test_every_state_changing_operation_documents_the_idempotency_key(server: Server) -> None:
    """The client sends a key on each route that changes state: the served OpenAPI
    document offers the header on exactly those (DELETE included)."""
    paths = server.request("GET", "/v1/openapi.json").json()["paths"]
    keyed = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", []))
    }
    changing = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in ("post", "delete")
    }
    assert keyed == changing
    assert ("DELETE", "/v1/workers/{worker_id}") in keyed


def test_each_call_gets_its_own_key_and_the_callers_key_is_sent(proxy: Proxy) -> None:
    with RemoteRuntime(proxy.url, token=TOKEN) as rt:
        rt.dispatch(c.CreateWorker(worker_id="k1"))
        rt.dispatch(c.CreateWorker(worker_id="k2"))
        first = rt.dispatch(c.CreateWorker(worker_id="k3"), idempotency_key="mine-1")
        again = rt.dispatch(c.CreateWorker(worker_id="k3"), idempotency_key="mine-1")
        assert first == again
    keys = [h.get("Idempotency-Key") for m, _p, h in proxy.rules.seen if m == "POST"]
    assert len(set(keys[:2])) == 2 and all(keys[:2])
    assert keys[2:] == ["mine-1", "mine-1"]
    assert all("Idempotency-Key" not in h for m, _p, h in proxy.rules.seen if m == "GET")


def test_a_503_is_retried_after_its_retry_after(proxy: Proxy) -> None:
    pauses = Pauses()
    proxy.rules.unavailable, proxy.rules.retry_after = 2, "3"
    with RemoteRuntime(proxy.url, token=TOKEN, retries=3, pause=pauses) as rt:
        info = rt.dispatch(c.GetRuntime())
    assert info.status == "running"
    assert pauses == [3.0, 3.0]
    assert len(proxy.rules.seen) == 3


def test_a_503_past_the_retries_raises_its_typed_error(proxy: Proxy) -> None:
    pauses = Pauses()
    proxy.rules.unavailable, proxy.rules.retry_after = 10, None
    with (
        RemoteRuntime(proxy.url, token=TOKEN, retries=2, pause=pauses) as rt,
        pytest.raises(errors.RuntimeUnavailable) as unavailable,
    ):
        rt.dispatch(c.CreateWorker(worker_id="never"))
    assert unavailable.value.code == "runtime_unavailable"
    assert len(pauses) == 2 and all(0 < p <= 2 for p in pauses)  # backoff without a hint
    assert len(proxy.rules.seen) == 3


def test_a_dead_server_raises_runtime_unreachable_after_the_retries() -> None:
    pauses = Pauses()
    with (
        Proxy(upstream=None) as proxy,
        RemoteRuntime(proxy.url, token=TOKEN, pause=pauses) as rt,
        pytest.raises(RuntimeUnreachable) as unreachable,
    ):
        rt.dispatch(c.GetRuntime())
    assert isinstance(unreachable.value, errors.RuntimeUnavailable)
    assert unreachable.value.details["attempts"] == 4
    assert len(pauses) == 3 and all(0 < p <= 2 for p in pauses)


def test_nothing_listening_is_unreachable_too(server: Server) -> None:
    with Proxy() as proxy:
        url = proxy.url  # a port that was just ours and is closed now
    with (
        RemoteRuntime(url, token=TOKEN, retries=1, pause=Pauses()) as rt,
        pytest.raises(RuntimeUnreachable),
    ):
        rt.dispatch(c.GetRuntime())


def test_a_connection_the_server_closed_while_idle_is_replaced(server: Server) -> None:
    with RemoteRuntime(server.base_url, token=TOKEN, retries=0) as rt:
        rt.dispatch(c.GetRuntime())
        # Close the pooled connection's socket under the client's feet, as a
        # server's keep-alive timeout would.
        (conn,) = rt._transport._idle
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        assert rt.dispatch(c.GetRuntime()).status == "running"


def test_an_unknown_error_code_raises_the_base_class_with_that_code(proxy: Proxy) -> None:
    body = b'{"error":{"code":"brand_new","message":"later","details":{"x":1}}}'
    proxy.rules.canned = (409, body)
    with (
        RemoteRuntime(proxy.url, token=TOKEN) as rt,
        pytest.raises(errors.WorkerRuntimeError) as raised,
    ):
        rt.dispatch(c.GetRuntime())
    assert type(raised.value) is errors.WorkerRuntimeError
    assert (raised.value.code, raised.value.message, raised.value.details) == (
        "brand_new",
        "later",
        {"x": 1},
    )
    assert raised.value.to_json()["code"] == "brand_new"


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b"<html>oops</html>"), (200, b'{"nope": 1}'), (200, b"[1]"), (404, b"{}")],
)
def test_an_answer_that_is_not_the_api_raises_invalid_response(
    proxy: Proxy, status: int, body: bytes
) -> None:
    proxy.rules.canned = (status, body)
    with (
        RemoteRuntime(proxy.url, token=TOKEN) as rt,
        pytest.raises(InvalidResponse) as raised,
    ):
        rt.dispatch(c.GetWorker(worker_id="w"))
    assert raised.value.code == "invalid_response"


def test_bad_urls_are_config_errors() -> None:
    for url in ("ftp://x", "127.0.0.1:8780", "http://"):
        with pytest.raises(errors.ConfigError):
            RemoteRuntime(url, token=TOKEN)


def test_a_closed_client_refuses_new_calls(server: Server) -> None:
    rt = RemoteRuntime(server.base_url, token=TOKEN)
    rt.close()
    with pytest.raises(ClientClosed):
        rt.dispatch(c.GetRuntime())
    with pytest.raises(ClientClosed):
        next(rt.follow())


@pytest.mark.parametrize("status", [502, 503])
def test_a_proxys_bodiless_502_or_503_is_runtime_unavailable_and_retried(
    proxy: Proxy, status: int
) -> None:
    """A load balancer's page while the runtime restarts: retried, then
    ``RuntimeUnavailable`` naming the status and the ``Retry-After``."""
    pauses = Pauses()
    proxy.rules.canned = (status, b"<html>the runtime is restarting</html>")
    proxy.rules.canned_headers = {"Content-Type": "text/html", "Retry-After": "2"}
    with (
        RemoteRuntime(proxy.url, token=TOKEN, retries=2, pause=pauses) as rt,
        pytest.raises(errors.RuntimeUnavailable) as unavailable,
    ):
        rt.dispatch(c.GetRuntime())
    assert type(unavailable.value) is errors.RuntimeUnavailable
    assert unavailable.value.code == "runtime_unavailable"
    assert unavailable.value.details == {"status": status, "retry_after_s": 2.0}
    assert pauses == [2.0, 2.0]
    assert len(proxy.rules.seen) == 3


def test_a_proxys_bodiless_504_is_an_operation_timeout(proxy: Proxy) -> None:
    pauses = Pauses()
    proxy.rules.canned = (504, b"<html>gateway timeout</html>")
    with (
        RemoteRuntime(proxy.url, token=TOKEN, pause=pauses) as rt,
        pytest.raises(errors.OperationTimeout) as timeout,
    ):
        rt.dispatch(c.GetWorker(worker_id="w"))
    assert (timeout.value.code, timeout.value.details) == ("operation_timeout", {"status": 504})
    assert isinstance(timeout.value, TimeoutError)
    assert (pauses, len(proxy.rules.seen)) == ([], 1)  # the server's own 504 is not retried


def test_follow_rides_out_a_proxys_bodiless_503s(server: Server, proxy: Proxy) -> None:
    """More 503 pages than the client retries: follow backs off and goes on
    (an ``InvalidResponse`` would end it)."""
    pauses = Pauses()
    with (
        RemoteRuntime(proxy.url, token=TOKEN, retries=1, pause=pauses) as rt,
        RemoteRuntime(server.base_url, token=TOKEN) as direct,
    ):
        direct.dispatch(c.CreateWorker(worker_id="lb"))
        events = rt.follow(worker_id="lb", cursor=1)
        assert next(events).type == "worker_created"
        proxy.rules.unavailable_body = b"<html>restarting</html>"
        proxy.rules.retry_after = None
        proxy.rules.unavailable = 5
        direct.dispatch(c.StopWorker(worker_id="lb"))
        assert next(events).type == "worker_stopped"
    assert proxy.rules.unavailable == 0
    assert len(pauses) == 5  # 3 by the client's retries, 2 by follow's own backoff
