"""Logging for the served runtime: level and format from settings, written off-thread.

:func:`start_logging` puts one :class:`~logging.handlers.QueueHandler` on the root
logger; a :class:`~logging.handlers.QueueListener` thread formats and writes the
lines, so a request thread never blocks on stderr. :meth:`LogPipeline.stop`
drains the queue: call it (or let ``atexit`` call it) after the runtime closed,
and no line is lost at a clean shutdown.

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
from datetime import UTC, datetime
from typing import Any, TextIO

from .settings import LogSettings

__all__ = ["ACCESS_FIELDS", "UNMATCHED_ROUTE", "JsonFormatter", "LogPipeline", "start_logging"]

ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "request_id")
"""Attributes an access record carries (set by ``middleware.FrontDoor``)."""
UNMATCHED_ROUTE = "unmatched"
"""The ``route`` of a request no route serves, in access lines and in the metrics'
label alike (never the raw path: a client choosing paths must not create series)."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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


class LogPipeline:
    """The installed queue handler and its listener thread."""

    def __init__(self, handler: logging.Handler, listener: logging.handlers.QueueListener):
        self._handler = handler
        self._listener = listener
        self._stopped = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Write every queued line, then detach. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        logging.getLogger().removeHandler(self._handler)
        self._listener.stop()  # enqueues a sentinel and joins: the queue is drained


def start_logging(settings: LogSettings, stream: TextIO | None = None) -> LogPipeline:
    """Route every log record through a queue to ``stream`` (stderr), in the
    configured format, at the configured level. ``stop()`` is registered with
    ``atexit`` too."""
    output = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    output.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _Enqueue(records)
    listener = logging.handlers.QueueListener(records, output, respect_handler_level=False)
    root = logging.getLogger()
    root.setLevel(settings.level)
    # waitress sets its own logger to INFO only when it is unset; follow ours.
    logging.getLogger("waitress").setLevel(settings.level)
    root.addHandler(handler)
    listener.start()
    pipeline = LogPipeline(handler, listener)
    atexit.register(pipeline.stop)
    return pipeline
