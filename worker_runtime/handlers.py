"""One plain function per command, and the registry the dispatcher is given.

A handler takes the runtime and its command and returns the command's result;
it raises typed errors only. Durability (``sync``) is the dispatcher's job,
after the handler returns, so several commands can share one flush.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import commands as c
from . import results as r
from .clock import new_id
from .domain import (
    Role,
    Run,
    RunStatus,
    Severity,
    TranscriptEntry,
    WorkerRecord,
    WorkerStatus,
    check_worker_id,
)
from .errors import (
    InvalidRequest,
    LimitTooLarge,
    OperationTimeout,
    UnsupportedCapability,
    WorkerBusy,
    WorkerExists,
    WorkerStopped,
)
from .runs import Job, cancel_active_run
from .views import runtime_info, worker_detail, worker_summary
from .wire import check_command

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["HANDLERS", "RESULT_TYPES", "Handler"]

Handler = Callable[["Runtime", Any], r.Result]


def _limit(requested: int | None, default: int, maximum: int) -> int:
    if requested is None:
        return default
    if requested > maximum:
        raise LimitTooLarge(
            f"limit {requested} is above the maximum of {maximum}",
            details={"field": "limit", "maximum": maximum},
        )
    if requested < 1:
        raise InvalidRequest("limit must be at least 1", details={"field": "limit"})
    return requested


def get_runtime(rt: Runtime, cmd: c.GetRuntime) -> r.RuntimeInfo:
    with rt.locked():
        return runtime_info(rt)


def list_workers(rt: Runtime, cmd: c.ListWorkers) -> r.WorkerPage:
    limit = _limit(cmd.limit, rt.config.default_worker_page, rt.config.max_worker_page)
    if cmd.after is not None:
        check_worker_id(cmd.after)
    with rt.locked():
        if cmd.after is not None and cmd.after not in rt.workers:
            raise InvalidRequest("after does not name a worker", details={"field": "after"})
        # Creation order is dict order; ``after`` resumes past the named worker.
        ids = list(rt.workers)
        begin = ids.index(cmd.after) + 1 if cmd.after is not None else 0
        page: list[r.WorkerSummary] = []
        position = begin
        for position in range(begin, len(ids)):
            record = rt.workers[ids[position]]
            if cmd.status is None or record.status == cmd.status:
                page.append(worker_summary(rt, record))
                if len(page) == limit:
                    break
        more = len(page) == limit and any(
            cmd.status is None or rt.workers[w].status == cmd.status for w in ids[position + 1 :]
        )
        return r.WorkerPage(workers=tuple(page), next_after=page[-1].worker_id if more else None)


def get_worker(rt: Runtime, cmd: c.GetWorker) -> r.WorkerDetail:
    check_worker_id(cmd.worker_id)
    with rt.locked():
        return worker_detail(rt, rt.worker(cmd.worker_id))


def create_worker(rt: Runtime, cmd: c.CreateWorker) -> r.WorkerDetail:
    if cmd.worker_id is not None:
        check_worker_id(cmd.worker_id)
    # In-process callers bypass decode_command; the record outlives the call,
    # so its nested values get the same schema check as the wire form.
    check_command(cmd)
    profile = rt.profiles.resolve(cmd.profile)
    offered = rt.profiles.engine_for(profile).capabilities | profile.capabilities
    missing = sorted({cap.name for cap in cmd.requested_capabilities} - offered)
    if missing:
        raise UnsupportedCapability(
            f"profile {profile.name!r} does not offer: {', '.join(missing)}",
            details={"field": "requested_capabilities", "unsupported": missing},
        )
    with rt.locked():
        rt.check_available()
        worker_id = cmd.worker_id or _fresh_worker_id(rt)
        rt.check_not_quarantined(worker_id)
        if worker_id in rt.workers:
            raise WorkerExists(
                f"worker {worker_id!r} already exists", details={"worker_id": worker_id}
            )
        event = rt.emit("worker_created", worker_id)
        now = rt.clock.now()
        record = WorkerRecord(
            runtime_id=rt.runtime_id,
            worker_id=worker_id,
            display_name=cmd.display_name,
            status=WorkerStatus.IDLE,
            intent=cmd.intent,
            profile=cmd.profile,
            config_bundle=cmd.config_bundle,
            requested_capabilities=cmd.requested_capabilities,
            workspace_refs=cmd.workspace_refs,
            mount_refs=cmd.mount_refs,
            created_at=now,
            updated_at=now,
            last_event_id=event.event_id,
        )
        rt.store.put_worker(record)
        rt.workers[worker_id] = record
        if cmd.config_bundle is None:
            rt.diagnose(
                Severity.INFO,
                "created_without_config_bundle",
                f"worker {worker_id} runs on profile {profile.name!r} without a config bundle",
                worker_id,
            )
        return worker_detail(rt, record)


def _fresh_worker_id(rt: Runtime) -> str:
    while (worker_id := new_id("w")) in rt.workers:
        pass
    return worker_id


def send_input(rt: Runtime, cmd: c.SendInput) -> r.InputAck:
    check_worker_id(cmd.worker_id)
    if not cmd.content or len(cmd.content) > rt.config.max_input_chars:
        raise InvalidRequest(
            f"content must be 1 to {rt.config.max_input_chars} characters",
            details={"field": "content", "maximum": rt.config.max_input_chars},
        )
    with rt.locked():
        rt.check_available()
        record = rt.worker(cmd.worker_id)
        if record.status is WorkerStatus.STOPPED or cmd.worker_id in rt.stopping:
            raise WorkerStopped(
                f"worker {cmd.worker_id!r} is stopped", details={"worker_id": cmd.worker_id}
            )
        if record.active_run is not None:
            raise WorkerBusy(
                f"worker {cmd.worker_id!r} is running {record.active_run.run_id}",
                details={"worker_id": cmd.worker_id, "run_id": record.active_run.run_id},
            )
        profile = rt.profiles.resolve(record.profile)
        run_id = new_id("run")
        sequence = record.transcript_len
        event = rt.emit("input_accepted", cmd.worker_id, run_id, sequence=sequence)
        entry = TranscriptEntry(
            sequence=sequence,
            role=Role(cmd.kind.value),
            content=cmd.content,
            event_id=event.event_id,
            created_at=event.created_at,
            run_id=run_id,
        )
        rt.store.append_transcript(cmd.worker_id, entry)
        run = Run(
            run_id=run_id,
            status=RunStatus.QUEUED,
            input_sequence=sequence,
            started_at=event.created_at,
        )
        usage = dataclasses.replace(record.usage, inputs=record.usage.inputs + 1)
        rt.save_worker(
            record,
            status=WorkerStatus.RUNNING,
            active_run=run,
            usage=usage,
            transcript_len=sequence + 1,
            last_event_id=event.event_id,
        )
        rt.runs.submit(
            Job(
                worker_id=cmd.worker_id,
                run_id=run_id,
                entry=entry,
                intent=record.intent,
                engine=rt.profiles.engine_for(profile),
                timeout_s=profile.timeout_s or rt.config.run_timeout_s,
            )
        )
        return r.InputAck(
            worker_ref=rt.ref(cmd.worker_id),
            status=WorkerStatus.RUNNING,
            event_id=event.event_id,
            run_id=run_id,
            transcript_sequence=sequence,
        )


def cancel_run(rt: Runtime, cmd: c.CancelRun) -> r.CancelAck:
    check_worker_id(cmd.worker_id)
    # With a run_id, only that run is cancelled, checked under the same lock
    # hold as the abort: a newer run started meanwhile is never touched.
    ended = cancel_active_run(rt, cmd.worker_id, cmd.reason, only_run_id=cmd.run_id)
    with rt.locked():
        record = rt.worker(cmd.worker_id)
        if ended is None and cmd.run_id is not None:
            # The named run is not active: report how it ended, cancel nothing.
            past = rt.store.get_run(cmd.worker_id, cmd.run_id)
            if past is None:
                raise InvalidRequest(
                    f"worker {cmd.worker_id!r} has no run {cmd.run_id!r}",
                    details={"field": "run_id"},
                )
            return r.CancelAck(
                worker_ref=rt.ref(cmd.worker_id),
                status=record.status,
                event_id=None,
                cancelled_run_id=None,
                run_id=past.run_id,
                run_status=past.status.value,
            )
    return r.CancelAck(
        worker_ref=rt.ref(cmd.worker_id),
        status=record.status,
        event_id=ended.event_id if ended else None,
        cancelled_run_id=ended.run_id if ended else None,
        run_id=ended.run_id if ended else None,
        run_status=ended.status.value if ended and ended.status else None,
    )


def stop_worker(rt: Runtime, cmd: c.StopWorker) -> r.StopAck:
    check_worker_id(cmd.worker_id)
    with rt.locked():
        rt.worker(cmd.worker_id)
        _await_other_stop(rt, cmd.worker_id)
        record = rt.worker(cmd.worker_id)
        if record.status is WorkerStatus.STOPPED:
            return r.StopAck(
                worker_ref=rt.ref(cmd.worker_id),
                status=WorkerStatus.STOPPED,
                event_id=None,
                already_stopped=True,
                cancelled_run_id=None,
            )
        rt.check_available()
        # Refuse new input from here on, while the active run winds down.
        rt.stopping.add(cmd.worker_id)
    try:
        ended = cancel_active_run(rt, cmd.worker_id, cmd.reason or "worker stopped")
        with rt.locked():
            record = rt.worker(cmd.worker_id)
            event = rt.emit("worker_stopped", cmd.worker_id, reason=cmd.reason)
            rt.save_worker(
                record,
                status=WorkerStatus.STOPPED,
                stop_reason=cmd.reason,
                last_event_id=event.event_id,
            )
    finally:
        with rt.locked():
            rt.stopping.discard(cmd.worker_id)
            rt.events_changed.notify_all()  # wakes a second stop waiting on this one
    return r.StopAck(
        worker_ref=rt.ref(cmd.worker_id),
        status=WorkerStatus.STOPPED,
        event_id=event.event_id,
        already_stopped=False,
        cancelled_run_id=ended.run_id if ended else None,
    )


def _await_other_stop(rt: Runtime, worker_id: str) -> None:
    """Wait (lock held) for a stop already in progress, so that a second stop
    answers "already stopped" only once the worker really is stopped."""
    deadline = rt.clock.monotonic() + rt.config.cancel_grace_s + rt.config.operation_timeout_s
    while worker_id in rt.stopping:
        remaining = deadline - rt.clock.monotonic()
        if remaining <= 0:
            raise OperationTimeout(
                f"worker {worker_id!r} is still stopping", details={"worker_id": worker_id}
            )
        rt.events_changed.wait(remaining)


def get_transcript(rt: Runtime, cmd: c.GetTranscript) -> r.TranscriptPage:
    check_worker_id(cmd.worker_id)
    limit = _limit(cmd.limit, rt.config.default_transcript_page, rt.config.max_transcript_page)
    if cmd.start < 0:
        raise InvalidRequest("start must be 0 or more", details={"field": "start"})
    with rt.locked():
        total = rt.worker(cmd.worker_id).transcript_len
        items = rt.store.read_transcript(
            cmd.worker_id, cmd.start, min(limit, max(total - cmd.start, 0))
        )
    end = cmd.start + len(items)
    return r.TranscriptPage(
        worker_ref=rt.ref(cmd.worker_id),
        start=cmd.start,
        limit=limit,
        items=tuple(items),
        total_items=total,
        next_start=end if end < total else None,
    )


def read_events(rt: Runtime, cmd: c.ReadEvents) -> r.EventPage:
    limit = _limit(cmd.limit, rt.config.default_event_page, rt.config.max_event_page)
    if cmd.cursor < 0:
        raise InvalidRequest("cursor must be 0 or more", details={"field": "cursor"})
    # NaN passes every comparison, and a NaN deadline would spin forever.
    if not (math.isfinite(cmd.wait) and 0 <= cmd.wait <= rt.config.max_event_wait_s):
        raise InvalidRequest(
            f"wait must be 0 to {rt.config.max_event_wait_s:g} seconds",
            details={"field": "wait", "maximum": rt.config.max_event_wait_s},
        )
    deadline = rt.clock.monotonic() + cmd.wait
    with rt.locked():
        # Wait on the condition: a new event wakes us at once, no polling.
        # Counted under the lock, so others only see it while ``wait`` released it.
        rt.waiters += 1
        try:
            while cmd.cursor > rt.last_event_id and rt.status == "running":
                remaining = deadline - rt.clock.monotonic()
                if remaining <= 0:
                    break
                rt.events_changed.wait(remaining)
        finally:
            rt.waiters -= 1
        events = rt.store.read_events(cmd.cursor, limit)
        last = rt.last_event_id
    next_id = events[-1].event_id + 1 if events else max(cmd.cursor, 1)
    return r.EventPage(
        events=tuple(events), cursor=r.EventCursor(next_event_id=next_id), has_more=next_id <= last
    )


def get_diagnostics(rt: Runtime, cmd: c.GetDiagnostics) -> r.DiagnosticList:
    # Diagnostics grow with the runtime (one per worker created without a
    # config bundle), so they are read in pages like events.
    limit = _limit(cmd.limit, rt.config.default_event_page, rt.config.max_event_page)
    if cmd.after < 0:
        raise InvalidRequest("after must be 0 or more", details={"field": "after"})
    with rt.locked():
        # One more than asked tells whether another page follows.
        found = rt.store.read_diagnostics(cmd.after, limit + 1)
    page = tuple(found[:limit])
    more = len(found) > limit
    return r.DiagnosticList(diagnostics=page, next_after=page[-1].id if more else None)


HANDLERS: Mapping[type[c.Command[Any]], Handler] = {
    c.GetRuntime: get_runtime,
    c.ListWorkers: list_workers,
    c.GetWorker: get_worker,
    c.CreateWorker: create_worker,
    c.SendInput: send_input,
    c.StopWorker: stop_worker,
    c.CancelRun: cancel_run,
    c.GetTranscript: get_transcript,
    c.ReadEvents: read_events,
    c.GetDiagnostics: get_diagnostics,
}

ONE_HOLD: frozenset[type[c.Command[Any]]] = frozenset({c.CreateWorker, c.SendInput})
"""Handlers that do all their work in one hold of the state lock and never wait
for a run: safe to call with the lock already held."""

RESULT_TYPES: Mapping[type[c.Command[Any]], type[r.Result]] = {
    c.GetRuntime: r.RuntimeInfo,
    c.ListWorkers: r.WorkerPage,
    c.GetWorker: r.WorkerDetail,
    c.CreateWorker: r.WorkerDetail,
    c.SendInput: r.InputAck,
    c.StopWorker: r.StopAck,
    c.CancelRun: r.CancelAck,
    c.GetTranscript: r.TranscriptPage,
    c.ReadEvents: r.EventPage,
    c.GetDiagnostics: r.DiagnosticList,
}
