"""Where the fs store keeps things, and how records are encoded.

::

    <data_dir>/default-runtime                 the runtime id used when none is configured
    <data_dir>/runtimes/<runtime_id>/
        lock                                   flock: one owning process
        runtime.json                           the runtime record (atomic replace)
        events.jsonl, events.idx               the event log and its offset index
        diagnostics.jsonl, diagnostics.idx
        idempotency.jsonl, idempotency.idx     first answers to keyed commands (keys
                                               live inside the lines, never in names)
        workers/<worker_id>/
            worker.json                        the worker record (atomic replace)
            transcript.jsonl, transcript.idx
            runs.jsonl, runs.idx               finished runs
        quarantine/<worker_id>-<ns>/           a worker that could not be loaded, kept

Every name below ``runtimes/`` comes from a validated id (``ID_PATTERN``),
so no input can reach outside the directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..domain import (
    Diagnostic,
    Event,
    Run,
    RuntimeRecord,
    TranscriptEntry,
    WorkerRecord,
    check_runtime_id,
    check_worker_id,
)
from ..wire import from_json, to_json
from .base import IdempotencyRecord
from .fsio import FileOps
from .jsonl import JsonlLog

__all__ = [
    "FORMAT",
    "Layout",
    "WorkerFiles",
    "decode_runtime",
    "decode_worker",
    "encode_runtime",
    "encode_worker",
    "open_log",
]

FORMAT = 1  # bumped if the on-disk format ever changes incompatibly

_LOG_TYPES: dict[str, type[Any]] = {
    "events.jsonl": Event,
    "diagnostics.jsonl": Diagnostic,
    "idempotency.jsonl": IdempotencyRecord,
    "transcript.jsonl": TranscriptEntry,
    "runs.jsonl": Run,
}


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one runtime's directory."""

    data_dir: str
    runtime_id: str

    def __post_init__(self) -> None:
        check_runtime_id(self.runtime_id)

    @property
    def root(self) -> str:
        return os.path.join(self.data_dir, "runtimes", self.runtime_id)

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    @property
    def workers(self) -> str:
        return self.path("workers")

    @staticmethod
    def worker_rel(worker_id: str, name: str = "") -> str:
        """``workers/<worker_id>/<name>``, for a validated ``worker_id`` only."""
        return os.path.join("workers", check_worker_id(worker_id), name)


def open_log(layout: Layout, rel: str, ops: FileOps) -> JsonlLog[Any]:
    """A log of the record type its file name implies."""
    cls = _LOG_TYPES[os.path.basename(rel)]
    return JsonlLog(
        layout.root, rel, encode=to_json, decode=lambda data: from_json(cls, data), ops=ops
    )


@dataclass(eq=False, kw_only=True)
class WorkerFiles:
    """One worker's logs; ``seq`` orders workers by creation across restarts."""

    worker_id: str
    seq: int
    transcript: JsonlLog[TranscriptEntry]
    runs: JsonlLog[Run]
    runs_by_id: dict[str, Run] | None = None  # read from runs.jsonl on first lookup

    @classmethod
    def create(cls, layout: Layout, worker_id: str, seq: int, ops: FileOps) -> WorkerFiles:
        return cls(
            worker_id=worker_id,
            seq=seq,
            transcript=open_log(layout, layout.worker_rel(worker_id, "transcript.jsonl"), ops),
            runs=open_log(layout, layout.worker_rel(worker_id, "runs.jsonl"), ops),
        )


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("ascii") + b"\n"


def encode_worker(seq: int, record: WorkerRecord) -> bytes:
    return _dump({"format": FORMAT, "seq": seq, "record": to_json(record)})


def decode_worker(data: bytes, layout: Layout, worker_id: str) -> tuple[int, WorkerRecord]:
    """(seq, record) from ``worker.json``; ``ValueError`` if it is not a valid record."""
    envelope = _envelope(data)
    seq = envelope.get("seq")
    if not isinstance(seq, int):
        raise ValueError("no creation sequence")
    try:
        record = from_json(WorkerRecord, envelope["record"])
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(str(exc)) from None
    if record.worker_id != worker_id or record.runtime_id != layout.runtime_id:
        raise ValueError("it belongs to another worker or runtime")
    if not isinstance(record.transcript_len, int) or not isinstance(record.last_event_id, int):
        raise ValueError("bad counters")
    return seq, record


def encode_runtime(record: RuntimeRecord) -> bytes:
    return _dump({"format": FORMAT, "record": to_json(record)})


def decode_runtime(data: bytes) -> RuntimeRecord:
    try:
        return from_json(RuntimeRecord, _envelope(data)["record"])
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(str(exc)) from None


def _envelope(data: bytes) -> dict[str, Any]:
    envelope = json.loads(data)
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise ValueError("not a record of format 1")
    return envelope
