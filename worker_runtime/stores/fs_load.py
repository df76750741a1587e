"""Opening an fs store as a crash left it: cut torn tails, reconcile, never reset silently.

Start-up reads each worker's record and only the tail of each log (the
offset indexes give the lengths), so it grows with the number of workers,
not with transcript length. Problems become diagnostics for the runtime:

- ``store_torn_tail``: an incomplete last record was cut and kept aside;
- ``store_corrupt``: a record that cannot be read (file and line named). A
  corrupt worker is moved to ``quarantine/`` (kept, not deleted) and not
  loaded; the rest of the runtime starts normally;
- ``store_recovered``: a worker record older than its transcript (a crash
  between the log fsync and the record rename) was brought up to date;
- ``store_index_rebuilt``: a missing or inconsistent offset index was rebuilt.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..domain import Diagnostic, Event, RuntimeRecord, WorkerRecord, is_valid_id
from ..errors import StoreCorrupt
from .base import IdempotencyRecord, StoreState
from .fs_files import Layout, WorkerFiles, decode_runtime, decode_worker, open_log
from .fsio import FileOps
from .jsonl import JsonlLog, LogProblem

__all__ = ["Loaded", "load"]

_CODES = {"torn": "store_torn_tail", "corrupt": "store_corrupt", "index": "store_index_rebuilt"}


@dataclass(kw_only=True)
class Loaded:
    """Everything the store keeps open after loading."""

    state: StoreState
    events: JsonlLog[Event]
    first_event_id: int
    diagnostics: JsonlLog[Diagnostic]
    idempotency_log: JsonlLog[IdempotencyRecord]
    idempotency: dict[str, IdempotencyRecord]
    workers: dict[str, WorkerFiles]
    runtime: RuntimeRecord | None = None
    next_seq: int = 0
    problems: list[tuple[str, str, str | None]] = field(default_factory=list)


class _Skip(Exception):
    """This worker cannot be loaded; ``quarantine`` says whether to move it aside."""

    def __init__(self, code: str, message: str, *, quarantine: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.quarantine = quarantine


def load(layout: Layout, ops: FileOps) -> Loaded:
    """Open every file of ``layout`` (the caller holds its lock)."""
    problems: list[tuple[str, str, str | None]] = []
    runtime = _load_runtime(layout, ops, problems)
    events = open_log(layout, "events.jsonl", ops)
    found = events.recover()
    _report(found.problems, problems, None)
    events_last = _last_id(found.last, "event_id", events.count)
    diagnostics = open_log(layout, "diagnostics.jsonl", ops)
    _report(diagnostics.recover().problems, problems, None)
    last_diag = diagnostics.read(diagnostics.count - 1, 1) if diagnostics.count else []
    idem_log = open_log(layout, "idempotency.jsonl", ops)
    _report(idem_log.recover().problems, problems, None)
    idempotency: dict[str, IdempotencyRecord] = {}
    for record in idem_log.read_all(lambda p: _report([p], problems, None)):
        idempotency.setdefault(record.key, record)
    # Without its event log, nothing says which transcript entries were
    # acknowledged: keep them all, and number new events above every known id.
    events_lost = not found.exists and runtime is not None
    if events_lost:
        problems.append(("store_corrupt", "events.jsonl is missing; new events continue", None))
    workers = _load_workers(layout, ops, None if events_lost else events_last, problems)
    if events_lost:
        events_last = max([r.last_event_id for _, r in workers.values()], default=0)
    loaded = Loaded(
        state=StoreState(
            runtime=runtime,
            workers=[record for _, record in sorted(workers.values(), key=lambda w: w[0].seq)],
            last_event_id=events_last,
            diagnostic_count=diagnostics.count,
            last_diagnostic_id=last_diag[0].id if last_diag else 0,
            new_diagnostics=_dedupe(problems),
        ),
        events=events,
        first_event_id=events_last - events.count + 1,
        diagnostics=diagnostics,
        idempotency_log=idem_log,
        idempotency=idempotency,
        workers={wid: files for wid, (files, _) in workers.items()},
        runtime=runtime,
        next_seq=max((files.seq for files, _ in workers.values()), default=-1) + 1,
    )
    return loaded


def _load_runtime(
    layout: Layout, ops: FileOps, problems: list[tuple[str, str, str | None]]
) -> RuntimeRecord | None:
    path = layout.path("runtime.json")
    data = ops.read_file(path)
    if data is None:
        return None
    try:
        return decode_runtime(data)
    except ValueError:
        aside = os.path.basename(ops.keep_aside(path, data))
        message = f"runtime.json is not a valid record; rewritten (old copy: {aside})"
        problems.append(("store_corrupt", message, None))
        return None


def _last_id(last: Any, key: str, count: int) -> int:
    value = last.get(key) if isinstance(last, dict) else None
    # Ids are contiguous from 1, so the count is a safe fallback for a bad tail.
    return value if isinstance(value, int) and value > 0 else count


def _load_workers(
    layout: Layout,
    ops: FileOps,
    events_last: int | None,
    problems: list[tuple[str, str, str | None]],
) -> dict[str, tuple[WorkerFiles, WorkerRecord]]:
    workers: dict[str, tuple[WorkerFiles, WorkerRecord]] = {}
    try:
        names = sorted(entry.name for entry in os.scandir(layout.workers) if entry.is_dir())
    except FileNotFoundError:
        return workers
    for worker_id in names:
        if not is_valid_id(worker_id):
            continue  # not ours: the store only ever creates directories named by ids
        try:
            workers[worker_id] = _load_worker(layout, ops, worker_id, events_last, problems)
        except _Skip as skip:
            problems.append((skip.code, skip.message, worker_id))
            if skip.quarantine:
                _quarantine(layout, ops, worker_id, problems)
        except StoreCorrupt as exc:
            problems.append(("store_corrupt", exc.message, worker_id))
            _quarantine(layout, ops, worker_id, problems)
        except OSError as exc:
            problems.append(
                ("store_corrupt", f"worker {worker_id} could not be read: {exc.strerror}", None)
            )
    return workers


def _load_worker(
    layout: Layout,
    ops: FileOps,
    worker_id: str,
    events_last: int | None,
    problems: list[tuple[str, str, str | None]],
) -> tuple[WorkerFiles, WorkerRecord]:
    files = WorkerFiles.create(layout, worker_id, 0, ops)
    found = [files.transcript.recover(), files.runs.recover()]
    log_problems = [p for f in found for p in f.problems]
    corrupt = [p for p in log_problems if p.kind == "corrupt"]
    if corrupt:
        raise _Skip("store_corrupt", "; ".join(p.message for p in corrupt))
    rel = layout.worker_rel(worker_id, "worker.json")
    data = ops.read_file(layout.path(rel))
    if data is None and files.transcript.count == 0:
        raise _Skip("store_incomplete_worker", f"{rel} is missing: an unacknowledged create")
    if data is None:
        raise _Skip("store_corrupt", f"{rel} is missing")
    try:
        files.seq, record = decode_worker(data, layout, worker_id)
    except ValueError as exc:
        raise _Skip("store_corrupt", f"{rel} line 1 is not a valid worker record: {exc}") from None
    _report(log_problems, problems, worker_id)
    _check_tail(files, found[0].last)
    if events_last is not None:
        _cut_unlogged(files, events_last, problems)
    return files, _reconcile(files, record, problems)


def _check_tail(files: WorkerFiles, last: Any) -> None:
    count = files.transcript.count
    if count and (not isinstance(last, dict) or last.get("sequence") != count - 1):
        raise _Skip(
            "store_corrupt",
            f"{files.transcript.rel} line {count} does not hold entry {count - 1}",
        )


def _cut_unlogged(
    files: WorkerFiles, events_last: int, problems: list[tuple[str, str, str | None]]
) -> None:
    """Cut transcript entries whose event is not in the event log.

    Both are fsynced in the same flush; a crash can keep one and lose the
    other. Such entries were never acknowledged, and keeping them would let a
    new event reuse their event id.
    """
    log = files.transcript
    keep = log.count
    while keep and log.read(keep - 1, 1)[0].event_id > events_last:
        keep -= 1
    if keep < log.count:
        problem = log.cut_to(keep, "entries newer than the event log (an unfinished flush)")
        _report([problem], problems, files.worker_id)


def _reconcile(
    files: WorkerFiles, record: WorkerRecord, problems: list[tuple[str, str, str | None]]
) -> WorkerRecord:
    """The transcript log is the truth for the transcript's length."""
    length = files.transcript.count
    if length < record.transcript_len:
        raise _Skip(
            "store_corrupt",
            f"{files.transcript.rel} has {length} entries but the worker record "
            f"says {record.transcript_len}",
        )
    if length == record.transcript_len:
        return record
    last = files.transcript.read(length - 1, 1)[0]
    problems.append(
        (
            "store_recovered",
            f"worker record was older than its transcript; recovered "
            f"{length - record.transcript_len} entries",
            files.worker_id,
        )
    )
    return dataclasses.replace(
        record, transcript_len=length, last_event_id=max(record.last_event_id, last.event_id)
    )


def _quarantine(
    layout: Layout, ops: FileOps, worker_id: str, problems: list[tuple[str, str, str | None]]
) -> None:
    """Move an unloadable worker aside so its id can be reused without mixing files."""
    target_dir = layout.path("quarantine")
    ops.makedirs(target_dir)
    name = f"{worker_id}-{time.time_ns()}"
    ops.replace(os.path.join(layout.workers, worker_id), os.path.join(target_dir, name))
    ops.fsync_dir(layout.workers)
    ops.fsync_dir(target_dir)
    problems.append(("store_quarantined", f"its files were moved to quarantine/{name}", worker_id))


def _report(
    found: list[LogProblem], problems: list[tuple[str, str, str | None]], worker_id: str | None
) -> None:
    problems.extend((_CODES[p.kind], p.message, worker_id) for p in found)


def _dedupe(problems: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    return list(dict.fromkeys(problems))
