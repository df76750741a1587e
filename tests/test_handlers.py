"""Unit tests per handler, and every error code the core raises, through the dispatcher.

Each test that dispatches runs on both targets (``target``): the in-process
``Runtime``, and a ``RemoteRuntime`` talking to that same runtime served by a
real waitress server on loopback (``support.served``), while the test keeps
driving its engines in-process. Results must be equal, errors the same class
and code (and, compared case by case, the same details).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from worker_runtime import Runtime, RuntimeAPI, RuntimeConfig, errors
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime.domain import (
    MAX_REASON_CHARS,
    CapabilityRequest,
    ConfigBundleRef,
    InputKind,
    ProfileSelector,
    Role,
    RunStatus,
    Severity,
    WorkerIntent,
    WorkerStatus,
)
from worker_runtime.stores import MemoryStore
from worker_runtime.testing import (
    GateEngine,
    make_runtime,
    named,
    state_lock_held_elsewhere,
    wait_for_run_end,
)

from .support.client_support import normalize
from .support.served import TARGETS, on_target


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    """``in-process`` or ``remote``."""
    return str(request.param)


@dataclass
class Env:
    rt: Runtime
    """The runtime itself: its engines and its close are the test's."""
    api: RuntimeAPI
    """What the test dispatches through: ``rt``, or a ``RemoteRuntime`` serving it."""
    gate: GateEngine

    def running_worker(self, worker_id: str = "busy") -> r.InputAck:
        """A worker whose run is held open by the gate engine."""
        self.api.dispatch(c.CreateWorker(worker_id=worker_id, profile=named("gate")))
        ack = self.api.dispatch(c.SendInput(worker_id=worker_id, content="hold"))
        self.gate.wait_started(ack.run_id)
        return ack


@contextmanager
def open_env(target: str) -> Iterator[Env]:
    gate = GateEngine()
    rt = make_runtime({"gate": gate}, display_name="test", cancel_grace_s=2.0)
    try:
        with on_target(target, rt) as api:
            yield Env(rt, api, gate)
    finally:
        gate.open_all()
        rt.close()


@pytest.fixture
def env(target: str) -> Iterator[Env]:
    with open_env(target) as opened:
        yield opened


@pytest.fixture
def api(target: str) -> Iterator[RuntimeAPI]:
    """An embedded runtime (memory store, echo engine; as conftest's ``runtime``),
    on ``target``."""
    rt = Runtime.open(RuntimeConfig(runtime_id="rt-test", display_name="test"))
    try:
        with on_target(target, rt) as opened:
            yield opened
    finally:
        rt.close()


def echo(rt: RuntimeAPI, worker_id: str, content: str) -> r.InputAck:
    """Send ``content`` to an echo worker and wait for its run to end."""
    ack = rt.dispatch(c.SendInput(worker_id=worker_id, content=content))
    assert wait_for_run_end(rt, ack.run_id).type == "run_completed"
    return ack


# -- GetRuntime --------------------------------------------------------------------


def test_get_runtime_describes_a_fresh_runtime(api: RuntimeAPI) -> None:
    info = api.dispatch(c.GetRuntime())
    assert (info.runtime_id, info.display_name, info.store, info.status) == (
        "rt-test",
        "test",
        "memory",
        "running",
    )
    assert info.workers == r.WorkerCounts(idle=0, running=0, stopped=0, total=0)
    assert info.active_runs == 0
    assert info.last_event_id == 1  # runtime_started
    assert [(p.name, p.kind, p.engine) for p in info.profiles] == [("echo", "builtin", "echo")]
    assert "echo" in info.engines
    assert info.limits.max_transcript_page == 256


def test_get_runtime_counts_workers_by_status(env: Env) -> None:
    env.api.dispatch(c.CreateWorker(worker_id="idle"))
    env.api.dispatch(c.CreateWorker(worker_id="gone"))
    env.api.dispatch(c.StopWorker(worker_id="gone"))
    env.running_worker()
    info = env.api.dispatch(c.GetRuntime())
    assert info.workers == r.WorkerCounts(idle=1, running=1, stopped=1, total=3)
    assert info.active_runs == 1
    assert info.diagnostic_count == 3  # one created_without_config_bundle each


# -- CreateWorker / GetWorker ------------------------------------------------------


def test_create_worker_with_defaults(api: RuntimeAPI) -> None:
    worker = api.dispatch(c.CreateWorker())
    assert worker.worker_id.startswith("w-")
    assert worker.status is WorkerStatus.IDLE
    assert worker.intent == WorkerIntent(kind="assistant")
    assert worker.profile == ProfileSelector(kind="runtime_default")
    assert worker.worker_ref.runtime_id == "rt-test"
    assert worker.display_ref == f"{worker.worker_id}@test"
    assert (worker.transcript_len, worker.active_run, worker.last_run) == (0, None, None)
    assert api.dispatch(c.GetWorker(worker_id=worker.worker_id)) == worker


def test_create_worker_keeps_what_was_asked(api: RuntimeAPI) -> None:
    command = c.CreateWorker(
        worker_id="scout-1",
        display_name="Scout",
        intent=WorkerIntent(kind="task", objective="map the repo"),
        profile=ProfileSelector(kind="builtin", value="echo"),
        config_bundle=ConfigBundleRef(id="bundle-7"),
    )
    worker = api.dispatch(command)
    assert worker.worker_id == "scout-1"
    assert worker.display_ref == "Scout@test"
    assert worker.intent == command.intent
    assert worker.profile == command.profile
    assert worker.config_bundle == command.config_bundle


def test_create_worker_emits_an_event_and_notes_a_missing_config_bundle(
    api: RuntimeAPI,
) -> None:
    api.dispatch(c.CreateWorker(worker_id="plain"))
    api.dispatch(c.CreateWorker(worker_id="bundled", config_bundle=ConfigBundleRef(id="b")))
    events = api.dispatch(c.ReadEvents(cursor=2)).events
    assert [(e.type, e.worker_ref and e.worker_ref.worker_id) for e in events] == [
        ("worker_created", "plain"),
        ("worker_created", "bundled"),
    ]
    diagnostics = api.dispatch(c.GetDiagnostics()).diagnostics
    assert [(d.code, d.severity, d.worker_ref and d.worker_ref.worker_id) for d in diagnostics] == [
        ("created_without_config_bundle", Severity.INFO, "plain")
    ]


# -- ListWorkers -------------------------------------------------------------------


def test_list_workers_pages_in_creation_order(api: RuntimeAPI) -> None:
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    for name in names:
        api.dispatch(c.CreateWorker(worker_id=name))
    seen, after = [], None
    while True:
        page = api.dispatch(c.ListWorkers(limit=2, after=after))
        assert len(page.workers) <= 2
        seen += [w.worker_id for w in page.workers]
        if page.next_after is None:
            break
        assert page.next_after == page.workers[-1].worker_id
        after = page.next_after
    assert seen == names


def test_list_workers_filters_by_status_across_pages(api: RuntimeAPI) -> None:
    for i in range(6):
        api.dispatch(c.CreateWorker(worker_id=f"w{i}"))
    for i in (1, 2, 5):
        api.dispatch(c.StopWorker(worker_id=f"w{i}"))
    first = api.dispatch(c.ListWorkers(status=WorkerStatus.STOPPED, limit=2))
    assert [w.worker_id for w in first.workers] == ["w1", "w2"]
    assert first.next_after == "w2"
    rest = api.dispatch(c.ListWorkers(status=WorkerStatus.STOPPED, limit=2, after="w2"))
    assert [w.worker_id for w in rest.workers] == ["w5"]
    assert rest.next_after is None
    # A page that ends exactly at the last match says there is nothing more.
    exact = api.dispatch(c.ListWorkers(status=WorkerStatus.IDLE, limit=3))
    assert [w.worker_id for w in exact.workers] == ["w0", "w3", "w4"]
    assert exact.next_after is None


def test_list_workers_on_an_empty_runtime(api: RuntimeAPI) -> None:
    assert api.dispatch(c.ListWorkers()) == r.WorkerPage(workers=(), next_after=None)


# -- SendInput and the transcript -------------------------------------------------


def test_send_input_acks_and_the_run_replies(api: RuntimeAPI) -> None:
    api.dispatch(c.CreateWorker(worker_id="w"))
    ack = api.dispatch(c.SendInput(worker_id="w", content="hi", kind=InputKind.SYSTEM))
    assert (ack.worker_ref.worker_id, ack.status, ack.transcript_sequence) == (
        "w",
        WorkerStatus.RUNNING,
        0,
    )
    assert wait_for_run_end(api, ack.run_id).type == "run_completed"
    page = api.dispatch(c.GetTranscript(worker_id="w"))
    assert [(e.sequence, e.role, e.content, e.run_id) for e in page.items] == [
        (0, Role.SYSTEM, "hi", ack.run_id),
        (1, Role.ASSISTANT, "hi", ack.run_id),
    ]
    assert page.items[0].event_id == ack.event_id
    detail = api.dispatch(c.GetWorker(worker_id="w"))
    assert detail.status is WorkerStatus.IDLE
    assert detail.last_run is not None and detail.last_run.status is RunStatus.COMPLETED
    assert (detail.usage.inputs, detail.usage.runs_completed, detail.usage.output_chars) == (
        1,
        1,
        2,
    )


def test_transcript_pages(api: RuntimeAPI) -> None:
    api.dispatch(c.CreateWorker(worker_id="w"))
    for word in ("one", "two", "three"):
        echo(api, "w", word)  # 6 entries: input, reply, ...
    page = api.dispatch(c.GetTranscript(worker_id="w", start=1, limit=2))
    assert [e.sequence for e in page.items] == [1, 2]
    assert (page.total_items, page.next_start, page.limit) == (6, 3, 2)
    last = api.dispatch(c.GetTranscript(worker_id="w", start=4, limit=10))
    assert [e.content for e in last.items] == ["three", "three"]
    assert last.next_start is None
    past_end = api.dispatch(c.GetTranscript(worker_id="w", start=99))
    assert (past_end.items, past_end.total_items, past_end.next_start) == ((), 6, None)


# -- CancelRun and StopWorker -----------------------------------------------------


def test_cancel_with_nothing_running_says_so(api: RuntimeAPI) -> None:
    api.dispatch(c.CreateWorker(worker_id="w"))
    ack = api.dispatch(c.CancelRun(worker_id="w"))
    assert (ack.status, ack.cancelled_run_id, ack.run_id, ack.event_id) == (
        WorkerStatus.IDLE,
        None,
        None,
        None,
    )


def test_cancel_ends_the_active_run(env: Env) -> None:
    run = env.running_worker("w")
    ack = env.api.dispatch(c.CancelRun(worker_id="w", reason="changed my mind"))
    assert (ack.status, ack.cancelled_run_id, ack.run_status) == (
        WorkerStatus.IDLE,
        run.run_id,
        "cancelled",
    )
    detail = env.api.dispatch(c.GetWorker(worker_id="w"))
    assert detail.last_run is not None and detail.last_run.run_id == run.run_id
    assert detail.last_error == "cancelled: changed my mind"


def test_cancel_naming_a_finished_run_reports_it_and_spares_the_new_one(env: Env) -> None:
    first = env.running_worker("w")
    env.gate.open(first.run_id)
    wait_for_run_end(env.api, first.run_id)
    second = env.api.dispatch(c.SendInput(worker_id="w", content="again"))
    ack = env.api.dispatch(c.CancelRun(worker_id="w", run_id=first.run_id))
    assert (ack.cancelled_run_id, ack.run_id, ack.run_status) == (None, first.run_id, "completed")
    assert env.api.dispatch(c.GetWorker(worker_id="w")).active_run is not None
    named_active = env.api.dispatch(c.CancelRun(worker_id="w", run_id=second.run_id))
    assert named_active.cancelled_run_id == second.run_id


def test_stop_is_terminal_and_idempotent(env: Env) -> None:
    run = env.running_worker("w")
    ack = env.api.dispatch(c.StopWorker(worker_id="w", reason="retired"))
    assert (ack.status, ack.already_stopped, ack.cancelled_run_id) == (
        WorkerStatus.STOPPED,
        False,
        run.run_id,
    )
    assert ack.event_id is not None
    again = env.api.dispatch(c.StopWorker(worker_id="w"))
    assert (again.already_stopped, again.event_id, again.cancelled_run_id) == (True, None, None)
    detail = env.api.dispatch(c.GetWorker(worker_id="w"))
    assert (detail.status, detail.active_run) == (WorkerStatus.STOPPED, None)
    stopped = env.api.dispatch(c.ReadEvents(cursor=ack.event_id)).events
    assert [e.type for e in stopped] == ["worker_stopped"]
    assert stopped[0].data == {"reason": "retired"}


# -- ReadEvents / GetDiagnostics ---------------------------------------------------


def test_read_events_pages_with_a_cursor(api: RuntimeAPI) -> None:
    for i in range(4):
        api.dispatch(c.CreateWorker(worker_id=f"w{i}"))  # events 2..5
    page = api.dispatch(c.ReadEvents(cursor=0, limit=2))
    assert [e.event_id for e in page.events] == [1, 2]
    assert (page.cursor.next_event_id, page.has_more) == (3, True)
    rest = api.dispatch(c.ReadEvents(cursor=3, limit=10))
    assert [e.event_id for e in rest.events] == [3, 4, 5]
    assert (rest.cursor.next_event_id, rest.has_more) == (6, False)
    empty = api.dispatch(c.ReadEvents(cursor=6))
    assert (empty.events, empty.cursor.next_event_id, empty.has_more) == ((), 6, False)


def test_read_events_waits_and_returns_empty_at_the_deadline(api: RuntimeAPI) -> None:
    page = api.dispatch(c.ReadEvents(cursor=2, wait=0.05))
    assert (page.events, page.cursor.next_event_id) == ((), 2)


# -- every error code --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Frobnicate(c.Command[r.RuntimeInfo]):
    """A command type with no handler."""


def _busy(env: Env) -> None:
    env.running_worker("w")
    env.api.dispatch(c.SendInput(worker_id="w", content="more"))


def _stopped(env: Env) -> None:
    env.api.dispatch(c.CreateWorker(worker_id="w"))
    env.api.dispatch(c.StopWorker(worker_id="w"))
    env.api.dispatch(c.SendInput(worker_id="w", content="hello?"))


def _key_reused(env: Env) -> None:
    env.api.dispatch(c.CreateWorker(worker_id="a"), idempotency_key="k1")
    env.api.dispatch(c.CreateWorker(worker_id="b"), idempotency_key="k1")


def _closed(env: Env) -> None:
    env.rt.close()
    env.api.dispatch(c.GetRuntime())


LONG = "x" * (MAX_REASON_CHARS + 1)
"""A stop or cancel reason one character too long."""

ERROR_CASES: list[tuple[str, Callable[[Env], Any]]] = [
    ("worker_not_found", lambda env: env.api.dispatch(c.GetWorker(worker_id="ghost"))),
    ("worker_not_found", lambda env: env.api.dispatch(c.SendInput(worker_id="ghost", content="x"))),
    ("worker_not_found", lambda env: env.api.dispatch(c.CancelRun(worker_id="ghost"))),
    ("worker_not_found", lambda env: env.api.dispatch(c.StopWorker(worker_id="ghost"))),
    ("worker_not_found", lambda env: env.api.dispatch(c.GetTranscript(worker_id="ghost"))),
    (
        "worker_exists",
        lambda env: [env.api.dispatch(c.CreateWorker(worker_id="twin")) for _ in range(2)],
    ),
    ("worker_busy", _busy),
    ("worker_stopped", _stopped),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.GetWorker(worker_id="../etc"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.CreateWorker(worker_id="a b"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.SendInput(worker_id="", content="x"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.CancelRun(worker_id="-x"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.StopWorker(worker_id="x/y"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.GetTranscript(worker_id="é"))),
    ("invalid_worker_id", lambda env: env.api.dispatch(c.ListWorkers(after="a" * 129))),
    ("invalid_request", lambda env: env.api.dispatch(c.ListWorkers(after="nobody"))),
    ("invalid_request", lambda env: env.api.dispatch(c.GetRun(worker_id="w", run_id="r/1"))),
    ("invalid_request", lambda env: env.api.dispatch(c.CancelRun(worker_id="w", run_id="-r"))),
    ("invalid_request", lambda env: env.api.dispatch(c.StopWorker(worker_id="w", reason=LONG))),
    ("invalid_request", lambda env: env.api.dispatch(c.CancelRun(worker_id="w", reason=LONG))),
    ("invalid_request", lambda env: env.api.dispatch(c.ListWorkers(limit=0))),
    ("invalid_request", lambda env: env.api.dispatch(c.GetTranscript(worker_id="w", start=-1))),
    ("invalid_request", lambda env: env.api.dispatch(c.ReadEvents(cursor=-1))),
    ("invalid_request", lambda env: env.api.dispatch(c.ReadEvents(wait=-0.5))),
    ("invalid_request", lambda env: env.api.dispatch(c.ReadEvents(wait=31))),
    ("invalid_request", lambda env: env.api.dispatch(c.ReadEvents(wait=float("nan")))),
    ("invalid_request", lambda env: env.api.dispatch(c.ReadEvents(wait=float("inf")))),
    ("invalid_request", lambda env: env.api.dispatch(c.CreateWorker(display_name=""))),
    (
        "invalid_request",
        lambda env: env.api.dispatch(c.CreateWorker(intent=WorkerIntent(kind="shaman"))),
    ),
    ("invalid_request", lambda env: env.api.dispatch(c.GetRuntime(), idempotency_key="")),
    ("invalid_request", lambda env: env.api.dispatch(c.GetRuntime(), idempotency_key="é")),
    ("invalid_request", lambda env: env.api.dispatch(c.GetRuntime(), idempotency_key="k" * 256)),
    ("limit_too_large", lambda env: env.api.dispatch(c.ListWorkers(limit=1001))),
    ("limit_too_large", lambda env: env.api.dispatch(c.GetTranscript(worker_id="w", limit=257))),
    ("limit_too_large", lambda env: env.api.dispatch(c.ReadEvents(limit=1001))),
    ("unknown_profile", lambda env: env.api.dispatch(c.CreateWorker(profile=named("nope")))),
    (
        "unknown_profile",
        lambda env: env.api.dispatch(
            c.CreateWorker(profile=ProfileSelector(kind="builtin", value="gate"))
        ),
    ),
    (
        "unsupported_capability",
        lambda env: env.api.dispatch(
            c.CreateWorker(requested_capabilities=(CapabilityRequest(name="shell"),))
        ),
    ),
    ("unsupported_operation", lambda env: env.api.dispatch(Frobnicate())),
    ("unsupported_operation", lambda env: env.api.dispatch("GetRuntime")),  # type: ignore[arg-type]
    ("idempotency_key_reused", _key_reused),
    ("runtime_unavailable", _closed),
]


@pytest.mark.parametrize(("code", "scenario"), ERROR_CASES)
def test_error_codes(env: Env, code: str, scenario: Callable[[Env], Any]) -> None:
    with pytest.raises(errors.WorkerRuntimeError) as caught:
        scenario(env)
    assert caught.value.code == code
    assert caught.value.to_json()["code"] == code
    assert type(caught.value).code == code  # the class of that code, on both targets


def _refusal(target: str, scenario: Callable[[Env], Any]) -> tuple[type, str, Any]:
    with open_env(target) as env, pytest.raises(errors.WorkerRuntimeError) as caught:
        scenario(env)
    return type(caught.value), caught.value.code, normalize(caught.value.details)


@pytest.mark.parametrize(("code", "scenario"), ERROR_CASES)
def test_error_cases_are_refused_alike_on_both_targets(
    code: str, scenario: Callable[[Env], Any]
) -> None:
    """The same class, code and details in-process and remotely (generated run
    ids aside)."""
    local, remote = (_refusal(target, scenario) for target in TARGETS)
    assert local == remote
    assert local[1] == code


def test_every_core_error_code_has_a_case() -> None:
    covered = {code for code, _ in ERROR_CASES} | {"operation_timeout", "runtime_unavailable"}
    assert covered == {
        "worker_not_found",
        "worker_exists",
        "worker_busy",
        "worker_stopped",
        "invalid_request",
        "invalid_worker_id",
        "limit_too_large",
        "unknown_profile",
        "unsupported_capability",
        "unsupported_operation",
        "operation_timeout",
        "runtime_unavailable",
        "idempotency_key_reused",
    }


def test_errors_point_at_the_field(api: RuntimeAPI) -> None:
    with pytest.raises(errors.LimitTooLarge) as caught:
        api.dispatch(c.ListWorkers(limit=5000))
    assert caught.value.details == {"field": "limit", "maximum": 1000}
    with pytest.raises(errors.InvalidWorkerId) as bad_id:
        api.dispatch(c.GetWorker(worker_id="../x"))
    assert bad_id.value.details == {"field": "worker_id"}


def test_operation_timeout_when_the_state_lock_is_held(target: str) -> None:
    rt = Runtime.open(RuntimeConfig(operation_timeout_s=0.05))
    with (
        rt,
        on_target(target, rt) as api,
        state_lock_held_elsewhere(rt),
        pytest.raises(errors.OperationTimeout) as caught,
    ):
        api.dispatch(c.GetRuntime())
    assert caught.value.code == "operation_timeout"
    assert isinstance(caught.value, TimeoutError)


class FailingSyncStore(MemoryStore):
    """A store whose flush fails once ``broken`` is set, as a full disk would."""

    broken = False

    def sync(self) -> None:
        if self.broken:
            raise errors.RuntimeUnavailable("the disk is full")


def test_a_failed_sync_makes_the_runtime_unavailable(target: str) -> None:
    store = FailingSyncStore("rt-sync")
    with Runtime.open(RuntimeConfig(), store=store) as rt, on_target(target, rt) as api:
        api.dispatch(c.CreateWorker(worker_id="before"))
        store.broken = True
        with pytest.raises(errors.RuntimeUnavailable):
            api.dispatch(c.CreateWorker(worker_id="during"))
        store.broken = False
        # No write is acknowledged after a failed flush; reads still answer.
        with pytest.raises(errors.RuntimeUnavailable) as caught:
            api.dispatch(c.CreateWorker(worker_id="after"))
        assert caught.value.details == {"retry_after_s": 1}
        with pytest.raises(errors.RuntimeUnavailable):
            api.dispatch(c.SendInput(worker_id="before", content="x"))
        assert api.dispatch(c.GetRuntime()).status == "unavailable"
        assert api.dispatch(c.GetWorker(worker_id="before")).status is WorkerStatus.IDLE


class ClosingStore(FailingSyncStore):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_close_releases_the_store_even_when_its_flush_fails() -> None:
    store = ClosingStore("rt-close")
    rt = Runtime.open(RuntimeConfig(), store=store)
    rt.dispatch(c.CreateWorker(worker_id="w"))
    store.broken = True
    with pytest.raises(errors.RuntimeUnavailable):
        rt.close()
    assert store.closed


# -- idempotency keys --------------------------------------------------------------


def test_a_repeated_key_replays_the_first_result(api: RuntimeAPI) -> None:
    first = api.dispatch(c.CreateWorker(display_name="once"), idempotency_key="create-1")
    again = api.dispatch(c.CreateWorker(display_name="once"), idempotency_key="create-1")
    assert again == first
    assert api.dispatch(c.GetRuntime()).workers.total == 1

    ack = api.dispatch(c.SendInput(worker_id=first.worker_id, content="hi"), idempotency_key="in-1")
    wait_for_run_end(api, ack.run_id)
    replay = api.dispatch(
        c.SendInput(worker_id=first.worker_id, content="hi"), idempotency_key="in-1"
    )
    assert replay == ack
    assert api.dispatch(c.GetTranscript(worker_id=first.worker_id)).total_items == 2


def test_a_failed_attempt_is_not_remembered(api: RuntimeAPI) -> None:
    with pytest.raises(errors.WorkerNotFound):
        api.dispatch(c.SendInput(worker_id="late", content="x"), idempotency_key="k")
    api.dispatch(c.CreateWorker(worker_id="late"))
    ack = api.dispatch(c.SendInput(worker_id="late", content="x"), idempotency_key="k")
    assert ack.transcript_sequence == 0


def test_concurrent_repeats_of_one_key_do_the_work_once(api: RuntimeAPI) -> None:
    results: list[r.WorkerDetail] = []

    def create() -> None:
        results.append(api.dispatch(c.CreateWorker(), idempotency_key="same"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert len({w.worker_id for w in results}) == 1
    assert api.dispatch(c.GetRuntime()).workers.total == 1


def test_dispatch_json_runs_a_wire_command(runtime: Runtime) -> None:
    created = runtime.dispatch_json(
        {"command": "CreateWorker", "args": {"worker_id": "w", "intent": {"kind": "assistant"}}}
    )
    assert created["worker_ref"] == {"runtime_id": "rt-test", "worker_id": "w"}
    assert runtime.dispatch_json({"command": "GetWorker", "args": {"worker_id": "w"}}) == created


def test_diagnostics_page_by_id_cursor(api: RuntimeAPI) -> None:
    for name in ("a", "b", "c", "d"):
        api.dispatch(c.CreateWorker(worker_id=name))
    everything = api.dispatch(c.GetDiagnostics(limit=1000))
    assert everything.next_after is None
    ids = [d.id for d in everything.diagnostics]
    first = api.dispatch(c.GetDiagnostics(limit=2))
    assert [d.id for d in first.diagnostics] == ids[:2]
    assert first.next_after == ids[1]
    rest = api.dispatch(c.GetDiagnostics(after=first.next_after, limit=1000))
    assert [d.id for d in rest.diagnostics] == ids[2:]
    assert api.dispatch(c.GetDiagnostics(after=ids[-1])).diagnostics == ()
