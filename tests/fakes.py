"""Fake engines and a clock for tests: real subclasses of the runtime's bases, no mocks.

``make_runtime`` builds a runtime whose named profiles run these engines
through ``ProfileRegistry(engines=...)``; the global ``ENGINES`` registry is
never touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.clock import Clock
from worker_runtime.domain import ProfileSelector
from worker_runtime.engines import Emit, Engine, EngineFailure, RunContext
from worker_runtime.profiles import Profile, ProfileRegistry
from worker_runtime.stores import Store

POLL_S = 0.005
"""How often a held run looks at its abort signal (as the real engines do)."""


def named(profile: str) -> ProfileSelector:
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


def _factory(engine: Engine) -> Callable[[Mapping[str, Any]], Engine]:
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
        with self._cond:
            for gate in self._gates.values():
                gate.set()

    def wait_started(self, run_id: str, timeout: float = 10.0) -> RunContext:
        with self._cond:
            if not self._cond.wait_for(lambda: run_id in self.started, timeout):
                raise AssertionError(f"run {run_id} did not start within {timeout}s")
            return self.started[run_id]

    def wait_returned(self, run_id: str, timeout: float = 10.0) -> str:
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
        with self._lock:
            self._now += seconds
