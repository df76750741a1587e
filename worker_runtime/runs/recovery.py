"""Recovery after a crash: what a run left behind, read back and cleaned up.

A run that was active when the process died cannot resume: the lifecycle ends
it ``interrupted`` (``RunLifecycle.recover``). Before that, this module
rebuilds its reply from the ``run_output`` events that reached the store
(SPEC section 7) and kills what is left of its engine's process group, if
that group is still alive and still the run's. Queued runs then start in
order (``RunLifecycle.resume_queued``).
"""

from __future__ import annotations

import logging

from ..domain import Run
from ..engines import kill_stale_group
from ..stores import Store

__all__ = ["kill_left_over", "rebuilt_reply"]

log = logging.getLogger("worker_runtime.runs")

_PAGE = 1000


def rebuilt_reply(store: Store, worker_id: str, run: Run) -> str:
    """The reply run ``run`` had streamed, from its durable ``run_output`` events.

    Pieces are taken while their offsets follow on from each other; a gap (a
    piece lost in the crash) ends the reply there, so it is always a prefix of
    what the engine wrote. Reads only this worker's events from the run's
    input on.
    """
    cursor = 0
    if run.input_sequence is not None:
        entries = store.read_transcript(worker_id, run.input_sequence, 1)
        if entries:
            cursor = entries[0].event_id
    parts: list[str] = []
    expected = 0
    while True:
        events = store.read_events(cursor, _PAGE, worker_id=worker_id)
        for event in events:
            if event.type != "run_output" or event.run_id != run.run_id:
                continue
            text, offset = event.data.get("text"), event.data.get("offset")
            if not isinstance(text, str) or offset != expected:
                return "".join(parts)
            parts.append(text)
            expected += len(text)
        if len(events) < _PAGE:
            return "".join(parts)
        cursor = events[-1].event_id + 1


def kill_left_over(run: Run) -> None:
    """Kill the run's engine process group if it outlived the crash (and is the run's)."""
    if run.pgid is None:
        return
    try:
        kill_stale_group(run.pgid, run.run_id)
    except OSError as exc:  # recovery goes on: the group is reported, not fatal
        log.warning("process group %d of run %s: %s", run.pgid, run.run_id, exc)
