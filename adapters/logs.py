"""Logging for the served runtime: level and format from settings, written off-thread.

:func:`start_logging` puts one :class:`~logging.handlers.QueueHandler` on the root
logger; one writer thread formats and writes the lines, so a request thread
never blocks on stderr. The writer, once woken, lets the lines of the next
``GATHER_S`` (10 ms) join the first and writes them all with one write and one
flush: under load a line costs a fraction of a wake-up and of a system call, and
the thread takes the GIL (which the request threads need) far less often.
:meth:`LogPipeline.stop` drains the queue: call it (or let ``atexit`` call it)
after the runtime closed, and no line is lost at a clean shutdown.

Formats: ``text`` (``time LEVEL logger message``) or ``json``, one object per
line with ``timestamp``, ``level``, ``logger``, ``message`` and, on access
lines, ``method``, ``route``, ``status``, ``duration_ms`` and ``request_id``.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from .settings import LogSettings

__all__ = [
    "ACCESS_FIELDS",
    "TEXT_FORMAT",
    "UNMATCHED_ROUTE",
    "JsonFormatter",
    "LogPipeline",
    "TextFormatter",
    "start_logging",
]

ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "request_id")
"""Attributes an access record carries (set by ``middleware.FrontDoor``)."""
UNMATCHED_ROUTE = "unmatched"
"""The ``route`` of a request no route serves, in access lines and in the metrics'
label alike (never the raw path: a client choosing paths must not create series)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
BATCH = 512
"""Records the writer formats and writes together at most."""
GATHER_S = 0.01
"""How long the writer waits, once woken, for more lines to write with the first."""


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, its time made once a second (``strftime`` is most of a
    plain line's cost), as ``logging.Formatter`` makes it: ``2026-12-07
    13:10:07,042``, local time."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # The common line (an access line), without the general machinery.
        message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name} {message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted by the queue handler
            line["exception"] = record.exc_text
        # ensure_ascii: a control character in a message stays escaped, one line.
        return json.dumps(line, ensure_ascii=True, default=str)


class _Enqueue(logging.handlers.QueueHandler):
    # The stock ``prepare`` formats the message on the calling thread and drops
    # the record's extra attributes' meaning; keep the record whole (merging args
    # only, so nothing mutable crosses threads) and let the listener format it.
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_STOP = object()
"""Put on the queue by :meth:`LogPipeline.stop`: the writer ends once it is written."""


class _Writer(threading.Thread):
    """Formats and writes the queued records, every record waiting at once."""

    def __init__(
        self, records: queue.SimpleQueue[Any], stream: TextIO, formatter: logging.Formatter
    ) -> None:
        super().__init__(name="worker-runtime-log", daemon=True)
        self._records = records
        self._stream = stream
        self._formatter = formatter

    def run(self) -> None:
        records, done = self._records, False
        while not done:
            batch = [records.get()]
            if batch[0] is not _STOP:
                # Let the lines of the next few milliseconds join this one: one
                # wake-up (and one write) for many lines when requests come fast.
                time.sleep(GATHER_S)
            while len(batch) < BATCH:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for record in batch:
                if record is _STOP:
                    done = True  # the handler is gone: nothing can come after it
                else:
                    lines.append(self._line(record))
            if lines:
                self._write("".join(lines))

    def _line(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record) + "\n"
        except Exception:  # a bad record must not end the logging of the rest
            return f"unloggable record from {record.name!r} at {record.created}\n"

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nowhere to say so
            pass


class LogPipeline:
    """The installed queue handler and its writer thread."""

    def __init__(
        self, handler: logging.Handler, records: queue.SimpleQueue[Any], writer: _Writer
    ) -> None:
        self._handler = handler
        self._records = records
        self._writer = writer
        self._stopped = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Write every queued line, then detach. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        logging.getLogger().removeHandler(self._handler)
        self._records.put(_STOP)
        self._writer.join()  # every record before the sentinel is written


def start_logging(settings: LogSettings, stream: TextIO | None = None) -> LogPipeline:
    """Route every log record through a queue to ``stream`` (stderr), in the
    configured format, at the configured level. ``stop()`` is registered with
    ``atexit`` too."""
    formatter: logging.Formatter = JsonFormatter() if settings.format == "json" else TextFormatter()
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = _Enqueue(records)
    writer = _Writer(records, stream or sys.stderr, formatter)
    root = logging.getLogger()
    root.setLevel(settings.level)
    # waitress sets its own logger to INFO only when it is unset; follow ours.
    logging.getLogger("waitress").setLevel(settings.level)
    root.addHandler(handler)
    writer.start()
    pipeline = LogPipeline(handler, records, writer)
    atexit.register(pipeline.stop)
    return pipeline
