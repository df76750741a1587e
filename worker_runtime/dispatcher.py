"""The dispatcher: the one way a command reaches its handler.

It looks the handler up by the command's type, runs it, makes its writes
durable (``store.sync``) before answering, and implements idempotency keys:
a repeat of a command with the same key and the same wire form replays the
first result without doing the work again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .commands import Command, R_co
from .errors import IdempotencyKeyReused, InvalidRequest, RuntimeUnavailable, UnsupportedOperation
from .handlers import HANDLERS, ONE_HOLD, RESULT_TYPES, Handler
from .stores import IdempotencyRecord
from .wire import decode_command, encode_command, from_json, to_json

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["MAX_IDEMPOTENCY_KEY", "Dispatcher"]

MAX_IDEMPOTENCY_KEY = 255
_STRIPES = 64


class Dispatcher:
    """Routes commands to handlers through a registry ``{CommandType: handler}``."""

    def __init__(
        self, runtime: Runtime, handlers: Mapping[type[Command[Any]], Handler] = HANDLERS
    ) -> None:
        self._rt = runtime
        self._handlers = handlers
        # Concurrent duplicates of one key must do the work once: each key maps
        # to one of a fixed set of locks, held while the first one runs.
        self._key_locks = [threading.Lock() for _ in range(_STRIPES)]

    def dispatch(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        """Run ``command`` and return its result once its writes are durable."""
        if self._rt.status == "stopping":
            # Closed (or closing): the store may already be released.
            raise RuntimeUnavailable("the runtime is closed", details={"retry_after_s": 1})
        handler = self._handlers.get(type(command))
        if handler is None:
            raise UnsupportedOperation(
                f"no handler for command {type(command).__name__}",
                details={"command": type(command).__name__},
            )
        if idempotency_key is None:
            result = handler(self._rt, command)
            self._rt.sync()
            return typing.cast(R_co, result)
        return self._dispatch_once(handler, command, _check_key(idempotency_key))

    def dispatch_json(self, wire: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Decode and validate a wire command, run it, return the result's JSON."""
        result = self.dispatch(decode_command(wire), idempotency_key=idempotency_key)
        data: dict[str, Any] = to_json(result)
        return data

    def _dispatch_once(self, handler: Handler, command: Command[R_co], key: str) -> R_co:
        rt = self._rt
        wire = encode_command(command)
        fingerprint = hashlib.sha256(
            json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        with self._key_locks[hash(key) % _STRIPES]:
            with rt.locked():
                previous = rt.store.get_idempotency(key)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request",
                        details={"command": previous.command},
                    )
                return typing.cast(R_co, from_json(RESULT_TYPES[type(command)], previous.result))
            # Only successes are remembered: a failed attempt did no work, so a
            # retry may run it again. A short handler runs under the same hold
            # of the (re-entrant) state lock as the record, so the store commits
            # the work and its key together: a crash cannot keep one without the
            # other. Cancel and stop wait for runs outside the lock; redoing them
            # after a crash is harmless.
            with rt.locked() if type(command) in ONE_HOLD else contextlib.nullcontext():
                result = handler(rt, command)
                record = IdempotencyRecord(
                    key=key,
                    fingerprint=fingerprint,
                    command=wire["command"],
                    result=to_json(result),
                    created_at=rt.clock.now(),
                )
                with rt.locked():
                    rt.store.put_idempotency(record)
            rt.sync()
            return typing.cast(R_co, result)


def _check_key(key: str) -> str:
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY) or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            details={"field": "idempotency_key"},
        )
    return key
