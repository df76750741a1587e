"""One worker's run index: its runs in first-put order, and where each one's latest version is.

``runs.jsonl`` holds every version of every run (latest wins; a run's place is
where it was first put). Two files beside it find a run, or a page of runs,
without reading the log:

- ``runs.order``: a 16-byte header (how many lines of ``runs.jsonl`` the files
  describe, and how many runs), then a 16-byte entry per run in first-put
  order: the line of its latest version, and a fingerprint of its id;
- ``runs.ids``: a hash table of those fingerprints (16-byte slots: fingerprint,
  position + 1), at most half full, so a run id is found in about one read.

They are derived data, written only at checkpoints (in the background one,
and on close) and only for committed lines: entries first, then the header, each
fsynced, so the header always says how much of the log the files describe. The
versions after that (written since the worker's last checkpoint, or staged) are
read once per process on first use and kept in memory until the next checkpoint
writes them. So a ``ListRuns`` page or a ``GetRun`` costs O(limit) file reads,
plus once per process the lines written since the last checkpoint (bounded by
the checkpoint interval), never the whole history. A header that does not fit
the log, or an entry that disagrees with it, makes the index start again from
the log's first line until the next checkpoint has written them again (a
warning is logged; the files are derived data, so nothing is lost).

Threading: the owning store calls everything with its mutex held, except
:meth:`RunIndex.write`, which a checkpoint calls for a :meth:`RunIndex.snapshot`
taken under the mutex: flushes may go on meanwhile (they append past what it
covers), and readers take the versions in memory over an entry it changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ...domain import Run
from .fileops import FileOps
from .jsonl import JsonlLog

__all__ = ["RunIndex", "Snapshot"]

ENTRY = struct.Struct("<QQ")  # an order entry (line, fingerprint), a slot, or the header
MIN_SLOTS = 64
T = TypeVar("T")
log = logging.getLogger("worker_runtime.stores")


def fingerprint(run_id: str) -> int:
    """A stable 64-bit hash of a run id (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "little")


class _Disagrees(Exception):
    """An entry does not describe the log: the index starts again."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """What :meth:`RunIndex.write` puts in the files: the log's first ``covered``
    lines, committed; ``entries``: (position, line, fingerprint) to write."""

    covered: int
    runs: int
    entries: list[tuple[int, int, int]]
    generation: int


class RunIndex:
    """The runs of one worker: in the files (``indexed`` of them, describing the
    first ``covered`` lines of the log), and versions since, in memory."""

    def __init__(self, runs: JsonlLog[Run], ops: FileOps) -> None:
        base = runs.path.removesuffix(".jsonl")
        self.order_path, self.ids_path = base + ".order", base + ".ids"
        self._log = runs
        self._ops = ops
        self._loaded = False
        self._distrust = False  # the files disagreed with the log: not read again
        self._generation = 0  # counts resets (a snapshot from before one is void)
        self._covered = 0
        self._indexed = 0
        self._new: list[str] = []  # runs not in the files, in first-put order
        self._versions: dict[str, list[int]] = {}  # lines of each run's versions since
        self._latest: dict[str, Run] = {}  # and its latest version
        self._position: dict[str, int] = {}  # positions (in the files or to be)

    # -- reading (mutex held) ---------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        """The latest version of ``run_id``, or None."""
        return self._retrying(lambda: self._get(run_id))

    def page(self, after: str | None, limit: int) -> list[Run]:
        """Up to ``limit`` runs after run ``after`` in first-put order (from the
        first if None; ``[]`` if ``after`` is not a run of this worker)."""
        return self._retrying(lambda: self._page(after, limit))

    def _retrying(self, read: Callable[[], T]) -> T:
        try:
            self.load()
            return read()
        except _Disagrees as exc:
            log.warning("%s: %s; reading the run history from its log", self.order_path, exc)
            self._reset(distrust=True)
            self.load()
            return read()

    def _get(self, run_id: str) -> Run | None:
        latest = self._latest.get(run_id)
        if latest is not None:
            return latest
        position = self._find(run_id)
        return None if position is None else self._read(position, position + 1)[0][1]

    def _page(self, after: str | None, limit: int) -> list[Run]:
        begin = 0
        if after is not None:
            position = self._position.get(after)
            if position is None:
                position = self._find(after)
            if position is None:
                return []
            begin = position + 1
        end = min(begin + max(limit, 0), self._indexed + len(self._new))
        page = [run for _, run in self._read(begin, min(end, self._indexed))]
        page = [self._latest.get(run.run_id, run) for run in page]
        new = self._new[max(begin - self._indexed, 0) : max(end - self._indexed, 0)]
        return page + [self._latest[run_id] for run_id in new]

    def _find(self, run_id: str) -> int | None:
        """The position of ``run_id`` in the files (checked against the log), or None."""
        if self._indexed == 0:
            return None
        wanted = fingerprint(run_id)
        try:
            fd = self._ops.open(self.ids_path, os.O_RDONLY)
        except FileNotFoundError:
            raise _Disagrees("its runs.ids is missing") from None
        try:
            slots = os.fstat(fd).st_size // ENTRY.size
            if slots < 2 * self._indexed:
                raise _Disagrees("its runs.ids is too small")
            for probe in range(slots):
                at = (wanted + probe) % slots
                fp, place = ENTRY.unpack(self._ops.pread(fd, ENTRY.size, ENTRY.size * at))
                if place == 0:
                    return None
                if fp == wanted and place <= self._indexed:
                    position = int(place) - 1
                    if self._read(position, position + 1)[0][1].run_id == run_id:
                        return position
        finally:
            self._ops.close(fd)
        return None

    def _read(self, begin: int, end: int) -> list[tuple[int, Run]]:
        """(line, version) of the runs at positions ``begin .. end-1`` in the files."""
        if begin >= end:
            return []
        fd = self._ops.open(self.order_path, os.O_RDONLY)
        try:
            data = self._ops.pread(fd, ENTRY.size * (end - begin), ENTRY.size * (begin + 1))
        finally:
            self._ops.close(fd)
        if len(data) != ENTRY.size * (end - begin):
            raise _Disagrees(f"it has no entry {begin + len(data) // ENTRY.size}")
        entries = list(ENTRY.iter_unpack(data))
        for position, (line, _) in enumerate(entries, start=begin):
            # Not ``line < covered``: a checkpoint under way (or one a crash cut
            # short) may have put a newer committed version there; that run
            # then has versions in memory too, and the latest of them wins.
            if line >= self._log.written:
                raise _Disagrees(f"entry {position} names line {line + 1}, past the log's end")
        runs = self._log.read_runs([(line, 1) for line, _ in entries])  # the log opened once
        for position, ((_, fp), run) in enumerate(zip(entries, runs, strict=True), start=begin):
            if fingerprint(run.run_id) != fp:
                raise _Disagrees(f"entry {position} names a line of another run")
        return [(line, run) for (line, _), run in zip(entries, runs, strict=True)]

    @property
    def pending(self) -> bool:
        """True if versions in memory are not in the files yet (a checkpoint writes them)."""
        return bool(self._versions)

    # -- loading and staging (mutex held) ---------------------------------------------

    def load(self) -> None:
        """Read the header, and every version after what it covers (once)."""
        if self._loaded:
            return
        header = (0, 0) if self._distrust else self._header()
        if header is None or not header[1] <= header[0] <= self._log.written:
            log.warning("%s does not fit its log; reading the log", self.order_path)
            header = 0, 0
        covered, runs = header
        self._covered, self._indexed, self._loaded = covered, runs, True
        since = self._log.read(covered, self._log.count - covered)
        for line, run in enumerate(since, start=covered):
            self._note(run, line)

    def _header(self) -> tuple[int, int] | None:
        """(lines covered, runs) from ``runs.order``; (0, 0) if there is none yet,
        None if it is too short for what it says."""
        try:
            fd = self._ops.open(self.order_path, os.O_RDONLY)
        except FileNotFoundError:
            return 0, 0
        try:
            data = self._ops.pread(fd, ENTRY.size, 0)
            size = os.fstat(fd).st_size
        finally:
            self._ops.close(fd)
        if len(data) != ENTRY.size:
            return None
        covered, runs = ENTRY.unpack(data)
        return (covered, runs) if size >= ENTRY.size * (runs + 1) else None

    def put(self, run: Run) -> None:
        """A version of ``run`` was staged as the log's last line."""
        if self._loaded:
            self._note(run, self._log.count - 1)

    def _note(self, run: Run, line: int) -> None:
        run_id = run.run_id
        if run_id not in self._position:
            position = self._find(run_id)
            if position is None:
                position = self._indexed + len(self._new)
                self._new.append(run_id)
            self._position[run_id] = position
        self._versions.setdefault(run_id, []).append(line)
        self._latest[run_id] = run

    def _reset(self, *, distrust: bool) -> None:
        """Forget what was read; with ``distrust``, read the log from its first line
        until a write has put the files right again."""
        self._distrust = distrust
        self._generation += 1
        self._loaded = False
        self._covered = self._indexed = 0
        self._new, self._versions, self._latest, self._position = [], {}, {}, {}

    # -- writing (between flushes) ------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        """What the files lack of the committed lines, or None (mutex held)."""
        return self._retrying(self._snapshot)

    def _snapshot(self) -> Snapshot | None:
        covered = self._log.written
        if covered == self._covered:
            return None
        entries = []
        for run_id, lines in self._versions.items():
            done = [line for line in lines if line < covered]
            if done:
                entries.append((self._position[run_id], done[-1], fingerprint(run_id)))
        runs = self._indexed + sum(1 for run_id in self._new if self._versions[run_id][0] < covered)
        return Snapshot(
            covered=covered, runs=runs, entries=sorted(entries), generation=self._generation
        )

    def write(self, snapshot: Snapshot) -> None:
        """Put ``snapshot`` in the files: entries, then slots, then the header."""
        ops = self._ops
        fd = ops.open(self.order_path, os.O_RDWR | os.O_CREAT)
        try:
            for position, line, fp in snapshot.entries:
                ops.pwrite(fd, ENTRY.pack(line, fp), ENTRY.size * (position + 1))
            new = [(p, fp) for p, _, fp in snapshot.entries if p >= self._indexed]
            self._write_slots(fd, snapshot.runs, new)
            ops.fsync(fd)
            ops.pwrite(fd, ENTRY.pack(snapshot.covered, snapshot.runs), 0)
            ops.fsync(fd)
        finally:
            ops.close(fd)

    def _write_slots(self, order: int, runs: int, new: list[tuple[int, int]]) -> None:
        """Add the new runs to ``runs.ids``; past half full (or if it has none of
        the indexed ones yet), a table twice as large replaces it."""
        ops = self._ops
        try:
            fd = ops.open(self.ids_path, os.O_RDWR)
        except FileNotFoundError:
            fd = -1
        try:
            slots = os.fstat(fd).st_size // ENTRY.size if fd >= 0 else 0
            if self._indexed and 2 * runs <= slots:
                table = {at: value for at, value in self._placed(fd, slots, new)}
                for at, (fp, place) in sorted(table.items()):
                    ops.pwrite(fd, ENTRY.pack(fp, place), ENTRY.size * at)
                ops.fsync(fd)
                return
        finally:
            if fd >= 0:
                ops.close(fd)
        data = ops.pread(order, ENTRY.size * runs, ENTRY.size)
        every = [(p, fp) for p, (_, fp) in enumerate(ENTRY.iter_unpack(data))]
        self._rebuild_slots(max(MIN_SLOTS, 1 << (4 * runs).bit_length()), every)

    def _placed(
        self, fd: int, slots: int, new: list[tuple[int, int]]
    ) -> list[tuple[int, tuple[int, int]]]:
        """Where each new run's slot goes: the first free one from its hash (a slot
        naming a position past the indexed ones is left from an unfinished write)."""
        placed: dict[int, tuple[int, int]] = {}
        for position, fp in new:
            at = fp % slots
            while True:
                if at not in placed:
                    _, place = ENTRY.unpack(self._ops.pread(fd, ENTRY.size, ENTRY.size * at))
                    if place == 0 or place > self._indexed:
                        break
                at = (at + 1) % slots
            placed[at] = (fp, position + 1)
        return list(placed.items())

    def _rebuild_slots(self, slots: int, runs: list[tuple[int, int]]) -> None:
        table = bytearray(ENTRY.size * slots)
        for position, fp in runs:
            at = fp % slots
            while ENTRY.unpack_from(table, ENTRY.size * at)[1]:
                at = (at + 1) % slots
            ENTRY.pack_into(table, ENTRY.size * at, fp, position + 1)
        self._ops.atomic_write(self.ids_path, bytes(table))

    def settle(self, snapshot: Snapshot | None) -> bool:
        """The files hold ``snapshot`` now (mutex held); True if versions are left
        that the next checkpoint must write."""
        if snapshot is None or snapshot.generation != self._generation:
            return self.pending  # (void: the next snapshot writes everything again)
        covered = snapshot.covered
        for run_id in list(self._versions):
            lines = [line for line in self._versions[run_id] if line >= covered]
            if lines:
                self._versions[run_id] = lines
            else:  # in the files now, found there
                del self._versions[run_id], self._latest[run_id], self._position[run_id]
        self._new = self._new[snapshot.runs - self._indexed :]
        self._covered, self._indexed = covered, snapshot.runs
        self._distrust = False
        return self.pending
