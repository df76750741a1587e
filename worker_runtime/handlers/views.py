"""Read models: the results that describe workers and the runtime."""

from __future__ import annotations

from typing import Any

from ..domain import Run, RunStatus, WorkerRecord, WorkerStatus
from ..results import (
    Limits,
    ProfileInfo,
    RunInfo,
    RuntimeInfo,
    RunTotals,
    WorkerCounts,
    WorkerDetail,
    WorkerSummary,
)
from ..version import __version__
from .context import Context

__all__ = ["run_info", "runtime_info", "worker_detail", "worker_summary"]

_FINAL = tuple(s for s in RunStatus if not s.active)


def display_ref(ctx: Context, record: WorkerRecord) -> str:
    """``display_name@runtime name`` (ids when unnamed): a label, never a key."""
    runtime_name = ctx.config.display_name or ctx.state.runtime_id
    return f"{record.display_name or record.worker_id}@{runtime_name}"


def _common(ctx: Context, record: WorkerRecord) -> dict[str, Any]:
    return {
        "runtime_id": record.runtime_id,
        "worker_id": record.worker_id,
        "worker_ref": ctx.state.ref(record.worker_id),
        "display_name": record.display_name,
        "display_ref": display_ref(ctx, record),
        "status": record.status,
        "intent": record.intent,
        "profile": record.profile,
        "transcript_len": record.transcript_len,
        "last_event_id": record.last_event_id,
        "created_at": record.created_at,
    }


def run_info(ctx: Context, worker_id: str, run: Run) -> RunInfo:
    """The public form of a run record (its internal fields left out)."""
    return RunInfo(
        run_id=run.run_id,
        worker_ref=ctx.state.ref(worker_id),
        status=run.status,
        input_sequence=run.input_sequence,
        reply_sequence=run.reply_sequence,
        # Records written before queues had no queued_at: accepted when started.
        queued_at=run.queued_at or run.started_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        error=run.error,
        output_chars=run.output_chars,
    )


def worker_summary(ctx: Context, record: WorkerRecord) -> WorkerSummary:
    return WorkerSummary(**_common(ctx, record))


def worker_detail(ctx: Context, record: WorkerRecord) -> WorkerDetail:
    return WorkerDetail(
        **_common(ctx, record),
        updated_at=record.updated_at,
        config_bundle=record.config_bundle,
        requested_capabilities=record.requested_capabilities,
        workspace_refs=record.workspace_refs,
        mount_refs=record.mount_refs,
        active_run=run_info(ctx, record.worker_id, record.active_run)
        if record.active_run
        else None,
        last_run=run_info(ctx, record.worker_id, record.last_run) if record.last_run else None,
        last_error=record.last_error,
        usage=record.usage,
    )


def runtime_info(ctx: Context) -> RuntimeInfo:
    """The runtime summary (lock held)."""
    state, c = ctx.state, ctx.config
    counts, totals = state.counts(), state.run_totals()
    return RuntimeInfo(
        runtime_id=state.runtime_id,
        display_name=c.display_name,
        store=ctx.store.kind,
        status=state.status,
        version=__version__,
        started_at=state.started_at,
        workers=WorkerCounts(
            idle=counts[WorkerStatus.IDLE],
            running=counts[WorkerStatus.RUNNING],
            stopped=counts[WorkerStatus.STOPPED],
            total=len(state),
        ),
        active_runs=ctx.runs.count(),
        runs=RunTotals(**{s.value: totals.get(s, 0) for s in _FINAL}),
        queued_runs=state.queued_count(),
        waiters=state.waiting(),
        diagnostic_count=state.diagnostic_count,
        last_event_id=state.last_event_id,
        limits=Limits(
            max_transcript_page=c.max_transcript_page,
            default_transcript_page=c.default_transcript_page,
            max_worker_page=c.max_worker_page,
            default_worker_page=c.default_worker_page,
            max_event_page=c.max_event_page,
            default_event_page=c.default_event_page,
            max_event_wait_s=c.max_event_wait_s,
            max_input_chars=c.max_input_chars,
            run_timeout_s=c.run_timeout_s,
            operation_timeout_s=c.operation_timeout_s,
            max_concurrent_runs=c.max_concurrent_runs,
            max_queued_runs=c.max_queued_runs,
            max_waiters=c.max_waiters,
        ),
        profiles=tuple(
            ProfileInfo(
                name=p.name,
                kind=p.kind,
                engine=p.engine,
                timeout_s=p.timeout_s or c.run_timeout_s,
                capabilities=tuple(sorted(p.capabilities)),
            )
            for p in ctx.profiles.all()
        ),
        engines=tuple(ctx.profiles.engine_names()),
    )
