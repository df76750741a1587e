"""Read models: the results that describe workers and the runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import __version__
from .domain import WorkerRecord, WorkerStatus
from .results import (
    Limits,
    ProfileInfo,
    RuntimeInfo,
    RunTotals,
    WorkerCounts,
    WorkerDetail,
    WorkerSummary,
)

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["runtime_info", "worker_detail", "worker_summary"]


def display_ref(rt: Runtime, record: WorkerRecord) -> str:
    """``display_name@runtime name`` (ids when unnamed): a label, never a key."""
    return f"{record.display_name or record.worker_id}@{rt.display_name or rt.runtime_id}"


def _common(rt: Runtime, record: WorkerRecord) -> dict[str, Any]:
    return {
        "runtime_id": record.runtime_id,
        "worker_id": record.worker_id,
        "worker_ref": rt.ref(record.worker_id),
        "display_name": record.display_name,
        "display_ref": display_ref(rt, record),
        "status": record.status,
        "intent": record.intent,
        "profile": record.profile,
        "transcript_len": record.transcript_len,
        "last_event_id": record.last_event_id,
        "created_at": record.created_at,
    }


def worker_summary(rt: Runtime, record: WorkerRecord) -> WorkerSummary:
    return WorkerSummary(**_common(rt, record))


def worker_detail(rt: Runtime, record: WorkerRecord) -> WorkerDetail:
    return WorkerDetail(
        **_common(rt, record),
        updated_at=record.updated_at,
        config_bundle=record.config_bundle,
        requested_capabilities=record.requested_capabilities,
        workspace_refs=record.workspace_refs,
        mount_refs=record.mount_refs,
        active_run=record.active_run,
        last_run=record.last_run,
        last_error=record.last_error,
        usage=record.usage,
    )


def runtime_info(rt: Runtime) -> RuntimeInfo:
    """The runtime summary (lock held)."""
    counts = rt.counts()
    c = rt.config
    return RuntimeInfo(
        runtime_id=rt.runtime_id,
        display_name=rt.display_name,
        store=rt.store.kind,
        status=rt.status,
        version=__version__,
        started_at=rt.started_at,
        workers=WorkerCounts(
            idle=counts[WorkerStatus.IDLE],
            running=counts[WorkerStatus.RUNNING],
            stopped=counts[WorkerStatus.STOPPED],
            total=len(rt.workers),
        ),
        active_runs=rt.runs.count(),
        runs=_run_totals(rt),
        queued_runs=0,  # no queues yet
        waiters=rt.waiters,
        diagnostic_count=rt.diagnostic_count,
        last_event_id=rt.last_event_id,
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
        ),
        profiles=tuple(
            ProfileInfo(
                name=p.name,
                kind=p.kind,
                engine=p.engine,
                timeout_s=p.timeout_s or c.run_timeout_s,
                capabilities=tuple(sorted(p.capabilities)),
            )
            for p in rt.profiles.all()
        ),
        engines=tuple(rt.profiles.engine_names()),
    )


def _run_totals(rt: Runtime) -> RunTotals:
    # Summed from the workers' usage counters: a deleted worker's runs drop out.
    usages = [record.usage for record in rt.workers.values()]
    return RunTotals(
        completed=sum(u.runs_completed for u in usages),
        failed=sum(u.runs_failed for u in usages),
        cancelled=sum(u.runs_cancelled for u in usages),
        timed_out=sum(u.runs_timed_out for u in usages),
        interrupted=sum(u.runs_interrupted for u in usages),
    )
