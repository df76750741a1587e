"""Damaged files moved aside (never deleted), and the worker ids they keep reserved.

A worker that cannot be loaded is moved to
``quarantine/workers/<worker_id>-<ns>/`` with a ``problem.txt`` saying why.
While that directory exists the id stays reserved: every command on it is
``store_corrupt`` naming the damaged file, so no one creates a fresh worker
under an id whose history is in doubt. An operator frees the id by removing
the directory. Runtime-wide logs go to ``quarantine/<name>-<ns>/``.
"""

from __future__ import annotations

import os
import time

from ...domain import is_valid_id
from .fileops import FileOps, SymlinkFound, check_dir
from .layout import Layout

__all__ = ["PROBLEM_FILE", "Problems", "move_aside", "quarantined_workers"]

Problems = list[tuple[str, str, str | None]]
"""Diagnostics for the runtime: (code, message, worker id or None)."""

PROBLEM_FILE = "problem.txt"
_MAX_PROBLEM = 2000


def move_aside(
    layout: Layout,
    ops: FileOps,
    name: str,
    rels: list[str],
    problems: Problems,
    worker_id: str | None,
    *,
    reserve: str | None = None,
) -> None:
    """Move ``rels`` (a link is moved as a link) into a new quarantine directory;
    with ``reserve`` (why), the worker's id stays reserved while it is there."""
    parent = layout.path("quarantine")
    ops.mkdir(parent)
    if reserve is not None:
        parent = os.path.join(parent, "workers")
        ops.mkdir(parent)
    target = os.path.join(parent, f"{name}-{time.time_ns()}")
    ops.mkdir(target)
    if reserve is not None:
        ops.write_synced(os.path.join(target, PROBLEM_FILE), reserve.encode("utf-8", "replace"))
    for rel in rels:
        source = layout.path(rel).rstrip("/")
        if os.path.lexists(source):
            ops.replace(source, os.path.join(target, os.path.basename(source)))
            ops.fsync_dir(os.path.dirname(source))
    ops.fsync_dir(target)
    ops.fsync_dir(os.path.dirname(target))
    moved = os.path.relpath(target, layout.root)
    problems.append(("store_quarantined", f"the damaged files were moved to {moved}", worker_id))


def quarantined_workers(layout: Layout, ops: FileOps) -> dict[str, str]:
    """Each reserved worker id and why: ``quarantine/workers/<id>-<ns>/`` directories."""
    parent = layout.path(os.path.join("quarantine", "workers"))
    try:
        check_dir(parent)
        entries = sorted(os.scandir(parent), key=lambda e: e.name)
    except (FileNotFoundError, SymlinkFound):
        return {}
    reserved: dict[str, str] = {}
    for entry in entries:
        worker_id, _, ns = entry.name.rpartition("-")
        if not (ns.isdigit() and is_valid_id(worker_id)) or entry.is_symlink():
            continue
        rel = os.path.relpath(entry.path, layout.root)
        try:
            data = ops.read_file(os.path.join(entry.path, PROBLEM_FILE)) or b""
        except OSError:
            data = b""
        problem = data[:_MAX_PROBLEM].decode("utf-8", "replace").strip() or "it was damaged"
        reserved[worker_id] = (
            f"worker {worker_id!r} is quarantined: {problem} (its files are kept in {rel}; "
            "an operator removes that directory to use the id again)"
        )
    return reserved
