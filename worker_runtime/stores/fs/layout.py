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
        journal.jsonl                          commit lines since the last checkpoint
        journal.old.jsonl                      older ones, while a checkpoint runs
        workers/<worker_id>/
            worker.json                        the worker record (atomic replace)
            transcript.jsonl, transcript.idx
            runs.jsonl, runs.idx               every version of every run (latest wins;
                                               a run's place is its first line)
            runs.order, runs.ids               its runs in that order, each one's latest
                                               line, and a hash table of their ids
            events.idx                         ids of this worker's events (u64 each)
        workers/.deleted-<worker_id>-<ns>/     a deleted worker's files, being removed
        quarantine/<name>-<ns>/                files that could not be loaded, kept
        *.torn-<ns>                            bytes cut from the end of a log, kept

A record file holds an envelope: the record, and how many lines of each of
its logs are committed (``ends``). The journal holds newer envelopes until a
checkpoint writes them to their files. Every name below ``runtimes/`` comes
from a validated id (``ID_PATTERN``), so no input can reach outside the
directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ...codec import from_json, to_json
from ...domain import (
    Diagnostic,
    Event,
    Run,
    RuntimeRecord,
    TranscriptEntry,
    WorkerRecord,
    check_runtime_id,
    check_worker_id,
)
from ..base import IdempotencyRecord
from .fileops import FileOps
from .jsonl import JsonlLog
from .run_index import RunIndex
from .worker_events import WorkerEvents

__all__ = [
    "COMPACTING",
    "FORMAT",
    "JOURNAL",
    "OLD_JOURNAL",
    "RUNTIME",
    "Layout",
    "WorkerFiles",
    "dump",
    "load_envelope",
    "open_log",
    "parse_runtime",
    "parse_worker",
    "runtime_envelope",
    "worker_envelope",
]

COMPACTING = "compacting"
"""In ``runtime.json`` while a log is being compacted: the length it will have."""
FORMAT = 1  # changed if the on-disk format ever changes incompatibly
RUNTIME = ""  # the runtime record's key; worker records are keyed by worker id
TRANSCRIPT_TAIL = 16  # transcript entries per worker kept in memory
EVENTS_TAIL = 1024  # newest events kept in memory (long-polls read these)

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
        """``workers/<worker_id>/<name>`` (without ``name``: the directory, with no
        trailing ``/``), for a validated ``worker_id`` only."""
        directory = os.path.join("workers", check_worker_id(worker_id))
        return os.path.join(directory, name) if name else directory


def open_log(layout: Layout, rel: str, ops: FileOps, keep: int = 0) -> JsonlLog[Any]:
    """A log of the record type its file name implies (``keep``: entries held in memory)."""
    cls = _LOG_TYPES[os.path.basename(rel)]
    return JsonlLog(
        layout.root,
        rel,
        encode=to_json,
        decode=lambda data: from_json(cls, data),
        ops=ops,
        keep=keep,
    )


JOURNAL = "journal.jsonl"
OLD_JOURNAL = "journal.old.jsonl"  # commit lines whose records are being written out


def open_journal(layout: Layout, ops: FileOps, rel: str = JOURNAL) -> JsonlLog[dict[str, Any]]:
    """The commit journal: one line per flush (see ``store.py``)."""
    return JsonlLog(layout.root, rel, encode=_same, decode=_checked_line, ops=ops)


def _same(line: dict[str, Any]) -> dict[str, Any]:
    return line


def _checked_line(line: Any) -> dict[str, Any]:
    if not isinstance(line, dict) or not isinstance(line.get("records"), dict):
        raise ValueError("not a journal line")
    return line


@dataclass(eq=False, kw_only=True)
class WorkerFiles:
    """One worker's logs; ``seq`` orders workers by creation across restarts."""

    worker_id: str
    seq: int
    transcript: JsonlLog[TranscriptEntry]
    runs: JsonlLog[Run]
    events: WorkerEvents
    run_index: RunIndex
    dir_exists: bool = False  # known to the leader only

    def logs(self) -> tuple[JsonlLog[Any], JsonlLog[Any]]:
        return self.transcript, self.runs

    def ends(self) -> dict[str, int]:
        return {
            "transcript": self.transcript.count,
            "runs": self.runs.count,
            "events": self.events.count,
            "events_from": self.events.events_from,
        }

    @classmethod
    def create(
        cls, layout: Layout, worker_id: str, seq: int, ops: FileOps, events_from: int = 0
    ) -> WorkerFiles:
        runs = open_log(layout, layout.worker_rel(worker_id, "runs.jsonl"), ops)
        return cls(
            worker_id=worker_id,
            seq=seq,
            transcript=open_log(
                layout, layout.worker_rel(worker_id, "transcript.jsonl"), ops, keep=TRANSCRIPT_TAIL
            ),
            runs=runs,
            events=WorkerEvents(
                layout.root, layout.worker_rel(worker_id, "events.idx"), ops, events_from
            ),
            run_index=RunIndex(runs, ops),
        )


def dump(envelope: dict[str, Any]) -> bytes:
    """A record file's bytes."""
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode("ascii") + b"\n"


def load_envelope(data: bytes) -> dict[str, Any]:
    """The envelope in a record file; ``ValueError`` if it is not one."""
    envelope = json.loads(data)
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise ValueError("not a record of format 1")
    return envelope


def worker_envelope(seq: int, record: WorkerRecord | None, ends: dict[str, int]) -> dict[str, Any]:
    """``worker.json``: the record, its creation order, and how many lines of its
    logs are committed (``transcript``, ``runs``; ``events``: entries of its event
    index, and ``events_from``: the first event id that can be its own)."""
    return {"format": FORMAT, "seq": seq, "record": to_json(record), "ends": ends}


def runtime_envelope(record: RuntimeRecord | None, ends: dict[str, int]) -> dict[str, Any]:
    """``runtime.json``: the record and the committed lines of the runtime-wide logs
    (``events``, ``diagnostics``, ``idempotency``; ``events_base`` is the id before
    the first line of ``events.jsonl``)."""
    return {"format": FORMAT, "record": to_json(record), "ends": ends}


def parse_worker(
    envelope: Any, layout: Layout, worker_id: str
) -> tuple[int, WorkerRecord, dict[str, int]]:
    """(seq, record, ends) from a worker envelope; ``ValueError`` if it is not valid."""
    try:
        seq, ends = envelope["seq"], _ends(envelope, ("transcript", "runs"))
        # Written by version 1 without an event index: it is rebuilt (count unknown).
        ends.update(_ends(envelope, ("events", "events_from"), optional=True))
        record = from_json(WorkerRecord, envelope["record"])
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"missing or bad field: {exc}") from None
    if not isinstance(seq, int):
        raise ValueError("no creation sequence")
    if record.worker_id != worker_id or record.runtime_id != layout.runtime_id:
        raise ValueError("it belongs to another worker or runtime")
    if not isinstance(record.transcript_len, int) or not isinstance(record.last_event_id, int):
        raise ValueError("bad counters")
    return seq, record, ends


def parse_runtime(envelope: Any) -> tuple[RuntimeRecord | None, dict[str, int]]:
    """(record, ends) from a runtime envelope; ``ValueError`` if it is not valid."""
    try:
        ends = _ends(envelope, ("events", "events_base", "diagnostics", "idempotency"))
        data = envelope["record"]
        record = None if data is None else from_json(RuntimeRecord, data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"missing or bad field: {exc}") from None
    return record, ends


def _ends(envelope: Any, names: tuple[str, ...], *, optional: bool = False) -> dict[str, int]:
    given = envelope["ends"]
    ends = {name: given[name] for name in names if not optional or name in given}
    if not all(isinstance(v, int) and v >= 0 for v in ends.values()):
        raise ValueError("bad log ends")
    return ends
