"""Handlers that start and cancel runs: input in (started or queued), cancel out."""

from __future__ import annotations

from .. import commands as c
from .. import results as r
from ..domain import Role, WorkerStatus, check_reason, check_run_id, check_worker_id
from ..errors import InvalidRequest
from .context import Context

__all__ = ["cancel_run", "send_input"]


def send_input(ctx: Context, cmd: c.SendInput) -> r.InputAck:
    check_worker_id(cmd.worker_id)
    maximum = ctx.config.max_input_chars
    if not cmd.content or len(cmd.content) > maximum:
        raise InvalidRequest(
            f"content must be 1 to {maximum} characters",
            details={"field": "content", "maximum": maximum},
        )
    with ctx.state.locked():
        ctx.state.check_available()
        record = ctx.state.worker(cmd.worker_id)
        accepted = ctx.runs.accept(
            record, role=Role(cmd.kind.value), content=cmd.content, on_busy=cmd.on_busy
        )
        return r.InputAck(
            worker_ref=ctx.state.ref(cmd.worker_id),
            status=WorkerStatus.RUNNING,
            event_id=accepted.event_id,
            run_id=accepted.run_id,
            transcript_sequence=accepted.transcript_sequence,
            run_status="queued" if accepted.queued else "running",
        )


def cancel_run(ctx: Context, cmd: c.CancelRun) -> r.CancelAck:
    check_worker_id(cmd.worker_id)
    check_reason(cmd.reason)
    if cmd.run_id is not None:
        check_run_id(cmd.run_id)
    # With a run_id, only that run is cancelled, checked under the same lock
    # hold as the abort: a newer run started meanwhile is never touched.
    ended = ctx.runs.cancel(cmd.worker_id, cmd.reason, only_run_id=cmd.run_id)
    state = ctx.state
    with state.locked():
        record = state.worker(cmd.worker_id)
        if ended is None and cmd.run_id is not None:
            # The named run is not active: report how it ended, cancel nothing.
            past = ctx.store.get_run(cmd.worker_id, cmd.run_id)
            if past is None:
                raise InvalidRequest(
                    f"worker {cmd.worker_id!r} has no run {cmd.run_id!r}",
                    details={"field": "run_id"},
                )
            return r.CancelAck(
                worker_ref=state.ref(cmd.worker_id),
                status=record.status,
                event_id=None,
                cancelled_run_id=None,
                run_id=past.run_id,
                run_status=past.status.value,
            )
    return r.CancelAck(
        worker_ref=state.ref(cmd.worker_id),
        status=record.status,
        event_id=ended.event_id if ended else None,
        cancelled_run_id=ended.run_id if ended else None,
        run_id=ended.run_id if ended else None,
        run_status=ended.status.value if ended and ended.status else None,
    )
