"""Several threads hammering one runtime: nothing deadlocks, every error is an
expected typed one, and the state machine's invariants still hold afterwards."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker_runtime import Runtime, errors
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime.domain import Event, Role, WorkerStatus
from worker_runtime.engines import Emit, RunContext
from worker_runtime.testing import TERMINAL_EVENTS, ScriptEngine, make_runtime, named

THREADS = 6
OPS_PER_THREAD = 400
WORKER_IDS = [f"w{i}" for i in range(10)]
STOPPABLE = WORKER_IDS[:3]
"""Only a few workers may be stopped, so the rest stay busy for the whole run."""
EXPECTED_CODES = {
    "worker_not_found",
    "worker_exists",
    "worker_busy",
    "worker_stopped",
    "cursor_ahead",  # a random cursor past the log's end (SPEC section 3)
}

pytestmark = pytest.mark.timeout(120)


def brief(ctx: RunContext, emit: Emit) -> None:
    """A run that takes a moment (so cancels and busy inputs meet it) and
    stops at once when aborted."""
    emit("working: ")
    if not ctx.signal.wait(0.005):
        emit(ctx.input.content)


@dataclass
class Log:
    """What one hammering thread saw."""

    acks: list[tuple[c.SendInput, r.InputAck]] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[BaseException] = field(default_factory=list)


def hammer(rt: Runtime, seed: int, log: Log) -> None:
    rng = random.Random(seed)
    ops: list[tuple[int, Callable[[str, int], Any]]] = [
        (3, lambda w, n: rt.dispatch(c.CreateWorker(worker_id=w, profile=named(_profile(w))))),
        (10, lambda w, n: _send(rt, w, f"{seed}:{n}", log)),
        (3, lambda w, n: rt.dispatch(c.CancelRun(worker_id=w))),
        (1, lambda w, n: _stop(rt, rng.choice(STOPPABLE), log)),
        (2, lambda w, n: rt.dispatch(c.GetTranscript(worker_id=w, start=rng.randrange(4)))),
        (2, lambda w, n: rt.dispatch(c.ReadEvents(cursor=rng.randrange(50), limit=20))),
        (1, lambda w, n: rt.dispatch(c.ListWorkers(limit=3))),
        (1, lambda w, n: rt.dispatch(c.GetRuntime())),
        (1, lambda w, n: rt.dispatch(c.GetWorker(worker_id=w))),
        (1, lambda w, n: _create_shared(rt, n)),
    ]
    weights = [weight for weight, _ in ops]
    for n in range(OPS_PER_THREAD):
        (_, op) = rng.choices(ops, weights)[0]
        try:
            op(rng.choice(WORKER_IDS), n)
        except errors.WorkerRuntimeError as exc:
            log.codes[exc.code] += 1
        except BaseException as exc:  # collected and re-raised by the test
            log.failures.append(exc)
            return


def _profile(worker_id: str) -> str:
    return "brief" if int(worker_id[1:]) % 2 else "instant"


def _create_shared(rt: Runtime, n: int) -> None:
    """The same key from every thread: created once, replayed to the others."""
    key = f"k{n % 5}"
    detail = rt.dispatch(c.CreateWorker(worker_id=key), idempotency_key=key)
    assert detail.worker_id == key


def _send(rt: Runtime, worker_id: str, content: str, log: Log) -> None:
    command = c.SendInput(worker_id=worker_id, content=content)
    log.acks.append((command, rt.dispatch(command)))


def _stop(rt: Runtime, worker_id: str, log: Log) -> None:
    rt.dispatch(c.StopWorker(worker_id=worker_id))
    log.stopped.add(worker_id)


def follow(rt: Runtime, done: threading.Event, seen: list[Event]) -> None:
    """A long-polling reader alongside the writers."""
    cursor = 0
    while not done.is_set():
        page = rt.dispatch(c.ReadEvents(cursor=cursor, limit=50, wait=0.2))
        seen.extend(page.events)
        cursor = page.cursor.next_event_id


def all_events(rt: Runtime) -> list[Event]:
    events: list[Event] = []
    cursor = 0
    while True:
        page = rt.dispatch(c.ReadEvents(cursor=cursor, limit=1000))
        events += page.events
        cursor = page.cursor.next_event_id
        if not page.has_more:
            return events


def wait_until_idle(rt: Runtime, run_ids: set[str], timeout: float = 30) -> None:
    """Long-poll the event log until every run in ``run_ids`` has ended."""
    pending, cursor = set(run_ids), 0
    deadline = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} runs never ended"
        page = rt.dispatch(c.ReadEvents(cursor=cursor, limit=1000, wait=1))
        pending -= {e.run_id for e in page.events if e.type in TERMINAL_EVENTS}
        cursor = page.cursor.next_event_id


def test_threads_hammering_one_runtime() -> None:
    with make_runtime({"brief": ScriptEngine(brief), "instant": ScriptEngine(_echo)}) as rt:
        logs = [Log() for _ in range(THREADS)]
        threads = [
            threading.Thread(target=hammer, args=(rt, seed, log), name=f"hammer-{seed}")
            for seed, log in enumerate(logs)
        ]
        done, followed = threading.Event(), []
        reader = threading.Thread(target=follow, args=(rt, done, followed))
        for thread in [*threads, reader]:
            thread.start()
        for thread in threads:
            thread.join(60)
        done.set()
        reader.join(10)
        stuck = [t.name for t in [*threads, reader] if t.is_alive()]
        assert not stuck, f"deadlocked: {stuck}"
        for log in logs:
            if log.failures:
                raise log.failures[0]
        codes = sum((log.codes for log in logs), Counter[str]())
        assert set(codes) <= EXPECTED_CODES, codes

        acks = [pair for log in logs for pair in log.acks]
        assert acks, "no input was ever accepted"
        wait_until_idle(rt, {ack.run_id for _, ack in acks})
        check_invariants(rt, acks, set().union(*(log.stopped for log in logs)), followed)


def _echo(ctx: RunContext, emit: Emit) -> None:
    emit(ctx.input.content)


def check_invariants(
    rt: Runtime,
    acks: list[tuple[c.SendInput, r.InputAck]],
    stopped: set[str],
    followed: list[Event],
) -> None:
    events = all_events(rt)
    ids = [e.event_id for e in events]
    assert ids == list(range(1, len(ids) + 1)), "event ids are not contiguous from 1"
    followed_ids = [e.event_id for e in followed]
    assert followed_ids == sorted(set(followed_ids)), "the long-poller saw ids out of order"

    # Every accepted input's run ended exactly once.
    ends = Counter(e.run_id for e in events if e.type in TERMINAL_EVENTS)
    accepted = {e.run_id for e in events if e.type == "input_accepted"}
    assert accepted == {ack.run_id for _, ack in acks}
    assert all(ends[run_id] == 1 for run_id in accepted), "a run ended twice or never"

    listing = rt.dispatch(c.ListWorkers(limit=1000)).workers
    info = rt.dispatch(c.GetRuntime())
    statuses = Counter(w.status for w in listing)
    assert (info.workers.idle, info.workers.running, info.workers.stopped) == (
        statuses[WorkerStatus.IDLE],
        statuses[WorkerStatus.RUNNING],
        statuses[WorkerStatus.STOPPED],
    )
    assert info.workers.total == len(listing)
    assert (info.active_runs, statuses[WorkerStatus.RUNNING]) == (0, 0)

    for summary in listing:
        worker_id = summary.worker_id
        detail = rt.dispatch(c.GetWorker(worker_id=worker_id))
        assert detail.active_run is None
        if worker_id in stopped:
            assert detail.status is WorkerStatus.STOPPED
        page = rt.dispatch(c.GetTranscript(worker_id=worker_id, limit=256))
        entries = list(page.items)
        while page.next_start is not None:
            page = rt.dispatch(c.GetTranscript(worker_id=worker_id, start=page.next_start))
            entries += page.items
        assert [e.sequence for e in entries] == list(range(detail.transcript_len))
        for command, ack in acks:
            if command.worker_id == worker_id:
                entry = entries[ack.transcript_sequence]
                assert (entry.role, entry.content, entry.run_id) == (
                    Role.USER,
                    command.content,
                    ack.run_id,
                )
