"""Handlers that create, find, list, stop and delete workers."""

from __future__ import annotations

from .. import commands as c
from .. import results as r
from ..domain import Severity, WorkerRecord, WorkerStatus, check_reason, check_worker_id
from ..errors import InvalidRequest, UnsupportedCapability, WorkerExists, WorkerNotStopped
from ..wire import check_command
from .context import Context, page_limit
from .views import worker_detail, worker_summary

__all__ = ["create_worker", "delete_worker", "get_worker", "list_workers", "stop_worker"]


def list_workers(ctx: Context, cmd: c.ListWorkers) -> r.WorkerPage:
    config = ctx.config
    limit = page_limit(cmd.limit, config.default_worker_page, config.max_worker_page)
    if cmd.after is not None:
        check_worker_id(cmd.after)
    with ctx.state.locked():
        if cmd.after is not None and ctx.state.find(cmd.after) is None:
            raise InvalidRequest("after does not name a worker", details={"field": "after"})
        records, more = ctx.state.page(after=cmd.after, status=cmd.status, limit=limit)
        page = tuple(worker_summary(ctx, record) for record in records)
        return r.WorkerPage(workers=page, next_after=page[-1].worker_id if more else None)


def get_worker(ctx: Context, cmd: c.GetWorker) -> r.WorkerDetail:
    check_worker_id(cmd.worker_id)
    with ctx.state.locked():
        return worker_detail(ctx, ctx.state.worker(cmd.worker_id))


def create_worker(ctx: Context, cmd: c.CreateWorker) -> r.WorkerDetail:
    if cmd.worker_id is not None:
        check_worker_id(cmd.worker_id)
    # In-process callers bypass decode_command; the record outlives the call,
    # so its nested values get the same schema check as the wire form.
    check_command(cmd)
    profile = ctx.profiles.resolve(cmd.profile)
    offered = ctx.profiles.engine_for(profile).capabilities | profile.capabilities
    missing = sorted({cap.name for cap in cmd.requested_capabilities} - offered)
    if missing:
        raise UnsupportedCapability(
            f"profile {profile.name!r} does not offer: {', '.join(missing)}",
            details={"field": "requested_capabilities", "unsupported": missing},
        )
    state = ctx.state
    with state.locked():
        state.check_available()
        worker_id = cmd.worker_id or state.fresh_worker_id()
        state.check_not_quarantined(worker_id)
        if state.find(worker_id) is not None:
            raise WorkerExists(
                f"worker {worker_id!r} already exists", details={"worker_id": worker_id}
            )
        event = state.emit("worker_created", worker_id)
        now = ctx.clock.now()
        record = WorkerRecord(
            runtime_id=state.runtime_id,
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
        state.add_worker(record)
        if cmd.config_bundle is None:
            state.diagnose(
                Severity.INFO,
                "created_without_config_bundle",
                f"worker {worker_id} runs on profile {profile.name!r} without a config bundle",
                worker_id,
            )
        return worker_detail(ctx, record)


def stop_worker(ctx: Context, cmd: c.StopWorker) -> r.StopAck:
    check_worker_id(cmd.worker_id)
    check_reason(cmd.reason)
    state = ctx.state
    with state.locked():
        state.worker(cmd.worker_id)
        state.await_stop(cmd.worker_id, ctx.config.cancel_grace_s + ctx.config.operation_timeout_s)
        record = state.worker(cmd.worker_id)
        if record.status is WorkerStatus.STOPPED:
            return r.StopAck(
                worker_ref=state.ref(cmd.worker_id),
                status=WorkerStatus.STOPPED,
                event_id=None,
                already_stopped=True,
                cancelled_run_id=None,
            )
        state.check_available()
        # Refuse new input from here on, while the active run winds down;
        # the queued runs end now, without starting.
        state.begin_stop(cmd.worker_id)
        ctx.runs.clear_queue(cmd.worker_id, cmd.reason or "worker stopped")
    try:
        ended = ctx.runs.cancel(cmd.worker_id, cmd.reason or "worker stopped")
        with state.locked():
            record = state.worker(cmd.worker_id)
            event = state.announce(
                record,
                "worker_stopped",
                data={"reason": cmd.reason},
                status=WorkerStatus.STOPPED,
                stop_reason=cmd.reason,
            )
    finally:
        with state.locked():
            state.end_stop(cmd.worker_id)
    return r.StopAck(
        worker_ref=state.ref(cmd.worker_id),
        status=WorkerStatus.STOPPED,
        event_id=event.event_id,
        already_stopped=False,
        cancelled_run_id=ended.run_id if ended else None,
    )


def delete_worker(ctx: Context, cmd: c.DeleteWorker) -> r.DeleteAck:
    check_worker_id(cmd.worker_id)
    state = ctx.state
    with state.locked():
        record = state.worker(cmd.worker_id)
        if record.status is not WorkerStatus.STOPPED or state.is_stopping(cmd.worker_id):
            raise WorkerNotStopped(
                f"worker {cmd.worker_id!r} is {record.status.value}; stop it first",
                details={"worker_id": cmd.worker_id, "status": record.status.value},
            )
        state.check_available()
        before = state.last_event_of(cmd.worker_id)
        event = state.emit("worker_deleted", cmd.worker_id)
        state.drop_worker(cmd.worker_id, event, before=before)
        return r.DeleteAck(worker_ref=state.ref(cmd.worker_id), event_id=event.event_id)
