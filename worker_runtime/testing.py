"""Testing helpers for code that embeds a runtime (as ``falcon.testing``).

Fakes are real subclasses of the runtime's bases, no mocks:

- :class:`GateEngine` holds each run until the test lets it finish;
  :class:`ScriptEngine` runs a function (fail, crash, stream chunks);
- :class:`ManualClock` freezes the runtime's notion of elapsed time;
- :func:`make_runtime` opens a memory runtime whose named profiles run given
  engine instances (through ``ProfileRegistry(engines=...)``; the global
  ``ENGINES`` registry is never touched);
- :func:`wait_for_event` and :func:`wait_for_run_end` wait on the runtime's own
  event log (a long-poll), :func:`wait_until` on any condition: tests never
  sleep a fixed time;
- :func:`state_lock_held_elsewhere` holds the state lock on another thread,
  as a long operation would;
- :func:`worker_record` builds a plain worker record (stamped :data:`NOW`), for
  tests of a store or fixtures written straight into one;
- :func:`reference_to_json` is a slow, obviously-right ``to_json`` to check the
  real (generated, fast) one against.

Example::

    from worker_runtime import commands
    from worker_runtime.testing import GateEngine, make_runtime, named, wait_for_run_end

    gate = GateEngine()
    with make_runtime({"gate": gate}) as rt:
        worker = rt.dispatch(commands.CreateWorker(profile=named("gate")))
        ack = rt.dispatch(commands.SendInput(worker_id=worker.worker_id, content="hi"))
        gate.open(ack.run_id)
        assert wait_for_run_end(rt, ack.run_id).type == "run_completed"
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any

from . import commands
from .clock import Clock
from .codec import SCALARS
from .config import RuntimeConfig
from .domain import (
    RUN_END_EVENTS,
    Event,
    ProfileSelector,
    WorkerIntent,
    WorkerRecord,
    WorkerStatus,
)
from .engines import Emit, Engine, EngineFactory, EngineFailure, RunContext
from .profiles import Profile, ProfileRegistry
from .runtime import Runtime
from .stores import Store

__all__ = [
    "NOW",
    "POLL_S",
    "TERMINAL_EVENTS",
    "GateEngine",
    "ManualClock",
    "ScriptEngine",
    "fail_with",
    "make_runtime",
    "named",
    "reference_to_json",
    "state_lock_held_elsewhere",
    "wait_for_event",
    "wait_for_run_end",
    "wait_until",
    "worker_record",
]

POLL_S = 0.005
"""How often a held run looks at its abort signal (as the real engines do)."""

TERMINAL_EVENTS = RUN_END_EVENTS
"""The event types that end a run."""


def named(profile: str) -> ProfileSelector:
    """The selector of the named profile ``profile``."""
    return ProfileSelector(kind="named", value=profile)


def make_runtime(
    engines: Mapping[str, Engine],
    *,
    timeouts: Mapping[str, float] | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    **config: Any,
) -> Runtime:
    """A memory runtime with one named profile per entry of ``engines``
    (profile name = engine name), and ``config`` overriding the defaults."""
    timeouts = timeouts or {}
    profiles = [
        Profile(name=name, kind="named", engine=name, timeout_s=timeouts.get(name))
        for name in engines
    ]
    factories = {name: _factory(engine) for name, engine in engines.items()}
    registry = ProfileRegistry(profiles, engines=factories)
    config.setdefault("runtime_id", "rt-test")
    return Runtime.open(RuntimeConfig(**config), profiles=registry, clock=clock, store=store)


def _factory(engine: Engine) -> EngineFactory:
    return lambda settings: engine


class GateEngine(Engine):
    """Holds every run until the test opens its gate, then replies ``reply(input)``.

    With ``honour_signal`` (the default) an aborted run returns at once, without
    output; without it the engine ignores cancel and timeout, like a stuck
    program, until its gate opens. ``outcomes`` records how each run returned.
    """

    name = "gate"

    def __init__(
        self, *, honour_signal: bool = True, reply: Callable[[str], str] | None = None
    ) -> None:
        self.honour_signal = honour_signal
        self.reply = reply or (lambda text: f"echo: {text}")
        self._cond = threading.Condition()
        self._gates: dict[str, threading.Event] = {}
        self.started: dict[str, RunContext] = {}
        self.outcomes: dict[str, str] = {}

    def open(self, run_id: str) -> None:
        """Let ``run_id`` finish (now, or as soon as it starts)."""
        self._gate(run_id).set()

    def open_all(self) -> None:
        """Let every run seen so far finish."""
        with self._cond:
            for gate in self._gates.values():
                gate.set()

    def wait_started(self, run_id: str, timeout: float = 10.0) -> RunContext:
        """The context ``run_id`` started with, once it has started."""
        with self._cond:
            if not self._cond.wait_for(lambda: run_id in self.started, timeout):
                raise AssertionError(f"run {run_id} did not start within {timeout}s")
            return self.started[run_id]

    def wait_returned(self, run_id: str, timeout: float = 10.0) -> str:
        """How ``run_id`` returned (``replied`` or ``aborted``), once it has."""
        with self._cond:
            if not self._cond.wait_for(lambda: run_id in self.outcomes, timeout):
                raise AssertionError(f"run {run_id} did not return within {timeout}s")
            return self.outcomes[run_id]

    def run(self, ctx: RunContext, emit: Emit) -> None:
        gate = self._gate(ctx.run_id)
        with self._cond:
            self.started[ctx.run_id] = ctx
            self._cond.notify_all()
        outcome = "aborted"
        try:
            if self.honour_signal:
                while not gate.wait(POLL_S):
                    if ctx.signal.is_set():
                        return
            elif not gate.wait(30):
                return  # a safety net so a forgotten gate never leaks a thread for long
            outcome = "replied"
            emit(self.reply(ctx.input.content))
        finally:
            with self._cond:
                self.outcomes[ctx.run_id] = outcome
                self._cond.notify_all()

    def _gate(self, run_id: str) -> threading.Event:
        with self._cond:
            return self._gates.setdefault(run_id, threading.Event())


class ScriptEngine(Engine):
    """Runs ``script(ctx, emit)``: for engines that fail, crash or stream chunks."""

    name = "script"

    def __init__(self, script: Callable[[RunContext, Emit], None]) -> None:
        self.script = script
        self.calls = 0

    def run(self, ctx: RunContext, emit: Emit) -> None:
        self.calls += 1
        self.script(ctx, emit)


def fail_with(message: str) -> Callable[[RunContext, Emit], None]:
    """A :class:`ScriptEngine` script that emits some output, then fails with ``message``."""

    def script(ctx: RunContext, emit: Emit) -> None:
        emit("partial output")
        raise EngineFailure(message)

    return script


class ManualClock(Clock):
    """A clock whose monotonic time moves only when the test says so.

    Waits inside the runtime still take real time (they are bounded by the
    real condition variables); only the runtime's notion of elapsed time is
    frozen, which makes time-based behaviour such as output coalescing
    deterministic.
    """

    def __init__(self) -> None:
        self._now = time.monotonic()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move monotonic time forward by ``seconds``."""
        with self._lock:
            self._now += seconds


# -- waiting on conditions ----------------------------------------------------------------


def wait_for_event(
    rt: Runtime, predicate: Callable[[Event], bool], *, cursor: int = 0, timeout: float = 10.0
) -> Event:
    """The first event (from ``cursor`` on) that ``predicate`` accepts; fails past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching event within {timeout}s")
        page = rt.dispatch(commands.ReadEvents(cursor=cursor, wait=min(remaining, 5.0)))
        for event in page.events:
            if predicate(event):
                return event
        cursor = page.cursor.next_event_id


def wait_for_run_end(rt: Runtime, run_id: str, *, timeout: float = 10.0) -> Event:
    """The terminal event of ``run_id`` (completed, failed, cancelled, ...)."""
    return wait_for_event(
        rt, lambda e: e.run_id == run_id and e.type in TERMINAL_EVENTS, timeout=timeout
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


@contextmanager
def state_lock_held_elsewhere(rt: Runtime) -> Iterator[None]:
    """Hold ``rt``'s state lock on another thread (as a long operation would)
    for the duration of the block."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with rt.context.state.locked():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        if not holding.wait(10):
            raise AssertionError("the holder never got the lock")
        yield
    finally:
        release.set()
        holder.join(10)
    if holder.is_alive():
        raise AssertionError("the holder did not let go of the lock")


# -- records and their JSON ---------------------------------------------------------------

NOW = "2024-01-01T00:00:00.000Z"
"""The fixed time :func:`worker_record` stamps its records with."""


def worker_record(
    worker_id: str = "w",
    *,
    runtime_id: str = "rt-test",
    status: WorkerStatus = WorkerStatus.IDLE,
    display_name: str | None = None,
    transcript_len: int = 0,
    last_event_id: int = 0,
) -> WorkerRecord:
    """A plain worker record (no intent, profile, bundle or refs) stamped :data:`NOW`:
    what a test of a :class:`~worker_runtime.stores.Store` puts and reads back, or a
    fixture writes straight into a store's files."""
    return WorkerRecord(
        runtime_id=runtime_id,
        worker_id=worker_id,
        display_name=display_name,
        status=status,
        intent=WorkerIntent(),
        profile=ProfileSelector(),
        config_bundle=None,
        requested_capabilities=(),
        workspace_refs=(),
        mount_refs=(),
        created_at=NOW,
        updated_at=NOW,
        transcript_len=transcript_len,
        last_event_id=last_event_id,
    )


def reference_to_json(value: Any) -> Any:
    """The plain JSON data of ``value``, by a slow, obviously-right generic walk.

    :func:`worker_runtime.codec.to_json` compiles an encoder per type for speed;
    this walk is the rule it must follow, so a test checks the two agree byte
    for byte after ``json.dumps`` (for a record type of your own, say). Optional
    fields (default None) are left out when unset; required nullable ones stay
    as an explicit null.
    """
    tp: type = type(value)
    if tp in SCALARS:  # exact types: a StrEnum is a str but must become its value
        return value
    if hasattr(tp, "__dataclass_fields__"):
        data: dict[str, Any] = {}
        for name, optional in _fields(tp):
            v = getattr(value, name)
            if v is None:
                if not optional:
                    data[name] = None
            else:
                # Most fields are scalars: skip the recursive call for them (this
                # walk was the codec once; bench/encode.py still times it).
                data[name] = v if type(v) in SCALARS else reference_to_json(v)
        return data
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [reference_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): reference_to_json(v) for k, v in value.items()}
    return value


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, optional) per field of a dataclass."""
    return tuple((f.name, f.default is None) for f in dataclasses.fields(cls))
