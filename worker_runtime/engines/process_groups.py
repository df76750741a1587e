"""Find and kill a run's process group left behind by a runtime that died.

The ``command`` engine starts each run's program as the leader of a new
process group and reports the group id (``RunContext.on_process_start``) so
that the core can record it durably. After a crash (``kill -9``, power loss
of the runtime only, OOM), the next start calls :func:`kill_stale_group` for
each interrupted run's recorded group.

A group id is a pid, and pids are reused: the group is only killed if one of
its live members carries the run's ``RUN_ID`` in its environment (the engine
sets it in every child; children inherit it), read from
``/proc/<pid>/environ``, so an unrelated group that happens to have the same
id is left alone. Needs Linux's ``/proc``; elsewhere nothing is ever proven
ours, and nothing is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

__all__ = ["group_members", "kill_stale_group"]

log = logging.getLogger("worker_runtime.engines.process")

PROC = Path("/proc")
DEFAULT_TERM_GRACE_S = 2.0
KILL_WAIT_S = 5.0
POLL_S = 0.05


def kill_stale_group(pgid: int, run_id: str, *, term_grace_s: float = DEFAULT_TERM_GRACE_S) -> bool:
    """Kill process group ``pgid`` if it is still alive and belongs to run ``run_id``.

    "Belongs" means at least one live member has ``RUN_ID=<run_id>`` in its
    environment. The group gets ``SIGTERM``, then ``SIGKILL`` if any member is
    still alive after ``term_grace_s``; the call returns once the members are
    gone (or after a bounded wait for ones that will not die). Returns True
    if it signalled the group, False if there was nothing to do: no live
    member, not ours, or no ``/proc`` to tell. Never touches group 0, 1 or
    the caller's own group.
    """
    if pgid <= 1 or pgid == os.getpgrp() or not PROC.is_dir():
        return False
    members = group_members(pgid)
    if not any(_has_run_id(pid, run_id) for pid in members):
        if members:
            log.warning("process group %d is alive but not run %s's: left alone", pgid, run_id)
        return False
    log.warning("killing process group %d, left behind by run %s", pgid, run_id)
    _signal(pgid, signal.SIGTERM)
    if not _wait_gone(pgid, term_grace_s):
        # Check again: once every member is gone the id is free for someone else.
        if any(_has_run_id(pid, run_id) for pid in group_members(pgid)):
            _signal(pgid, signal.SIGKILL)
        if not _wait_gone(pgid, KILL_WAIT_S):
            log.warning("process group %d did not die after SIGKILL", pgid)
    return True


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _has_run_id(pid: int, run_id: str) -> bool:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read (another user's): not proven ours
        return False
    return f"RUN_ID={run_id}".encode() in environ.split(b"\0")


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
