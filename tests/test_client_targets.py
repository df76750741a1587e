"""The same commands through both targets: the in-process ``Runtime`` and a
``RemoteRuntime`` talking to a real waitress server on loopback.

``target`` is parametrised over both, so every test here runs twice; the
comparison tests run one script on both and assert equal results and the same
error class and code. To put more tests on both targets, take the ``target``
fixture (or ``client_support.open_target``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from worker_runtime import RuntimeAPI, errors
from worker_runtime import commands as c
from worker_runtime.domain import ConfigBundleRef, ProfileSelector, WorkerIntent, WorkerStatus

from .support.client_support import TARGETS, normalize, open_target, run_end

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[RuntimeAPI]:
    with open_target(request.param) as api:
        yield api


Step = Callable[[RuntimeAPI], Any]


def outcome(api: RuntimeAPI, step: Step) -> Any:
    """A step's normalised result, or its error as (class, code, details)."""
    try:
        return normalize(step(api))
    except errors.WorkerRuntimeError as exc:
        return (type(exc), exc.code, normalize(exc.details))


def echo(api: RuntimeAPI, worker_id: str, content: str) -> Any:
    ack = api.dispatch(c.SendInput(worker_id=worker_id, content=content))
    return ack, run_end(api, ack.run_id, ack.event_id)


def _first_run(api: RuntimeAPI) -> str:
    return api.dispatch(c.ListRuns(worker_id="scout", limit=1)).runs[0].run_id


SCRIPT: list[tuple[str, Step]] = [
    ("runtime", lambda a: a.dispatch(c.GetRuntime())),
    ("create", lambda a: a.dispatch(c.CreateWorker(worker_id="scout", display_name="Scout"))),
    (
        "create task",
        lambda a: a.dispatch(
            c.CreateWorker(
                worker_id="task-1",
                intent=WorkerIntent(kind="task", objective="map it"),
                profile=ProfileSelector(kind="builtin", value="echo"),
                config_bundle=ConfigBundleRef(id="b-1"),
            )
        ),
    ),
    ("get", lambda a: a.dispatch(c.GetWorker(worker_id="scout"))),
    ("list", lambda a: a.dispatch(c.ListWorkers())),
    ("list page", lambda a: a.dispatch(c.ListWorkers(limit=1, after="scout"))),
    ("list idle", lambda a: a.dispatch(c.ListWorkers(status=WorkerStatus.IDLE))),
    ("echo", lambda a: echo(a, "scout", "hello there")),
    ("transcript", lambda a: a.dispatch(c.GetTranscript(worker_id="scout", start=0, limit=10))),
    ("transcript tail", lambda a: a.dispatch(c.GetTranscript(worker_id="scout", start=1))),
    ("cancel idle", lambda a: a.dispatch(c.CancelRun(worker_id="scout"))),
    ("stop", lambda a: a.dispatch(c.StopWorker(worker_id="task-1", reason="done"))),
    ("stop again", lambda a: a.dispatch(c.StopWorker(worker_id="task-1"))),
    ("events", lambda a: a.dispatch(c.ReadEvents(cursor=1, limit=50))),
    ("events tail", lambda a: a.dispatch(c.ReadEvents(cursor=4, limit=2))),
    ("diagnostics", lambda a: a.dispatch(c.GetDiagnostics())),
    (
        "keyed create",
        lambda a: [
            a.dispatch(c.CreateWorker(worker_id="k"), idempotency_key="key-1") for _ in range(2)
        ],
    ),
    (
        "keyed delete",
        lambda a: [
            a.dispatch(c.CreateWorker(worker_id="gone")),
            a.dispatch(c.StopWorker(worker_id="gone")),
            # A repeat (a retry whose answer was lost) replays the ack.
            *[a.dispatch(c.DeleteWorker(worker_id="gone"), idempotency_key="del-1") for _ in "12"],
        ],
    ),
    ("get run", lambda a: a.dispatch(c.GetRun(worker_id="scout", run_id=_first_run(a)))),
    # errors
    ("deleted", lambda a: a.dispatch(c.DeleteWorker(worker_id="gone"))),
    ("delete idle", lambda a: a.dispatch(c.DeleteWorker(worker_id="scout"))),
    (
        "wait too long for a run",
        lambda a: a.dispatch(c.GetRun(worker_id="scout", run_id="r", wait=99)),
    ),
    ("missing", lambda a: a.dispatch(c.GetWorker(worker_id="nobody"))),
    ("input to missing", lambda a: a.dispatch(c.SendInput(worker_id="nobody", content="x"))),
    ("exists", lambda a: a.dispatch(c.CreateWorker(worker_id="scout"))),
    ("stopped", lambda a: a.dispatch(c.SendInput(worker_id="task-1", content="x"))),
    ("bad id", lambda a: a.dispatch(c.GetWorker(worker_id="bad id!"))),
    ("dot id", lambda a: a.dispatch(c.GetTranscript(worker_id=".."))),
    (
        "unknown profile",
        lambda a: a.dispatch(c.CreateWorker(profile=ProfileSelector(kind="named", value="nope"))),
    ),
    ("limit too large", lambda a: a.dispatch(c.ListWorkers(limit=10**6))),
    ("limit zero", lambda a: a.dispatch(c.ListWorkers(limit=0))),
    ("wait too long", lambda a: a.dispatch(c.ReadEvents(wait=999))),
    ("empty input", lambda a: a.dispatch(c.SendInput(worker_id="scout", content=""))),
    (
        "key reused",
        lambda a: a.dispatch(c.CreateWorker(worker_id="other"), idempotency_key="key-1"),
    ),
    ("bad key", lambda a: a.dispatch(c.GetRuntime(), idempotency_key="")),
]


DETAILS_DIFFER = {
    # The runtime's wire schema refuses an empty content before the handler's own
    # check runs (``{field: "/content", reason}``; in-process the handler's
    # ``{field: "content", maximum}``): the core's two paths differ, not the client.
    "empty input",
}
"""Error steps whose class and code agree but whose details do not (yet)."""


def test_one_script_gives_equal_results_and_errors_on_both_targets() -> None:
    outcomes: dict[str, list[Any]] = {}
    for kind in TARGETS:
        with open_target(kind) as api:
            outcomes[kind] = [(name, outcome(api, step)) for name, step in SCRIPT]
    local, remote = outcomes["in-process"], outcomes["remote"]
    for (name, mine), (_, theirs) in zip(local, remote, strict=True):
        if name in DETAILS_DIFFER:
            assert mine[:2] == theirs[:2], name
            assert mine[2] != theirs[2], f"{name} agrees now: drop it from DETAILS_DIFFER"
        else:
            assert mine == theirs, name
    errors_seen = {name: o[:2] for name, o in local if isinstance(o, tuple)}
    assert errors_seen["missing"] == (errors.WorkerNotFound, "worker_not_found")
    assert errors_seen["limit zero"] == (errors.InvalidRequest, "invalid_request")
    assert errors_seen["deleted"] == (errors.WorkerNotFound, "worker_not_found")
    assert errors_seen["delete idle"] == (errors.WorkerNotStopped, "worker_not_stopped")
    assert len(errors_seen) == 16, "an error step unexpectedly succeeded"


def test_a_post_with_a_malformed_idempotency_key_is_refused_alike(target: RuntimeAPI) -> None:
    with pytest.raises(errors.InvalidRequest) as refused:
        target.dispatch(c.CreateWorker(), idempotency_key="")
    assert refused.value.code == "invalid_request"


def test_errors_keep_their_details(target: RuntimeAPI) -> None:
    with pytest.raises(errors.WorkerNotFound) as missing:
        target.dispatch(c.StopWorker(worker_id="ghost"))
    assert missing.value.details == {"worker_id": "ghost"}
    assert isinstance(missing.value, LookupError)
    with pytest.raises(errors.LimitTooLarge) as large:
        target.dispatch(c.GetTranscript(worker_id="ghost", limit=10**6))
    assert large.value.details["maximum"] == 256


def test_follow_yields_one_workers_events_in_order(target: RuntimeAPI) -> None:
    target.dispatch(c.CreateWorker(worker_id="a"))
    target.dispatch(c.CreateWorker(worker_id="b"))
    ack_b = target.dispatch(c.SendInput(worker_id="b", content="noise"))
    ack_a = target.dispatch(c.SendInput(worker_id="a", content="hi"))
    seen = []
    for event in target.follow(worker_id="a", cursor=1):
        assert event.worker_ref is not None and event.worker_ref.worker_id == "a"
        seen.append(event.type)
        if event.run_id == ack_a.run_id and event.type == "run_completed":
            break
    assert seen[0] == "worker_created"
    assert seen[-4:] == ["input_accepted", "run_started", "run_output", "run_completed"]
    assert run_end(target, ack_b.run_id, ack_b.event_id).type == "run_completed"


def test_one_client_serves_many_threads(target: RuntimeAPI) -> None:
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                wid = f"t{n}-{i}"
                created = target.dispatch(c.CreateWorker(worker_id=wid))
                assert target.dispatch(c.GetWorker(worker_id=wid)) == created
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert target.dispatch(c.GetRuntime()).workers.total == 80
