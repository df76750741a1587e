"""Deleted workers' directories: moved aside to a tombstone, then removed.

A delete is committed by the flush's journal line, which names the tombstone
(``workers/.deleted-<worker_id>-<ns>``; a dot never starts a worker id, so a
tombstone is never taken for a worker). The flush renames the worker's
directory to it *before* writing that line (so a worker created again under
the id in the same flush gets a fresh directory) and removes it after the
line is durable. Loading settles what a crash left: a tombstone named by a
committed line is removed; any other one is the delete of a flush that never
committed, so it is renamed back (after moving aside the files of a new
worker under the id that the same uncommitted flush began).
"""

from __future__ import annotations

import os
import stat
import time

from ...domain import is_valid_id
from .fileops import FileOps, check_dir
from .layout import Layout

__all__ = ["DELETED", "PREFIX", "is_deleted", "remove_tree", "tombstone_name", "tombstones"]

PREFIX = ".deleted-"
DELETED = {"format": 1, "deleted": True}
"""The journal's record of a deleted worker."""


def is_deleted(envelope: object) -> bool:
    return isinstance(envelope, dict) and envelope.get("deleted") is True


def tombstone_name(worker_id: str) -> str:
    return f"{PREFIX}{worker_id}-{time.time_ns()}"


def tombstones(layout: Layout) -> dict[str, str]:
    """Each tombstone in ``workers/`` (by name) and the worker id it held."""
    check_dir(layout.workers)
    found: dict[str, str] = {}
    for entry in os.scandir(layout.workers):
        if not entry.name.startswith(PREFIX):
            continue
        worker_id, _, ns = entry.name[len(PREFIX) :].rpartition("-")
        if ns.isdigit() and is_valid_id(worker_id):
            found[entry.name] = worker_id
    return found


def remove_tree(ops: FileOps, path: str) -> None:
    """Remove ``path`` and everything below it, never following a link (a link is
    removed as a link)."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        ops.unlink(path)
        return
    for entry in os.scandir(path):
        remove_tree(ops, entry.path)
    ops.rmdir(path)
