"""Handlers that read a worker's runs: the history page, and one run (with a wait)."""

from __future__ import annotations

from .. import commands as c
from .. import results as r
from ..domain import check_run_id, check_worker_id
from ..errors import InvalidRequest, RunNotFound
from .context import Context, check_wait, page_limit
from .views import run_info

__all__ = ["get_run", "list_runs"]


def list_runs(ctx: Context, cmd: c.ListRuns) -> r.RunPage:
    check_worker_id(cmd.worker_id)
    config = ctx.config
    limit = page_limit(cmd.limit, config.default_worker_page, config.max_worker_page)
    if cmd.after is not None:
        check_worker_id(cmd.after)  # run ids follow the same pattern
    with ctx.state.locked():
        ctx.state.worker(cmd.worker_id)
        if cmd.after is not None and ctx.store.get_run(cmd.worker_id, cmd.after) is None:
            raise InvalidRequest(
                "after does not name a run of the worker", details={"field": "after"}
            )
        # One more than asked tells whether another page follows: O(limit).
        found = ctx.store.list_runs(cmd.worker_id, cmd.after, limit + 1)
    page = tuple(run_info(ctx, cmd.worker_id, run) for run in found[:limit])
    return r.RunPage(runs=page, next_after=page[-1].run_id if len(found) > limit else None)


def get_run(ctx: Context, cmd: c.GetRun) -> r.RunInfo:
    check_worker_id(cmd.worker_id)
    check_run_id(cmd.run_id)
    wait = check_wait(ctx, cmd.wait)
    state = ctx.state
    deadline = ctx.clock.monotonic() + wait
    with state.locked():
        state.worker(cmd.worker_id)
        if ctx.store.get_run(cmd.worker_id, cmd.run_id) is None:
            raise RunNotFound(
                f"worker {cmd.worker_id!r} has no run {cmd.run_id!r}",
                details={"worker_id": cmd.worker_id, "run_id": cmd.run_id},
            )

        def ended() -> bool:
            # Active or queued runs are on the record: no store read per wake-up.
            record = state.find(cmd.worker_id)
            if record is None:
                return True  # deleted meanwhile
            active = record.active_run is not None and record.active_run.run_id == cmd.run_id
            return not active and cmd.run_id not in record.queued

        if wait > 0:
            state.wait_until(ended, deadline)
        run = ctx.store.get_run(cmd.worker_id, cmd.run_id)
    if run is None:
        raise RunNotFound(
            f"worker {cmd.worker_id!r} has no run {cmd.run_id!r}",
            details={"worker_id": cmd.worker_id, "run_id": cmd.run_id},
        )
    return run_info(ctx, cmd.worker_id, run)
