"""``RemoteRuntime``: the runtime's commands over its HTTP API, typed as in-process."""

from __future__ import annotations

import dataclasses
import math
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from typing import Self

from ..commands import Command, R_co, ReadEvents
from ..dispatcher import MAX_IDEMPOTENCY_KEY
from ..domain import Event
from ..errors import InvalidQuery, InvalidRequest
from ..follow import follow_events
from .codec import build_request, decode_error, decode_result
from .transport import Transport

__all__ = ["RemoteRuntime"]

WAIT_MARGIN_S = 10.0
"""Added to a long poll's ``wait`` for its socket timeout: the server answers at
the deadline, so only a server that stopped answering reaches the margin."""
MAX_WAIT_S = 3600.0
"""No runtime waits longer than this (its ``max_event_wait_s`` is far below)."""


def _check_key(key: str) -> None:
    # As the dispatcher checks it, so a bad key fails alike on a read (which
    # sends no key over HTTP) and before anything is sent.
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY) or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            details={"field": "idempotency_key"},
        )


def _wait_s(wait: object) -> float:
    """A long poll's ``wait`` as socket time: one the server will refuse
    (negative, not finite, too long) adds nothing, the refusal comes at once."""
    if isinstance(wait, int | float) and math.isfinite(wait) and 0 < wait <= MAX_WAIT_S:
        return float(wait)
    return 0.0


class RemoteRuntime:
    """A runtime reached over HTTP, with the same ``dispatch`` and ``follow`` as
    :class:`worker_runtime.Runtime`: the same result classes, the same error
    classes (chosen by the error's ``code``; an unknown code raises
    :class:`~worker_runtime.errors.WorkerRuntimeError` carrying it).

    ``timeout`` bounds each request (a long poll gets its ``wait`` on top).
    A connection failure, a 503 or a proxy's 502 is retried up to ``retries``
    times with backoff, honouring ``Retry-After``; every command that changes
    state (POST, DELETE) carries an ``Idempotency-Key`` (the caller's, or one
    made for the call and reused by its retries), so a retry never does the
    work twice (a delete whose answer was lost answers its ack again). When
    the retries are spent, a connection failure raises ``RuntimeUnreachable``
    (a ``RuntimeUnavailable``) and a timeout ``OperationTimeout``; a proxy's
    page instead of the API's error (502, 503, 504) raises what the runtime's
    own answer of that status would.

    Thread-safe; connections are kept alive and pooled. Close it (or use
    ``with``) to release them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 30.0,
        retries: int = 3,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._pause = pause
        self._transport = Transport(self.base_url, token=token, retries=retries, pause=pause)
        # Whether the server filters ReadEvents by worker_id (older ones refuse
        # the parameter); None until the first try.
        self._filters_events: bool | None = None

    def dispatch(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        """Run ``command`` on the server; return its typed result or raise its
        typed error. ``idempotency_key`` is sent with commands that change
        state (reads need none); without one, such a command gets a key made
        for the call, which its retries reuse."""
        return self._call(command, idempotency_key=idempotency_key)

    def _call(self, command: Command[R_co], *, idempotency_key: str | None = None) -> R_co:
        request = build_request(command)
        if idempotency_key is not None:
            _check_key(idempotency_key)
        headers = {}
        if request.route.idempotent_key:
            # Made once per call, so the transport's retries send the same key.
            headers["Idempotency-Key"] = idempotency_key or f"rr-{uuid.uuid4().hex}"
        timeout = self.timeout
        if request.route.long_poll:
            timeout += _wait_s(getattr(command, "wait", 0.0)) + WAIT_MARGIN_S
        answer = self._transport.request(
            request.method, request.target, request.body, timeout=timeout, headers=headers
        )
        if 200 <= answer.status < 300:
            result: R_co = decode_result(command, request.route, answer.body)
            return result
        error = decode_error(answer.status, answer.body, answer.headers)
        parameter = error.details.get("parameter")
        if type(error) is InvalidQuery and parameter in request.route.query:
            # The caller sent a command, not a query string: a bad field is
            # ``invalid_request`` naming it, as in-process.
            details = {**error.details, "field": parameter}
            del details["parameter"]
            error = InvalidRequest(error.message, details=details)
        raise error

    def follow(self, worker_id: str | None = None, cursor: int | None = None) -> Iterator[Event]:
        """Yield events from ``cursor`` (else from now on) as they arrive, only
        ``worker_id``'s when given, across reconnects and server restarts,
        until the caller stops iterating."""
        return follow_events(
            self._follow_dispatch, worker_id=worker_id, cursor=cursor, pause=self._pause
        )

    def _follow_dispatch(self, command: Command[R_co]) -> R_co:
        if not isinstance(command, ReadEvents) or command.worker_id is None:
            return self._call(command)
        if self._filters_events is False:
            # follow_events filters what an unfiltered read brings.
            return typing.cast(R_co, self._call(dataclasses.replace(command, worker_id=None)))
        try:
            result = self._call(command)
        except InvalidRequest as exc:
            # A server without the filter refuses the parameter (its
            # invalid_query, here invalid_request naming the field); a
            # malformed id is InvalidWorkerId, an unknown worker WorkerNotFound.
            if type(exc) is not InvalidRequest or exc.details.get("field") != "worker_id":
                raise
            self._filters_events = False
            return typing.cast(R_co, self._call(dataclasses.replace(command, worker_id=None)))
        self._filters_events = True
        return typing.cast(R_co, result)

    def close(self) -> None:
        """Close the pooled connections. Idempotent."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteRuntime({self.base_url!r})"
