"""The Runtime: the composition root of one host's workers.

:meth:`Runtime.open` builds the parts — config, store, profiles, the state
table (the unit of work), the run lifecycle and the dispatcher — and hands
each the others it needs; :meth:`Runtime.dispatch` is the public way in.
Nothing else in the package imports this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .clock import Clock, new_id
from .commands import Command, R_co
from .config import RuntimeConfig
from .dispatcher import Dispatcher
from .domain import Event
from .errors import RuntimeUnavailable
from .follow import follow_events
from .handlers import HANDLERS, Context
from .profiles import ProfileRegistry
from .profiles_file import load_registry
from .runs import RunLifecycle
from .state import StateTable
from .stores import Store, open_store
from .version import __version__

__all__ = ["Runtime"]


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
        clock = clock or Clock()
        self.config = config
        self.store = store
        self.runtime_id = store.runtime_id
        store.bind_clock(clock, config.idempotency_ttl_s)
        state = StateTable(store=store, clock=clock, operation_timeout_s=config.operation_timeout_s)
        runs = RunLifecycle(state=state, store=store, profiles=profiles, clock=clock, config=config)
        self.context = Context(
            state=state, store=store, profiles=profiles, runs=runs, config=config, clock=clock
        )
        """What handlers are given; ``context.state`` is the unit of work."""
        self._dispatcher = Dispatcher(HANDLERS, self.context)
        with state.locked():
            runs.recover(state.restore(store.load(), display_name=config.display_name))
            state.emit("runtime_started", version=__version__, store=store.kind)
            # Acknowledged inputs are never lost: queued runs go on, in order.
            runs.resume_queued()
        # SPEC 10: a store that cannot write (a full disk) still serves reads. A
        # failed sync made the state unavailable: writes answer 503, /readyz says so.
        with contextlib.suppress(RuntimeUnavailable):
            state.sync()
        state.started_at = clock.now()

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
        built = profiles is None
        if profiles is None:
            path = config.profiles_path
            profiles = load_registry(path) if path else ProfileRegistry()
        try:
            if store is None:
                store = open_store(config, new_id)
            return cls(config=config, store=store, profiles=profiles, clock=clock)
        except BaseException:
            if built:  # the engines this call built (an HTTP pool, say) end with it
                profiles.close()
            raise

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

    def dispatch_encoded(
        self,
        wire: Any,
        encode: Callable[[dict[str, Any]], bytes],
        *,
        idempotency_key: str | None = None,
    ) -> bytes:
        """``encode(dispatch_json(wire))`` for transports that send bytes: a read
        of an unchanged record (``GetWorker``, a ``GetTranscript`` page) is served
        from a cache of encoded answers, never stale (``worker_runtime.answers``).
        ``encode`` is part of the cache key: pass the same function each time."""
        # Through this runtime's dispatch_json, so a subclass sees every command.
        return self._dispatcher.dispatch_encoded(
            wire, encode, idempotency_key=idempotency_key, answer=self.dispatch_json
        )

    def follow(self, worker_id: str | None = None, cursor: int | None = None) -> Iterator[Event]:
        """Yield events from ``cursor`` (else from now on) as they arrive, only
        ``worker_id``'s if given, until the caller stops; see ``follow_events``."""
        return follow_events(self.dispatch, worker_id=worker_id, cursor=cursor, reconnect=False)

    @property
    def sync_observer(self) -> Callable[[float], None] | None:
        """Called with the seconds each store sync took (the HTTP adapter's metrics)."""
        return self.context.state.sync_observer

    @sync_observer.setter
    def sync_observer(self, observer: Callable[[float], None] | None) -> None:
        self.context.state.sync_observer = observer

    @property
    def status(self) -> str:
        """``running``, ``stopping`` (closed or closing) or ``unavailable``."""
        return self.context.state.status

    @property
    def display_name(self) -> str | None:
        return self.config.display_name

    @property
    def started_at(self) -> str:
        """When the runtime finished opening (RFC 3339)."""
        return self.context.state.started_at

    def close(self) -> None:
        """Answer waiters, end active runs ``interrupted``, flush the store and
        release it. Idempotent."""
        if not self.context.state.begin_shutdown():
            return
        # Release the store (and its directory lock) even if a flush failed.
        try:
            self.context.runs.shutdown()
        finally:
            try:
                self.context.profiles.close()
            finally:
                self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
