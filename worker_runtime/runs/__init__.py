"""Runs: accepted input executed by an engine on a bounded pool.

- ``lifecycle`` — the only place a run's status changes (accept, start, output,
  finish, cancel, shutdown, recover interrupted);
- ``pool`` — the threads that execute runs, and each worker's job (where a
  per-worker queue goes);
- ``timers`` — deadlines (time-outs) and delayed output flushes;
- ``output`` — engine chunks coalesced into transcript entries;
- ``job`` — a run in flight.
"""

from __future__ import annotations

from .job import Ended, Job
from .lifecycle import RunLifecycle

__all__ = ["Ended", "Job", "RunLifecycle"]
