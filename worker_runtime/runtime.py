"""The Runtime: one host's workers, their state, and the primitives handlers use.

A :class:`Runtime` owns a store, a profile registry, a run manager and one
lock. Handlers (``handlers.py``) implement the commands on top of the
primitives here; :meth:`Runtime.dispatch` is the public way in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import __version__
from .clock import Clock, new_id
from .commands import Command, R_co
from .config import RuntimeConfig
from .domain import (
    Diagnostic,
    Event,
    RunStatus,
    RuntimeRecord,
    Severity,
    WorkerRecord,
    WorkerRef,
    WorkerStatus,
)
from .errors import OperationTimeout, RuntimeUnavailable, StoreCorrupt, WorkerNotFound
from .follow import follow_events
from .profiles import Profile, ProfileRegistry
from .profiles_file import load_profiles
from .runs import RunManager, finish_run
from .stores import Store, open_store

__all__ = ["Runtime"]

log = logging.getLogger("worker_runtime")


class Runtime:
    """Hosts many workers. Thread-safe; create with :meth:`Runtime.open`.

    ``dispatch(command)`` runs a typed command and returns its typed result
    or raises a :class:`~worker_runtime.errors.WorkerRuntimeError`.
    """

    def __init__(
        self,
        *,
        config: RuntimeConfig,
        store: Store,
        profiles: ProfileRegistry,
        clock: Clock | None = None,
    ) -> None:
        from .dispatcher import Dispatcher  # the dispatcher imports the handlers

        self.config = config
        self.store = store
        self.profiles = profiles
        self.clock = clock or Clock()
        self.runtime_id = store.runtime_id
        self.status = "running"
        # Re-entrant: the dispatcher holds it across a short handler and the
        # idempotency record, so both land in the same store commit.
        self._lock = threading.RLock()
        store.bind_lock(self._lock)  # so a group flush never splits an operation
        store.bind_clock(self.clock, config.idempotency_ttl_s)
        # Long-pollers wait on this; every new event notifies it.
        self.events_changed = threading.Condition(self._lock)
        self.workers: dict[str, WorkerRecord] = {}
        self.quarantined: dict[str, str] = {}  # reserved ids of damaged workers: why
        self.unavailable_reason = ""
        self.stopping: set[str] = set()
        self.last_event_id = 0
        self.waiters = 0  # ReadEvents long-polls now waiting (changed under the lock)
        self.sync_observer: Callable[[float], None] | None = None
        """Called with the seconds each store sync took (the HTTP adapter's metrics)."""
        self.diagnostic_count = 0
        self._last_diagnostic_id = 0
        self.runs = RunManager(self)
        self._dispatcher = Dispatcher(self)
        self._load()
        self.started_at = self.clock.now()

    @classmethod
    def open(
        cls,
        config: RuntimeConfig | None = None,
        *,
        store: Store | None = None,
        profiles: ProfileRegistry | None = None,
        clock: Clock | None = None,
    ) -> Runtime:
        """Open a runtime: by default the embedded one (memory store, echo engine)."""
        config = config or RuntimeConfig()
        if profiles is None:
            profiles = ProfileRegistry(_load_named_profiles(config))
        if store is None:
            store = open_store(config, new_id)
        return cls(config=config, store=store, profiles=profiles, clock=clock)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        """Open a runtime configured by ``WORKER_RUNTIME_*`` variables."""
        return cls.open(RuntimeConfig.from_env(os.environ if environ is None else environ))

    # -- the public entry points -------------------------------------------------

    def dispatch(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        """Run ``command``; with ``idempotency_key`` a repeat replays the first result."""
        return self._dispatcher.dispatch(command, idempotency_key=idempotency_key)

    def dispatch_json(self, wire: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Decode and validate ``{"command": NAME, "args": {...}}``, run it, and
        return the result's JSON form (for transports such as the HTTP adapter)."""
        return self._dispatcher.dispatch_json(wire, idempotency_key=idempotency_key)

    def follow(self, worker_id: str | None = None, cursor: int | None = None) -> Iterator[Event]:
        """Yield events from ``cursor`` (else from now on) as they arrive; see ``follow_events``."""
        return follow_events(self.dispatch, worker_id=worker_id, cursor=cursor, reconnect=False)

    @property
    def display_name(self) -> str | None:
        return self.config.display_name

    def close(self) -> None:
        """Cancel active runs, flush the store and release it. Idempotent."""
        with self._lock:
            if self.status == "stopping":
                return
            self.status = "stopping"
            self.events_changed.notify_all()
        # Release the store (and its directory lock) even if a flush failed.
        try:
            self.runs.shutdown()
        finally:
            try:
                self.profiles.close()
            finally:
                self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives for handlers and runs ---------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock, or fail with ``operation_timeout`` past the deadline."""
        if not self._lock.acquire(timeout=self.config.operation_timeout_s):
            raise OperationTimeout(
                "the runtime state was busy past the operation deadline",
                details={"timeout_s": self.config.operation_timeout_s},
            )
        try:
            yield
        finally:
            self._lock.release()

    def check_available(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the runtime accepts changes (lock held)."""
        if self.status != "running":
            reason = f": {self.unavailable_reason}" if self.status == "unavailable" else ""
            raise RuntimeUnavailable(
                f"the runtime is {self.status}{reason}", details={"retry_after_s": 1}
            )

    def check_not_quarantined(self, worker_id: str) -> None:
        """Raise ``StoreCorrupt`` naming the file if the store set ``worker_id`` aside."""
        why = self.quarantined.get(worker_id)
        if why is not None:
            raise StoreCorrupt(why, details={"worker_id": worker_id})

    def ref(self, worker_id: str) -> WorkerRef:
        return WorkerRef(runtime_id=self.runtime_id, worker_id=worker_id)

    def worker(self, worker_id: str) -> WorkerRecord:
        """The worker's record (lock held), or ``WorkerNotFound``."""
        record = self.workers.get(worker_id)
        if record is None:
            self.check_not_quarantined(worker_id)
            raise WorkerNotFound(
                f"no worker {worker_id!r} in runtime {self.runtime_id!r}",
                details={"worker_id": worker_id},
            )
        return record

    def save_worker(self, record: WorkerRecord, **changes: Any) -> WorkerRecord:
        """Store ``record`` with ``changes`` applied and a new ``updated_at`` (lock held)."""
        record = dataclasses.replace(record, **changes, updated_at=self.clock.now())
        self.store.put_worker(record)
        self.workers[record.worker_id] = record
        return record

    def emit(
        self,
        type_: str,
        worker_id: str | None = None,
        run_id: str | None = None,
        **data: str | int | None,
    ) -> Event:
        """Append an event with the next id and wake long-pollers (lock held)."""
        event = Event(
            event_id=self.last_event_id + 1,
            type=type_,
            created_at=self.clock.now(),
            worker_ref=self.ref(worker_id) if worker_id else None,
            run_id=run_id,
            data=data,
        )
        self.store.append_event(event)
        self.last_event_id = event.event_id
        self.events_changed.notify_all()
        return event

    def diagnose(
        self, severity: Severity, code: str, message: str, worker_id: str | None = None
    ) -> Diagnostic:
        """Record a diagnostic (lock held)."""
        self._last_diagnostic_id += 1
        diagnostic = Diagnostic(
            id=self._last_diagnostic_id,
            severity=severity,
            code=code,
            message=message,
            created_at=self.clock.now(),
            worker_ref=self.ref(worker_id) if worker_id else None,
        )
        self.store.append_diagnostic(diagnostic)
        self.diagnostic_count += 1
        return diagnostic

    def sync(self) -> None:
        """Make every staged write durable; a failure makes the runtime unavailable."""
        started = time.perf_counter()
        try:
            self.store.sync()
        except RuntimeUnavailable as exc:
            with self._lock:
                self.status = "unavailable"
                self.unavailable_reason = exc.message
            raise
        finally:
            observer = self.sync_observer
            if observer is not None:
                observer(time.perf_counter() - started)

    # -- start-up ----------------------------------------------------------------

    def _load(self) -> None:
        state = self.store.load()
        with self._lock:
            self.quarantined = dict(state.quarantined)
            self.last_event_id = state.last_event_id
            self.diagnostic_count = state.diagnostic_count
            self._last_diagnostic_id = state.last_diagnostic_id
            if state.runtime is None:
                self.store.put_runtime(
                    RuntimeRecord(
                        runtime_id=self.runtime_id,
                        display_name=self.config.display_name,
                        created_at=self.clock.now(),
                    )
                )
            for code, message, worker_id in state.new_diagnostics:
                self.diagnose(Severity.WARNING, code, message, worker_id)
            for record in state.workers:
                self.workers[record.worker_id] = record
                if record.active_run is not None:
                    # The process died during this run: it cannot be resumed.
                    finish_run(
                        self,
                        record.worker_id,
                        record.active_run.run_id,
                        RunStatus.INTERRUPTED,
                        "the runtime stopped during the run",
                    )
            self.emit("runtime_started", version=__version__, store=self.store.kind)
        self.sync()

    def counts(self) -> dict[WorkerStatus, int]:
        """Workers by status (lock held)."""
        counts = dict.fromkeys(WorkerStatus, 0)
        for record in self.workers.values():
            counts[record.status] += 1
        return counts


def _load_named_profiles(config: RuntimeConfig) -> list[Profile]:
    return load_profiles(config.profiles_path) if config.profiles_path else []
