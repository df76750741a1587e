"""Equal values shared between records: why an idle worker costs about 1 KB.

A runtime hosts tens of thousands of idle workers whose records, events and
diagnostics mostly hold equal values: the same intent, profile and usage, the
same timestamp string when they were made together, the same ``WorkerRef``
when one operation names one worker several times. Frozen values are
interchangeable, so :class:`Sharing` hands out one object for equal ones. The
state table owns one; its lock guards it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .clock import Clock
from .domain import WorkerRecord, WorkerRef

__all__ = ["SHARED_VALUES", "Sharing"]

SHARED_VALUES = 1024
"""How many distinct intents, profiles and usages are shared between records
(past this, new ones are simply kept as they come)."""


class Sharing:
    """One object for equal values: timestamps, refs, and record fields."""

    def __init__(self, clock: Clock, runtime_id: str) -> None:
        self._clock = clock
        self._runtime_id = runtime_id
        self._values: dict[object, object] = {}
        self._last_stamp = ""
        self._last_ref: WorkerRef | None = None

    def now(self) -> str:
        """The clock's time, as the same string object as the last call when it
        reads the same (millisecond resolution)."""
        now = self._clock.now()
        if now == self._last_stamp:
            return self._last_stamp
        self._last_stamp = now
        return now

    def ref(self, worker_id: str) -> WorkerRef:
        """The worker's ref (the last one made is handed out again)."""
        ref = self._last_ref
        if ref is None or ref.worker_id != worker_id:
            ref = self._last_ref = WorkerRef(runtime_id=self._runtime_id, worker_id=worker_id)
        return ref

    def value(self, value: Any) -> Any:
        """The shared object equal to ``value`` (``value`` itself, the first time)."""
        shared = self._values.get(value)
        if shared is not None:
            return shared
        if len(self._values) < SHARED_VALUES:
            self._values[value] = value
        return value

    def record(self, record: WorkerRecord) -> WorkerRecord:
        """``record`` with equal values shared: the intent, profile and usage
        most workers have in common, and the creation time of the event
        announcing it."""
        stamp = record.created_at
        if stamp == self._last_stamp:
            stamp = self._last_stamp
        changes = {
            "intent": self.value(record.intent),
            "profile": self.value(record.profile),
            "usage": self.value(record.usage),
            "created_at": stamp,
            "updated_at": stamp if record.updated_at == stamp else record.updated_at,
        }
        if all(getattr(record, name) is value for name, value in changes.items()):
            return record
        return dataclasses.replace(record, **changes)
