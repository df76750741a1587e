"""Handlers that only read: the runtime summary, transcripts, events, diagnostics."""

from __future__ import annotations

from .. import commands as c
from .. import results as r
from ..domain import check_worker_id
from ..errors import CursorAhead, InvalidRequest
from .context import Context, check_wait, page_limit
from .views import runtime_info

__all__ = ["get_diagnostics", "get_runtime", "get_transcript", "read_events"]


def get_runtime(ctx: Context, cmd: c.GetRuntime) -> r.RuntimeInfo:
    with ctx.state.locked():
        return runtime_info(ctx)


def get_transcript(ctx: Context, cmd: c.GetTranscript) -> r.TranscriptPage:
    check_worker_id(cmd.worker_id)
    config = ctx.config
    limit = page_limit(cmd.limit, config.default_transcript_page, config.max_transcript_page)
    if cmd.start < 0:
        raise InvalidRequest("start must be 0 or more", details={"field": "start"})
    with ctx.state.locked():
        total = ctx.state.worker(cmd.worker_id).transcript_len
        items = ctx.store.read_transcript(
            cmd.worker_id, cmd.start, min(limit, max(total - cmd.start, 0))
        )
    end = cmd.start + len(items)
    return r.TranscriptPage(
        worker_ref=ctx.state.ref(cmd.worker_id),
        start=cmd.start,
        limit=limit,
        items=tuple(items),
        total_items=total,
        next_start=end if end < total else None,
    )


def read_events(ctx: Context, cmd: c.ReadEvents) -> r.EventPage:
    config, state = ctx.config, ctx.state
    limit = page_limit(cmd.limit, config.default_event_page, config.max_event_page)
    if cmd.cursor < 0:
        raise InvalidRequest("cursor must be 0 or more", details={"field": "cursor"})
    wait = check_wait(ctx, cmd.wait)
    worker_id = cmd.worker_id
    if worker_id is not None:
        check_worker_id(worker_id)
    deadline = ctx.clock.monotonic() + wait
    with state.locked():
        if worker_id is not None and state.find(worker_id) is None:
            return _deleted_page(ctx, worker_id, cmd.cursor)
        last = state.last_event_id
        if cmd.cursor > last + 1:
            # The log restarted behind the follower (a memory store): it must
            # reset, or it would wait for ids that come much later.
            raise CursorAhead(
                f"cursor {cmd.cursor} is past the next event id {last + 1}",
                details={"field": "cursor", "next_event_id": last + 1},
            )

        def newest() -> int:
            if worker_id is None:
                return state.last_event_id
            return state.last_event_of(worker_id) if state.find(worker_id) else cmd.cursor

        # Wait on the condition: a new event wakes us at once, no polling.
        if wait > 0:
            state.wait_until(lambda: newest() >= cmd.cursor, deadline)
            if worker_id is not None and state.find(worker_id) is None:
                # Deleted under the wait: the store no longer indexes its
                # events, but the follower must still see the delete.
                return _deleted_page(ctx, worker_id, cmd.cursor)
        events = ctx.store.read_events(cmd.cursor, limit, worker_id=worker_id)
        last = state.last_event_id
        newest_id = newest()
    if len(events) == limit:
        next_id = events[-1].event_id + 1
    else:
        # Every matching event up to the log's end was read: a filtered
        # follower skips the other workers' events in one step.
        next_id = (
            max(cmd.cursor, last + 1, 1)
            if worker_id is not None
            else (events[-1].event_id + 1 if events else max(cmd.cursor, 1))
        )
    return r.EventPage(
        events=tuple(events),
        cursor=r.EventCursor(next_event_id=next_id),
        has_more=next_id <= (newest_id if worker_id is not None else last),
    )


def _deleted_page(ctx: Context, worker_id: str, cursor: int) -> r.EventPage:
    """The page of a filtered read whose worker is gone (lock held): its
    ``worker_deleted`` event when that is all the read would have found (the
    cursor past the worker's earlier events, which stay in the runtime-wide
    log only, and not past the delete) and the table still remembers it, else
    ``worker_not_found``. The cursor moves past the log's end, so the next read
    of this id is ``worker_not_found``."""
    event = ctx.state.deleted_event(worker_id, cursor)
    return r.EventPage(
        events=(event,),
        cursor=r.EventCursor(next_event_id=max(cursor, ctx.state.last_event_id + 1)),
        has_more=False,
    )


def get_diagnostics(ctx: Context, cmd: c.GetDiagnostics) -> r.DiagnosticList:
    # Diagnostics grow with the runtime (one per worker created without a
    # config bundle), so they are read in pages like events.
    limit = page_limit(cmd.limit, ctx.config.default_event_page, ctx.config.max_event_page)
    if cmd.after < 0:
        raise InvalidRequest("after must be 0 or more", details={"field": "after"})
    with ctx.state.locked():
        # One more than asked tells whether another page follows.
        found = ctx.store.read_diagnostics(cmd.after, limit + 1)
    page = tuple(found[:limit])
    more = len(found) > limit
    return r.DiagnosticList(diagnostics=page, next_after=page[-1].id if more else None)
