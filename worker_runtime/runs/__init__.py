"""Runs: accepted input executed by an engine on a bounded pool, one module per part.

- ``lifecycle`` — :class:`RunLifecycle`, the only place a run's status changes:
  accept, queue, start, output, finish, cancel, time out, shut down, recover
  interrupted, and start the worker's next queued run;
- ``queue`` — each worker's FIFO of queued runs (``on_busy: "enqueue"``): pure
  helpers for room, removal and the worker's status after a change;
- ``pool`` — the threads that execute runs, and the job each worker has in flight;
- ``timers`` — run deadlines (the time-out's clock) and delayed output flushes;
- ``output`` — engine chunks coalesced into ``run_output`` events and the reply;
- ``recovery`` — after a crash: a run's reply rebuilt from its streamed output,
  and what is left of its engine's process group killed;
- ``job`` — a run in flight (:class:`Job`), an accepted input and how a cancelled
  run ended (:class:`Ended`).
"""

from __future__ import annotations

from .job import Ended, Job
from .lifecycle import RunLifecycle

__all__ = ["Ended", "Job", "RunLifecycle"]
