"""Opening an fs store as a crash left it: back to the last commit, never reset silently.

The committed state is the record files (``runtime.json``, ``worker.json``)
overlaid with the lines of the commit journal; each record says how many
lines of its logs are committed. A flush fsyncs its logs and its journal
line together, so the last journal line counts only if every log it names
is as long as it says: otherwise the crash came before that flush finished,
and nobody was told it had. Every log is then cut back to its committed
length (cut lines and torn bytes are kept aside). Start-up reads each record
and only the tail of each log (the offset indexes give the lengths), so it
grows with the number of workers, not with transcript length. Problems
become diagnostics for the runtime:

- ``store_torn_tail``: an incomplete record or an uncommitted flush was cut
  (a cut event's id is kept by an ``event_lost`` event, so no reader who saw
  it is misled by another event under the same id);
- ``store_corrupt``: something cannot be read back (file and line named). A
  damaged worker is moved to ``quarantine/`` (kept, not deleted) and not
  loaded; the rest of the runtime starts normally;
- ``store_incomplete_worker``: files of a worker whose creation never
  committed (or whose record file is gone), moved to ``quarantine/``;
- ``store_index_rebuilt``: a missing or inconsistent offset index (or a
  worker's event index) was rebuilt.

Deleted workers (``tombstones.py``): a committed delete leaves nothing of the
worker behind; a delete whose flush never committed is undone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...clock import Clock
from ...domain import Diagnostic, Event, RuntimeRecord, WorkerRecord
from ...errors import StoreCorrupt
from ..base import IdempotencyRecord, StoreState
from .fileops import FileOps, SymlinkFound
from .jsonl import JsonlLog
from .layout import (
    COMPACTING,
    EVENTS_TAIL,
    OLD_JOURNAL,
    RUNTIME,
    Layout,
    WorkerFiles,
    open_journal,
    open_log,
    parse_runtime,
    parse_worker,
)
from .quarantine import Problems, move_aside, quarantined_workers
from .scan import Scan, journal_lines, linked, record_files, report, tombstones_of
from .tombstones import is_deleted, remove_tree, tombstone_name, tombstones

__all__ = ["Loaded", "load"]

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
    stale: set[str]
    """Records whose file is older than the committed state (to checkpoint)."""


class _Skip(Exception):
    """This worker cannot be loaded; its files are moved aside."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load(layout: Layout, ops: FileOps) -> Loaded:
    """Open every file of ``layout`` (the caller holds its lock)."""
    recovery = Scan(layout, ops)
    journal = open_journal(layout, ops)
    envelopes, stale = _committed(recovery, journal)
    compacting = _compacting(envelopes.get(RUNTIME), recovery.shared["idempotency"], stale)
    runtime, ends = _runtime(envelopes.pop(RUNTIME, None), recovery.problems)
    if ends is None:
        stale.add(RUNTIME)
    events, events_base, lost = _settle_events(recovery, ends, stale)
    diagnostics, idem_log = recovery.shared["diagnostics"], recovery.shared["idempotency"]
    for log in (diagnostics, idem_log):
        committed = ends[log.rel.removesuffix(".jsonl")] if ends else None
        if log is idem_log and compacting is not None:
            committed = compacting
        if not _settle(log, committed, recovery.problems, None):
            stale.add(RUNTIME)  # what is left is kept; the runtime record must say so
    idempotency: dict[str, IdempotencyRecord] = {}
    for record in idem_log.read_all(lambda p: report([p], recovery.problems, None)):
        idempotency.pop(record.key, None)  # a later line replaced an expired record
        idempotency[record.key] = record
    workers = _settle_workers(recovery, envelopes, events, events_base)
    quarantined = {
        wid: why for wid, why in quarantined_workers(layout, ops).items() if wid not in workers
    }
    last_diagnostic_id = _last_diagnostic_id(diagnostics, recovery.problems)
    ordered = sorted(workers.values(), key=lambda w: w[0].seq)
    return Loaded(
        state=StoreState(
            runtime=runtime,
            workers=[record for _, record in ordered],
            last_event_id=events_base + events.count + len(lost),
            diagnostic_count=diagnostics.count,
            last_diagnostic_id=last_diagnostic_id,
            new_diagnostics=list(dict.fromkeys(recovery.problems)),
            quarantined=quarantined,
        ),
        runtime=runtime,
        events=events,
        events_base=events_base,
        lost_events=lost,
        diagnostics=diagnostics,
        idempotency_log=idem_log,
        idempotency=idempotency,
        journal=journal,
        workers={wid: files for wid, (files, _) in workers.items()},
        records={wid: record for wid, (_, record) in workers.items()},
        next_seq=max((files.seq for files, _ in ordered), default=-1) + 1,
        stale={key for key in stale if key == RUNTIME or key in workers},
    )


def _committed(
    recovery: Scan, journal: JsonlLog[dict[str, Any]]
) -> tuple[dict[str, Any], set[str]]:
    """Every committed record envelope by key, and the keys whose record file is
    older than that; opens every log on the way (a commit line counts only if
    the logs it names reached the length it gives them), and settles the
    tombstones of deleted workers (``tombstones.py``)."""
    layout, ops = recovery.layout, recovery.ops
    envelopes = record_files(layout, ops, recovery.on_disk, recovery.linked)
    # Lines of an interrupted checkpoint come first: their records may not all
    # have reached their files (the checkpoint deletes them once they have).
    older = journal_lines(open_journal(layout, ops, OLD_JOURNAL), [])
    lines = journal_lines(journal, recovery.problems)
    graves = tombstones(layout)
    named = {name for line in older + lines for name in tombstones_of(line)}
    for name in sorted(graves.keys() - named):  # its flush never wrote its commit line
        _restore(recovery, name, graves.pop(name), envelopes)
    keys = {key for line in older + lines for key in line["records"]} - {RUNTIME}
    recovery.recover_logs(recovery.on_disk | keys)
    if lines and not recovery.reached(lines[-1]):
        uncommitted = lines.pop()  # the crash came before this flush had reached every log
        for name in sorted(tombstones_of(uncommitted) & graves.keys()):
            worker_id = graves.pop(name)
            _restore(recovery, name, worker_id, envelopes)
            recovery.open_worker(worker_id)
    if journal.count > len(lines):  # never apply those lines later either
        report([journal.cut_to(len(lines), _UNCOMMITTED)], recovery.problems, None)
    for name in sorted(graves):  # committed deletes whose files were not all removed
        remove_tree(ops, layout.path(os.path.join("workers", name)))
    for line in older + lines:
        envelopes.update(line["records"])
    return envelopes, {key for line in older + lines for key in line["records"]}


def _restore(recovery: Scan, name: str, worker_id: str, envelopes: dict[str, Any]) -> None:
    """Undo the delete of a flush that never committed: the tombstone becomes the
    worker's directory again (a new worker's files under the id, begun by that
    same flush, are moved aside first)."""
    layout, ops, problems = recovery.layout, recovery.ops, recovery.problems
    rel = layout.worker_rel(worker_id)
    if os.path.lexists(layout.path(rel)):
        move_aside(layout, ops, worker_id, [rel], problems, worker_id)
    ops.replace(layout.path(os.path.join("workers", name)), layout.path(rel))
    ops.fsync_dir(layout.workers)
    recovery.on_disk.add(worker_id)
    recovery.linked.discard(worker_id)
    envelopes.pop(worker_id, None)
    envelopes.update(record_files(layout, ops, {worker_id}, set()))
    problems.append(
        (
            "store_torn_tail",
            f"the delete of worker {worker_id!r} never committed: its files are back",
            worker_id,
        )
    )


def _last_diagnostic_id(log: JsonlLog[Diagnostic], problems: Problems) -> int:
    """The id of the last diagnostic; past a bad last line, one more than the last
    good one (ids are contiguous), so no id is given twice."""
    try:
        last = log.read(log.count - 1, 1) if log.count else []
        return last[0].id if last else 0
    except StoreCorrupt as exc:
        problems.append(("store_corrupt", exc.message, None))
    good = [(i, d) for i, d in enumerate(log.read_marked()) if isinstance(d, Diagnostic)]
    return good[-1][1].id + (log.count - 1 - good[-1][0]) if good else log.count


def _compacting(envelope: Any, log: JsonlLog[Any], stale: set[str]) -> int | None:
    """The idempotency log's committed length if a compaction stopped after
    replacing it (its length is then the one announced), else None."""
    announced = envelope.get(COMPACTING) if isinstance(envelope, dict) else None
    length = announced.get("idempotency") if isinstance(announced, dict) else None
    if not isinstance(length, int) or log.count != length:
        return None
    stale.add(RUNTIME)  # the record is written again with that length alone
    return length


def _runtime(
    envelope: Any, problems: Problems
) -> tuple[RuntimeRecord | None, dict[str, int] | None]:
    """The runtime record and the committed ends of the runtime-wide logs; ends
    are None if ``runtime.json`` is damaged: the logs are then taken as they are."""
    if envelope is None:
        return None, {"events": 0, "events_base": 0, "diagnostics": 0, "idempotency": 0}
    if isinstance(envelope, dict) and envelope.get("linked"):
        problems.append(("store_corrupt", str(envelope["damaged"]), None))
        return None, None
    try:
        return parse_runtime(envelope)
    except ValueError as exc:
        problems.append(
            ("store_corrupt", f"runtime.json line 1 is not a valid record: {exc}", None)
        )
        return None, None


def _settle(
    log: JsonlLog[Any],
    committed: int | None,
    problems: Problems,
    worker: str | None,
    why: str = _UNCOMMITTED,
) -> bool:
    """Cut a recovered ``log`` back to its ``committed`` length; False if it is shorter."""
    if committed is None:
        return True
    if log.count > committed:
        report([log.cut_to(committed, why)], problems, worker)
    if log.count < committed:
        message = f"{log.rel} has {log.count} records; {committed} were committed"
        problems.append(("store_corrupt", message, worker))
        return False
    return True


def _settle_events(
    recovery: Scan, ends: dict[str, int] | None, stale: set[str]
) -> tuple[JsonlLog[Event], int, list[Event]]:
    """The event log cut back to its commit, the id before its first line, and a
    placeholder for each cut event: a reader may have seen those ids (reads see
    staged writes), so they are never given to other events."""
    events: JsonlLog[Event] = recovery.shared["events"]
    if ends is None:  # no record says what was committed: keep the log as it is
        last = events.read(events.count - 1, 1) if events.count else []
        return events, (last[0].event_id - events.count if last else 0), []
    base, committed = ends["events_base"], ends["events"]
    lost = range(base + committed + 1, base + events.count + 1)
    why = f"{_UNCOMMITTED} (ids {lost[0]}-{lost[-1]} are kept as event_lost)" if lost else ""
    if not _settle(events, committed, recovery.problems, None, why):
        # Committed events are gone: never reuse their ids; start a new log above them.
        layout, ops = recovery.layout, recovery.ops
        move_aside(layout, ops, "events", ["events.jsonl", "events.idx"], recovery.problems, None)
        stale.add(RUNTIME)
        return open_log(layout, "events.jsonl", ops, keep=EVENTS_TAIL), base + committed, []
    now = Clock().now()
    return events, base, [_lost(event_id, now) for event_id in lost]


def _lost(event_id: int, now: str) -> Event:
    return Event(
        event_id=event_id,
        type="event_lost",
        created_at=now,
        data={"reason": "its change was not committed before the runtime stopped"},
    )


def _settle_workers(
    recovery: Scan, envelopes: dict[str, Any], events: JsonlLog[Event], events_base: int
) -> dict[str, tuple[WorkerFiles, WorkerRecord]]:
    layout, ops, problems = recovery.layout, recovery.ops, recovery.problems
    workers: dict[str, tuple[WorkerFiles, WorkerRecord]] = {}
    committed_events: dict[str, int | None] = {}
    for worker_id in sorted(recovery.files):
        files = recovery.files[worker_id]
        envelope = envelopes.get(worker_id)
        if is_deleted(envelope):  # its delete committed: nothing of it may remain
            if worker_id in recovery.on_disk:
                tomb = layout.path(os.path.join("workers", tombstone_name(worker_id)))
                ops.replace(layout.path(layout.worker_rel(worker_id)), tomb)
                ops.fsync_dir(layout.workers)
                remove_tree(ops, tomb)
            continue
        try:
            record, ends = _settle_worker(layout, files, envelope, recovery.found[worker_id])
        except (_Skip, StoreCorrupt) as exc:
            code = getattr(exc, "code", "store_corrupt")
            problems.append((code, exc.message, worker_id))
            # A damaged worker's id stays reserved; one whose creation never
            # committed was never acknowledged, so its id is free again.
            moved = [layout.worker_rel(worker_id)] if worker_id in recovery.on_disk else []
            reserve = exc.message if code == "store_corrupt" else None
            if moved or reserve:
                move_aside(layout, ops, worker_id, moved, problems, worker_id, reserve=reserve)
        else:
            problems.extend(recovery.found[worker_id])
            files.dir_exists = worker_id in recovery.on_disk
            files.events.events_from = ends.get("events_from", 0)
            committed_events[worker_id] = ends.get("events")
            workers[worker_id] = files, record
    _settle_worker_events(recovery, workers, committed_events, events, events_base)
    return workers


def _settle_worker_events(
    recovery: Scan,
    workers: dict[str, tuple[WorkerFiles, WorkerRecord]],
    committed: dict[str, int | None],
    events: JsonlLog[Event],
    events_base: int,
) -> None:
    """Check each worker's event index against its committed count and the event
    log; rebuild the ones that disagree from ``events.jsonl``, in one pass."""
    last = events_base + events.count

    def owner(event_id: int) -> str | None:
        if not events_base < event_id <= last:
            return None
        try:
            found = events.read(event_id - events_base - 1, 1)
        except StoreCorrupt:
            return None
        ref = found[0].worker_ref if found and found[0].event_id == event_id else None
        return ref.worker_id if ref is not None else None

    problems = recovery.problems
    rebuild: dict[str, WorkerFiles] = {}
    for worker_id, (files, _) in workers.items():
        try:
            ok = files.events.recover(
                committed[worker_id], functools.partial(_owned, owner, worker_id)
            )
        except SymlinkFound as exc:  # never followed: moved aside, and the index rebuilt
            problems.append(("store_corrupt", linked(recovery.layout, exc), worker_id))
            rel = files.events.rel
            move_aside(recovery.layout, recovery.ops, worker_id, [rel], problems, worker_id)
            ok = False
        if not ok:
            rebuild[worker_id] = files
    if not rebuild:
        return
    ids: dict[str, list[int]] = {worker_id: [] for worker_id in rebuild}
    for event in events.read_all(lambda problem: None):  # a bad line is reported elsewhere
        ref = event.worker_ref
        owned = ref is not None and ref.worker_id in ids
        if owned and event.event_id >= rebuild[ref.worker_id].events.events_from:  # type: ignore[union-attr]
            ids[ref.worker_id].append(event.event_id)  # type: ignore[union-attr]
    for worker_id, files in rebuild.items():
        if not files.dir_exists and not ids[worker_id]:
            continue  # nothing to index, and no directory to hold it yet
        if not files.dir_exists:
            files.dir_exists = True
            files.events.make_dir()
        files.events.rebuild(ids[worker_id])
        if committed[worker_id] is not None:  # version 1 had no event index: not a fault
            message = f"{files.events.rel} disagreed with events.jsonl; rebuilt it"
            problems.append(("store_index_rebuilt", message, worker_id))


def _owned(owner: Callable[[int], str | None], worker_id: str, event_id: int) -> bool:
    return owner(event_id) == worker_id


def _settle_worker(
    layout: Layout, files: WorkerFiles, envelope: Any, found: Problems
) -> tuple[WorkerRecord, dict[str, int]]:
    rel = layout.worker_rel(files.worker_id, "worker.json")
    linked = [message for code, message, _ in found if code == "store_corrupt"]
    if envelope is None and linked:  # a worker directory that is a link: never opened
        raise _Skip("store_corrupt", "; ".join(linked))
    if envelope is None:
        # Every committed worker has a record file or a journal line: these files
        # are from a creation that never committed (or the record file was lost).
        raise _Skip(
            "store_incomplete_worker",
            f"{rel} is missing: the worker's creation never committed, or the file was lost",
        )
    if isinstance(envelope, dict) and envelope.get("linked"):
        raise _Skip("store_corrupt", str(envelope["damaged"]))
    try:
        files.seq, record, ends = parse_worker(envelope, layout, files.worker_id)
    except ValueError as exc:
        raise _Skip("store_corrupt", f"{rel} line 1 is not a valid worker record: {exc}") from None
    for log, end in ((files.transcript, ends["transcript"]), (files.runs, ends["runs"])):
        _settle(log, end, found, files.worker_id)
    # A log that is a link was never opened (so never cut): it counts as empty.
    corrupt = [message for code, message, _ in found if code == "store_corrupt"]
    if corrupt:
        raise _Skip("store_corrupt", "; ".join(corrupt))
    count = files.transcript.count
    if record.transcript_len != count:
        raise _Skip(
            "store_corrupt",
            f"{files.transcript.rel} has {count} committed records; "
            f"{rel} says transcript_len {record.transcript_len}",
        )
    if count and files.transcript.read(count - 1, 1)[0].sequence != count - 1:
        raise _Skip("store_corrupt", f"{files.transcript.rel} line {count} is out of sequence")
    return record, ends
