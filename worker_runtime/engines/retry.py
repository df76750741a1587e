"""When to try a request again: a bounded policy for rate limits (HTTP 429)
and server errors (5xx).

The server's ``Retry-After`` (or ``retry-after-ms``, as OpenAI sends) is
honoured, never shortened: when it asks for more than :attr:`RetryPolicy.max_wait_s`,
or for a wait that would end past the run's deadline, the request is not
retried at all and the run fails at once with the server's answer. Without a
hint, waits grow exponentially from :attr:`RetryPolicy.backoff_s`.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_RETRIES", "RetryPolicy", "is_retryable", "parse_retry_after"]

DEFAULT_MAX_RETRIES = 3


def is_retryable(status: int) -> bool:
    """True for the statuses worth another try: 429 and every 5xx."""
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How many times, and how long to wait, before trying a request again."""

    max_retries: int = DEFAULT_MAX_RETRIES
    max_wait_s: float = 30.0
    backoff_s: float = 0.5

    def wait_s(self, *, retry: int, retry_after: float | None, remaining_s: float) -> float | None:
        """Seconds to wait before retry number ``retry`` (1 for the first), or None
        to give up: out of retries, a hint longer than ``max_wait_s``, or a wait
        that leaves nothing of the ``remaining_s`` before the run's deadline."""
        if retry > self.max_retries:
            return None
        if retry_after is None:
            wait: float = min(self.backoff_s * 2.0 ** (retry - 1), self.max_wait_s)
        else:
            wait = retry_after
        if wait > self.max_wait_s or wait >= remaining_s:
            return None
        return wait


def parse_retry_after(
    retry_after: str | None, retry_after_ms: str | None, now: Callable[[], float] = time.time
) -> float | None:
    """The wait a server asked for, in seconds (never negative), or None if it
    gave none that can be read. ``retry_after`` is delay-seconds or an HTTP date."""
    if retry_after_ms and (ms := _number(retry_after_ms)) is not None:
        return ms / 1000
    if not retry_after:
        return None
    value = retry_after.strip()
    if (seconds := _number(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return max(value, 0.0) if math.isfinite(value) else None
