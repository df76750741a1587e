"""Opening an fs store as a crash left it: back to the last commit, never reset silently.

The committed state is the record files (``runtime.json``, ``worker.json``)
overlaid with the lines of the commit journal. Each record says how many
lines of its logs were committed; every log is cut back to that (the lines
of a flush that never committed, and torn bytes, are kept aside). Start-up
reads each record and only the tail of each log (the offset indexes give
the lengths), so it grows with the number of workers, not with transcript
length. Problems become diagnostics for the runtime:

- ``store_torn_tail``: an incomplete record or an uncommitted flush was cut;
- ``store_corrupt``: something cannot be read back (file and line named). A
  damaged worker is moved to ``quarantine/`` (kept, not deleted) and not
  loaded; the rest of the runtime starts normally;
- ``store_incomplete_worker``: files of a worker whose creation never
  committed, moved to ``quarantine/``;
- ``store_index_rebuilt``: a missing or inconsistent offset index was rebuilt.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..clock import Clock
from ..domain import Diagnostic, Event, RuntimeRecord, WorkerRecord, is_valid_id
from ..errors import StoreCorrupt
from .base import IdempotencyRecord, StoreState
from .fs_files import (
    EVENTS_TAIL,
    Layout,
    WorkerFiles,
    load_envelope,
    open_journal,
    open_log,
    parse_runtime,
    parse_worker,
)
from .fsio import FileOps
from .jsonl import JsonlLog, LogProblem

__all__ = ["Loaded", "load"]

Problems = list[tuple[str, str, str | None]]
_CODES = {"torn": "store_torn_tail", "corrupt": "store_corrupt", "index": "store_index_rebuilt"}
_UNCOMMITTED = "records of a flush that never committed"


@dataclass(kw_only=True)
class Loaded:
    """Everything the store keeps open after loading."""

    state: StoreState
    runtime: RuntimeRecord | None
    events: JsonlLog[Event]
    events_base: int
    lost_events: list[Event]
    """Placeholders for the ids of uncommitted events that were cut (to append)."""
    diagnostics: JsonlLog[Diagnostic]
    idempotency_log: JsonlLog[IdempotencyRecord]
    idempotency: dict[str, IdempotencyRecord]
    journal: JsonlLog[dict[str, Any]]
    workers: dict[str, WorkerFiles]
    records: dict[str, WorkerRecord]
    next_seq: int
    stale: set[str] = field(default_factory=set)
    """Records whose file is older than the committed state (to checkpoint)."""


class _Skip(Exception):
    """This worker cannot be loaded; its files are moved aside."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load(layout: Layout, ops: FileOps) -> Loaded:
    """Open every file of ``layout`` (the caller holds its lock)."""
    problems: Problems = []
    envelopes, stale = _committed_envelopes(layout, ops, problems)
    runtime, ends = _runtime(envelopes.pop("", None), problems)
    if ends is None:
        stale.add("")
    events, events_base, lost = _load_events(layout, ops, ends, problems, stale)
    logs = []
    for name in ("diagnostics", "idempotency"):
        log = open_log(layout, f"{name}.jsonl", ops)
        if not _settle(log, ends[name] if ends else None, problems, None):
            stale.add("")  # what is left is kept; the runtime record must say so
        logs.append(log)
    diagnostics, idem_log = logs
    idempotency: dict[str, IdempotencyRecord] = {}
    for record in idem_log.read_all(lambda p: _report([p], problems, None)):
        idempotency.setdefault(record.key, record)
    workers = _load_workers(layout, ops, envelopes, problems)
    last_diag = diagnostics.read(diagnostics.count - 1, 1) if diagnostics.count else []
    ordered = sorted(workers.values(), key=lambda w: w[0].seq)
    return Loaded(
        state=StoreState(
            runtime=runtime,
            workers=[record for _, record in ordered],
            last_event_id=events_base + events.count + len(lost),
            diagnostic_count=diagnostics.count,
            last_diagnostic_id=last_diag[0].id if last_diag else 0,
            new_diagnostics=list(dict.fromkeys(problems)),
        ),
        runtime=runtime,
        events=events,
        events_base=events_base,
        lost_events=lost,
        diagnostics=diagnostics,
        idempotency_log=idem_log,
        idempotency=idempotency,
        journal=_fresh_journal(layout, ops),
        workers={wid: files for wid, (files, _) in workers.items()},
        records={wid: record for wid, (_, record) in workers.items()},
        next_seq=max((files.seq for files, _ in ordered), default=-1) + 1,
        stale={key for key in stale if key == "" or key in workers},
    )


def _committed_envelopes(
    layout: Layout, ops: FileOps, problems: Problems
) -> tuple[dict[str, Any], set[str]]:
    """Record envelopes by key (``""`` is the runtime's), the journal's overlaid,
    and the keys the journal changed (their files are stale)."""
    envelopes: dict[str, Any] = {}
    for key, rel in _record_files(layout):
        data = ops.read_file(layout.path(rel))
        if data is not None:
            try:
                envelopes[key] = load_envelope(data)
            except ValueError as exc:
                envelopes[key] = {"damaged": str(exc)}  # fails to parse, and says why
    journal = open_journal(layout, ops)
    _report(journal.recover().problems, problems, None)
    newer: set[str] = set()

    def damaged(problem: LogProblem) -> None:
        # Past a damaged commit line nothing is known to be committed.
        raise StoreCorrupt(problem.message, details={"file": problem.file, "line": problem.line})

    try:
        lines = journal.read_all(damaged)
    except StoreCorrupt as exc:
        problems.append(("store_corrupt", exc.message, None))
        lines = journal.read_all(lambda p: None)[: (exc.details["line"] or 1) - 1]
    for line in lines:
        for key, envelope in line["records"].items():
            envelopes[key] = envelope
            newer.add(key)
    return envelopes, newer


def _load_events(
    layout: Layout,
    ops: FileOps,
    ends: dict[str, int] | None,
    problems: Problems,
    stale: set[str],
) -> tuple[JsonlLog[Event], int, list[Event]]:
    """The event log cut back to its commit, the id before its first line, and a
    placeholder for each cut event: a reader may have seen those ids (reads see
    staged writes), so they are never given to other events."""
    events = open_log(layout, "events.jsonl", ops, keep=EVENTS_TAIL)
    _report(events.recover().problems, problems, None)
    if ends is None:  # no record says what was committed: keep the log as it is
        last = events.read(events.count - 1, 1) if events.count else []
        return events, (last[0].event_id - events.count if last else 0), []
    base, committed = ends["events_base"], ends["events"]
    if events.count < committed:
        # Committed events are gone: never reuse their ids; start a new log above them.
        problems.append(
            (
                "store_corrupt",
                f"events.jsonl has {events.count} records; {committed} were committed",
                None,
            )
        )
        _quarantine(layout, ops, "events", ["events.jsonl", "events.idx"], problems, None)
        stale.add("")
        return open_log(layout, "events.jsonl", ops, keep=EVENTS_TAIL), base + committed, []
    lost = range(base + committed + 1, base + events.count + 1)
    if lost:
        why = f"{_UNCOMMITTED} (ids {lost[0]}-{lost[-1]} are kept as event_lost)"
        _report([events.cut_to(committed, why)], problems, None)
    now = Clock().now()
    return events, base, [_lost(event_id, now) for event_id in lost]


def _lost(event_id: int, now: str) -> Event:
    return Event(
        event_id=event_id,
        type="event_lost",
        created_at=now,
        data={"reason": "its change was not committed before the runtime stopped"},
    )


def _record_files(layout: Layout) -> list[tuple[str, str]]:
    files = [("", "runtime.json")]
    try:
        names = sorted(e.name for e in os.scandir(layout.workers) if e.is_dir())
    except FileNotFoundError:
        names = []
    files += [(name, layout.worker_rel(name, "worker.json")) for name in names if is_valid_id(name)]
    return files


def _fresh_journal(layout: Layout, ops: FileOps) -> JsonlLog[dict[str, Any]]:
    journal = open_journal(layout, ops)
    journal.recover()
    return journal


def _runtime(
    envelope: Any, problems: Problems
) -> tuple[RuntimeRecord | None, dict[str, int] | None]:
    """The runtime record and the committed ends of the runtime-wide logs; ends
    are None if ``runtime.json`` is damaged: the logs are then taken as they are."""
    if envelope is None:
        return None, {"events": 0, "events_base": 0, "diagnostics": 0, "idempotency": 0}
    try:
        return parse_runtime(envelope)
    except ValueError as exc:
        problems.append(
            ("store_corrupt", f"runtime.json line 1 is not a valid record: {exc}", None)
        )
        return None, None


def _settle(
    log: JsonlLog[Any], committed: int | None, problems: Problems, worker: str | None
) -> bool:
    """Cut ``log`` back to its ``committed`` length; False if it is shorter."""
    _report(log.recover().problems, problems, worker)
    if committed is None:
        return True
    if log.count > committed:
        _report([log.cut_to(committed, _UNCOMMITTED)], problems, worker)
    if log.count < committed:
        problems.append(
            (
                "store_corrupt",
                f"{log.rel} has {log.count} records; {committed} were committed",
                worker,
            )
        )
        return False
    return True


def _load_workers(
    layout: Layout, ops: FileOps, envelopes: dict[str, Any], problems: Problems
) -> dict[str, tuple[WorkerFiles, WorkerRecord]]:
    workers: dict[str, tuple[WorkerFiles, WorkerRecord]] = {}
    on_disk = {key for key, _ in _record_files(layout)[1:]}
    for worker_id in sorted(on_disk | set(envelopes)):
        try:
            files, record = _load_worker(layout, ops, worker_id, envelopes.get(worker_id), problems)
        except (_Skip, StoreCorrupt) as exc:
            problems.append((getattr(exc, "code", "store_corrupt"), exc.message, worker_id))
            if worker_id in on_disk:
                moved = [layout.worker_rel(worker_id)]
                _quarantine(layout, ops, worker_id, moved, problems, worker_id)
        except OSError as exc:
            message = f"worker {worker_id} could not be read: {exc.strerror}"
            problems.append(("store_corrupt", message, None))
        else:
            files.dir_exists = worker_id in on_disk
            workers[worker_id] = files, record
    return workers


def _load_worker(
    layout: Layout, ops: FileOps, worker_id: str, envelope: Any, problems: Problems
) -> tuple[WorkerFiles, WorkerRecord]:
    rel = layout.worker_rel(worker_id, "worker.json")
    if envelope is None:
        # Every committed worker has a record file or a journal line: these files
        # are from a creation that never committed (or the record file was lost).
        raise _Skip(
            "store_incomplete_worker",
            f"{rel} is missing: the worker's creation never committed, or the file was lost",
        )
    try:
        seq, record, ends = parse_worker(envelope, layout, worker_id)
    except ValueError as exc:
        raise _Skip("store_corrupt", f"{rel} line 1 is not a valid worker record: {exc}") from None
    files = WorkerFiles.create(layout, worker_id, seq, ops)
    found: Problems = []
    for log, end in ((files.transcript, ends["transcript"]), (files.runs, ends["runs"])):
        if not _settle(log, end, found, worker_id):
            raise _Skip("store_corrupt", found[-1][1])
    corrupt = [message for code, message, _ in found if code == "store_corrupt"]
    if corrupt:
        raise _Skip("store_corrupt", "; ".join(corrupt))
    count = files.transcript.count
    if count and files.transcript.read(count - 1, 1)[0].sequence != count - 1:
        raise _Skip("store_corrupt", f"{files.transcript.rel} line {count} is out of sequence")
    problems.extend(found)
    return files, record


def _quarantine(
    layout: Layout,
    ops: FileOps,
    name: str,
    rels: list[str],
    problems: Problems,
    worker_id: str | None,
) -> None:
    """Move damaged files aside (never delete them), so the name can be used afresh."""
    target = os.path.join(layout.path("quarantine"), f"{name}-{time.time_ns()}")
    ops.makedirs(target)
    for rel in rels:
        source = layout.path(rel)
        if os.path.lexists(source):
            ops.replace(source, os.path.join(target, os.path.basename(rel.rstrip("/"))))
            ops.fsync_dir(os.path.dirname(source.rstrip("/")))
    ops.fsync_dir(target)
    moved = os.path.relpath(target, layout.root)
    problems.append(("store_quarantined", f"the damaged files were moved to {moved}", worker_id))


def _report(found: list[LogProblem], problems: Problems, worker_id: str | None) -> None:
    problems.extend((_CODES[p.kind], p.message, worker_id) for p in found)
