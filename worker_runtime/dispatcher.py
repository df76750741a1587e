"""The dispatcher: the one way a command reaches its handler.

It looks the handler up by the command's type, runs it, and closes the unit
of work: the handler changes state under ``ctx.state.locked()``, the
dispatcher makes those writes durable (``ctx.state.sync()``) before
answering. It also implements idempotency keys: a repeat of a command with
the same key and the same wire form replays the first result without doing
the work again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .answers import VERSIONS, AnswerCache
from .commands import Command, R_co, result_type
from .errors import IdempotencyKeyReused, InvalidRequest, RuntimeUnavailable, UnsupportedOperation
from .fields import checker_for
from .handlers import Context, Registration
from .stores import IdempotencyRecord
from .wire import decode_command, encode_command, from_json, to_json

__all__ = ["MAX_IDEMPOTENCY_KEY", "Dispatcher", "Encoder"]

MAX_IDEMPOTENCY_KEY = 255
_STRIPES = 64

_Entry = tuple[Registration, Callable[[Any], None]]
"""A command's registration and its field check."""

Encoder = Callable[[dict[str, Any]], bytes]
"""A transport's encoding of a result's JSON data (envelope and all) into bytes."""


class Dispatcher:
    """Routes commands to handlers through a registry ``{CommandType: Registration}``,
    calling each handler with ``context``."""

    def __init__(
        self, handlers: Mapping[type[Command[Any]], Registration], context: Context
    ) -> None:
        self._ctx = context
        # One lookup per dispatch finds both the handler and the field check.
        self._handlers: dict[type[Command[Any]], _Entry] = {
            cls: (registration, checker_for(cls)) for cls, registration in handlers.items()
        }
        # Concurrent duplicates of one key must do the work once: each key maps
        # to one of a fixed set of locks, held while the first one runs.
        self._key_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._answers = AnswerCache()
        self._versions = {cls.__name__: version for cls, version in VERSIONS.items()}

    def dispatch(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        """Run ``command`` and return its result once its writes are durable.

        Every field must have its declared type: a wrong one is an
        ``InvalidRequest`` naming the field, never a ``TypeError``.
        """
        entry = self._handlers.get(type(command))
        if entry is not None:
            entry[1](command)
        return self._run(entry, command, idempotency_key)

    def dispatch_json(self, wire: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Decode and validate a wire command, run it, return the result's JSON."""
        # decode_command checked every field against the schema already.
        command = decode_command(wire)
        result = self._run(self._handlers.get(type(command)), command, idempotency_key)
        data: dict[str, Any] = to_json(result)
        return data

    def dispatch_encoded(
        self,
        wire: Any,
        encode: Encoder,
        *,
        idempotency_key: str | None = None,
        answer: Callable[..., dict[str, Any]] | None = None,
    ) -> bytes:
        """``encode(answer(wire))`` (``answer`` is :meth:`dispatch_json` unless
        given), served from the answer cache when the command is a cached read
        and its record is unchanged: then neither the handler nor ``to_json``
        nor ``encode`` runs. ``encode`` must be a long-lived function (it is
        part of the cache key) that depends only on its argument."""
        answer = answer or self.dispatch_json
        name = wire.get("command") if isinstance(wire, Mapping) else None
        version_of = self._versions.get(name) if isinstance(name, str) else None
        if version_of is None or idempotency_key is not None:
            return encode(answer(wire, idempotency_key=idempotency_key))
        ctx = self._ctx
        command = decode_command(wire)  # validated once: small args are memoized
        # Read before the answer is made (see ``answers``): never stale.
        version = version_of(ctx, command)
        key = (command, encode)
        if version is not None and ctx.state.status != "stopping":
            body = self._answers.get(key, version)
            if body is not None:
                return body
        body = encode(answer(wire))
        if version is not None:
            self._answers.put(key, version, body)
        return body

    def _run(
        self, entry: _Entry | None, command: Command[R_co], idempotency_key: str | None
    ) -> R_co:
        if self._ctx.state.status == "stopping":
            # Closed (or closing): the store may already be released.
            raise RuntimeUnavailable("the runtime is closed", details={"retry_after_s": 1})
        if entry is None:
            raise UnsupportedOperation(
                f"no handler for command {type(command).__name__}",
                details={"command": type(command).__name__},
            )
        registration = entry[0]
        if idempotency_key is None:
            result = registration.handler(self._ctx, command)
            self._ctx.state.sync()
            return typing.cast(R_co, result)
        return self._dispatch_once(registration, command, _check_key(idempotency_key))

    def _dispatch_once(self, registration: Registration, command: Command[R_co], key: str) -> R_co:
        ctx = self._ctx
        state = ctx.state
        wire = encode_command(command)
        fingerprint = hashlib.sha256(
            json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        with self._key_locks[hash(key) % _STRIPES]:
            with state.locked():
                previous = ctx.store.get_idempotency(key)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request",
                        details={"command": previous.command},
                    )
                return typing.cast(R_co, from_json(result_type(type(command)), previous.result))
            # Only successes are remembered: a failed attempt did no work, so a
            # retry may run it again. A short handler runs under the same hold
            # of the (re-entrant) state lock as the record, so the store commits
            # the work and its key together: a crash cannot keep one without the
            # other. Cancel and stop wait for runs outside the lock; redoing them
            # after a crash is harmless.
            with state.locked() if registration.one_hold else contextlib.nullcontext():
                result = registration.handler(ctx, command)
                record = IdempotencyRecord(
                    key=key,
                    fingerprint=fingerprint,
                    command=wire["command"],
                    result=to_json(result),
                    created_at=ctx.clock.now(),
                )
                with state.locked():
                    ctx.store.put_idempotency(record)
            state.sync()
            return typing.cast(R_co, result)


def _check_key(key: str) -> str:
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY) or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            details={"field": "idempotency_key"},
        )
    return key
