"""A run's output: engine chunks coalesced into assistant transcript entries."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from .domain import Role, TranscriptEntry

if TYPE_CHECKING:
    from .runs import Job
    from .runtime import Runtime

__all__ = ["RunOutput"]


class RunOutput:
    """Coalesces engine output into assistant transcript entries.

    Streaming engines emit many small chunks; one entry per chunk would bloat
    the transcript, so chunks are joined until 4 KiB or 0.2 s have passed.
    A chunk is never held longer than that: if the engine goes quiet, the
    runtime's timer thread flushes it. Output past ``max_output_chars`` is cut
    with a marker.
    """

    FLUSH_CHARS = 4096
    FLUSH_SECONDS = 0.2

    def __init__(self, rt: Runtime, job: Job) -> None:
        self._rt = rt
        self._job = job
        self._parts: list[str] = []
        self._size = 0
        self._total = 0
        self._truncated = False
        self._since = rt.clock.monotonic()
        self._timer_set = False
        # The engine's thread and the timer thread both flush; one at a time,
        # so entries keep the order the engine emitted them in.
        self._lock = threading.Lock()

    def write(self, chunk: str) -> None:
        """The engine's ``emit``: buffer ``chunk``, flushing when due."""
        with self._lock:
            self._write(chunk)

    def _write(self, chunk: str) -> None:
        if not chunk or self._truncated:
            return
        room = self._rt.config.max_output_chars - self._total
        if len(chunk) > room:
            chunk = chunk[:room] + "\n[output truncated]"
            self._truncated = True
        self._parts.append(chunk)
        self._size += len(chunk)
        self._total += len(chunk)
        now = self._rt.clock.monotonic()
        if (
            self._truncated
            or self._size >= self.FLUSH_CHARS
            or now - self._since >= self.FLUSH_SECONDS
        ):
            self._flush()
        elif not self._timer_set:
            self._timer_set = True
            self._rt.runs.timers.call_at(self._since + self.FLUSH_SECONDS, self._job, self.flush)

    def flush(self) -> None:
        """Append what is buffered as one entry, unless the run has ended."""
        with self._lock:
            self._timer_set = False
            self._flush()

    def _flush(self) -> None:
        self._since = self._rt.clock.monotonic()
        if not self._parts:
            return
        text, self._parts, self._size = "".join(self._parts), [], 0
        rt, job = self._rt, self._job
        with rt.locked():
            record = rt.workers.get(job.worker_id)
            if (
                record is None
                or record.active_run is None
                or record.active_run.run_id != job.run_id
            ):
                return  # the run was finalized (forced cancel); late output is dropped
            event = rt.emit("output_appended", job.worker_id, job.run_id, chars=len(text))
            entry = TranscriptEntry(
                sequence=record.transcript_len,
                role=Role.ASSISTANT,
                content=text,
                event_id=event.event_id,
                created_at=rt.clock.now(),
                run_id=job.run_id,
            )
            rt.store.append_transcript(job.worker_id, entry)
            usage = dataclasses.replace(
                record.usage, output_chars=record.usage.output_chars + len(text)
            )
            rt.save_worker(
                record,
                transcript_len=record.transcript_len + 1,
                last_event_id=event.event_id,
                usage=usage,
            )
