"""What a crash left: record files, commit lines and logs, each opened as found.

``load.py`` then decides what was committed and cuts everything back to it.
"""

from __future__ import annotations

import os
from typing import Any

from ...domain import is_valid_id
from .fileops import FileOps, SymlinkFound, check_dir
from .jsonl import JsonlLog, LogProblem
from .layout import (
    COMPACTING,
    EVENTS_TAIL,
    RUNTIME,
    Layout,
    WorkerFiles,
    load_envelope,
    open_log,
)
from .quarantine import Problems, move_aside

__all__ = [
    "CODES",
    "SHARED",
    "Problems",
    "Scan",
    "journal_lines",
    "linked",
    "record_files",
    "report",
    "tombstones_of",
]

SHARED = ("events", "diagnostics", "idempotency")
CODES = {"torn": "store_torn_tail", "corrupt": "store_corrupt", "index": "store_index_rebuilt"}


class Scan:
    """The files as found at start-up, then cut back to the committed state
    (``load.py`` decides; a log's own torn-tail repair is ``recovery.py``'s)."""

    def __init__(self, layout: Layout, ops: FileOps) -> None:
        self.layout, self.ops = layout, ops
        self.problems: Problems = []
        self.shared = {
            name: open_log(
                layout, f"{name}.jsonl", ops, keep=EVENTS_TAIL if name == "events" else 0
            )
            for name in SHARED
        }
        self.on_disk, self.linked = worker_dirs(layout)
        self.files: dict[str, WorkerFiles] = {}
        self.found: dict[str, Problems] = {}  # problems of each worker's logs

    def recover_logs(self, worker_ids: set[str]) -> None:
        """Open every log as the crash left it (torn tails cut, indexes updated)."""
        for name, log in self.shared.items():
            self._recover_shared(name, log)
        for worker_id in sorted(worker_ids):
            self.open_worker(worker_id)

    def _recover_shared(self, name: str, log: JsonlLog[Any]) -> None:
        """Open a runtime-wide log; a link in its place is moved aside (as a link)."""
        index = os.path.relpath(log.index_path, self.layout.root)
        try:
            report(log.recover(), self.problems, None)
            return
        except SymlinkFound as exc:
            self.problems.append(("store_corrupt", linked(self.layout, exc), None))
            if exc.filename != log.index_path:
                # The log then holds fewer records than were committed, which
                # loading reports with both counts.
                move_aside(self.layout, self.ops, name, [log.rel, index], self.problems, None)
                return
        # Only the index, derived data: it alone goes, and is rebuilt from the log.
        move_aside(self.layout, self.ops, name, [index], self.problems, None)
        report(log.recover(), self.problems, None)

    def open_worker(self, worker_id: str) -> None:
        """Open one worker's logs as the crash left them (again, after a restore)."""
        files = WorkerFiles.create(self.layout, worker_id, 0, self.ops)
        found: Problems = []
        if worker_id in self.linked:
            path = self.layout.path(self.layout.worker_rel(worker_id))
            found.append(("store_corrupt", linked(self.layout, SymlinkFound(path)), worker_id))
        else:
            for log in files.logs():
                try:
                    report(log.recover(), found, worker_id)
                except SymlinkFound as exc:
                    found.append(("store_corrupt", linked(self.layout, exc), worker_id))
        self.files[worker_id], self.found[worker_id] = files, found

    def log(self, key: str, name: str) -> JsonlLog[Any] | None:
        if key == RUNTIME:
            return self.shared.get(name)
        files = self.files.get(key)
        if files is None:
            return None
        # The event index is derived data (rebuilt if short), never a commit's proof.
        logs: dict[str, JsonlLog[Any]] = {"transcript": files.transcript, "runs": files.runs}
        return logs.get(name)

    def reached(self, line: dict[str, Any]) -> bool:
        """True if every log the journal ``line`` names is as long as it says (or,
        for a log it announces a compaction of, as long as announced)."""
        for key, envelope in line["records"].items():
            if key in self.linked:
                continue  # never opened: it is reported and moved aside
            ends = envelope.get("ends") if isinstance(envelope, dict) else None
            announced = envelope.get(COMPACTING) if isinstance(envelope, dict) else None
            for name, end in (ends or {}).items():
                log = self.log(key, name) if name != "events_base" else None
                if log is None or not isinstance(end, int) or log.count >= end:
                    continue
                if not (isinstance(announced, dict) and announced.get(name) == log.count):
                    return False
        return True


def worker_dirs(layout: Layout) -> tuple[set[str], set[str]]:
    """Every worker directory's id (links included), and the ids that are links."""
    check_dir(layout.workers)
    on_disk: set[str] = set()
    links: set[str] = set()
    for entry in os.scandir(layout.workers):
        if not is_valid_id(entry.name):
            continue
        if entry.is_symlink():
            on_disk.add(entry.name)
            links.add(entry.name)
        elif entry.is_dir(follow_symlinks=False):
            on_disk.add(entry.name)
    return on_disk, links


def linked(layout: Layout, found: SymlinkFound) -> str:
    """The message for a link found where the store keeps its own file."""
    rel = os.path.relpath(str(found.filename), layout.root)
    return f"{rel} is a symbolic link: the store never follows one (left untouched, moved aside)"


def record_files(
    layout: Layout, ops: FileOps, worker_ids: set[str], links: set[str]
) -> dict[str, Any]:
    """The envelope in each record file, by key; a damaged one is kept as
    ``{"damaged": why}`` so that parsing it fails and says why."""
    envelopes: dict[str, Any] = {}
    rels = [(RUNTIME, "runtime.json")]
    rels += [(wid, layout.worker_rel(wid, "worker.json")) for wid in sorted(worker_ids - links)]
    for key, rel in rels:
        try:
            data = ops.read_file(layout.path(rel))
        except SymlinkFound as exc:
            envelopes[key] = {"damaged": linked(layout, exc), "linked": True}
            continue
        if data is not None:
            try:
                envelopes[key] = load_envelope(data)
            except ValueError as exc:
                envelopes[key] = {"damaged": str(exc)}
    return envelopes


def tombstones_of(line: dict[str, Any]) -> set[str]:
    """The tombstones a commit line names (deleted workers' directories)."""
    names = line.get("tombstones")
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def journal_lines(journal: JsonlLog[dict[str, Any]], problems: Problems) -> list[dict[str, Any]]:
    """The commit lines, the torn end cut. Past a damaged line nothing is known
    to be committed, so the lines after it are not used (and that is reported)."""
    report(journal.recover(), problems, None)
    bad: list[LogProblem] = []
    lines = journal.read_all(bad.append)
    if bad:
        problems.append(("store_corrupt", bad[0].message + "; later commits are ignored", None))
        lines = lines[: (bad[0].line or 1) - 1]
    return lines


def report(found: list[LogProblem], problems: Problems, worker_id: str | None) -> None:
    problems.extend((CODES[p.kind], p.message, worker_id) for p in found)
