"""Time and id sources, injected into the runtime so tests can control them."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

__all__ = ["Clock", "new_id"]


class Clock:
    """Wall-clock timestamps for records, a monotonic clock for deadlines."""

    def now(self) -> str:
        """The current UTC time as RFC 3339 with milliseconds."""
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def monotonic(self) -> float:
        return time.monotonic()


def new_id(prefix: str) -> str:
    """A fresh id such as ``w-6f1c2ab39d0e4c51``; always a valid runtime/worker id."""
    return f"{prefix}-{secrets.token_hex(8)}"
