"""Idempotency records in memory, expiring: shared by both stores.

Records are kept in a dict in insertion order, which is creation order
(a key is re-inserted only when its old record expired), so the expired
ones are always at the front and are dropped from there as new ones arrive:
memory stays bounded by what the TTL allows, at O(1) amortized per write.
"""

from __future__ import annotations

import itertools

from .base import IdempotencyExpiry, IdempotencyRecord

__all__ = ["fresh_idempotency", "put_fresh_idempotency"]


def fresh_idempotency(
    records: dict[str, IdempotencyRecord], key: str, expiry: IdempotencyExpiry
) -> IdempotencyRecord | None:
    """``records[key]`` unless it is missing or expired (an expired one is dropped)."""
    record = records.get(key)
    if record is not None and expiry.expired(record):
        del records[key]
        return None
    return record


def put_fresh_idempotency(
    records: dict[str, IdempotencyRecord], record: IdempotencyRecord, expiry: IdempotencyExpiry
) -> bool:
    """Remember ``record`` unless a fresh one holds its key; True if it was added."""
    if fresh_idempotency(records, record.key, expiry) is not None:
        return False
    cutoff = expiry.cutoff()
    for oldest in list(
        itertools.islice(records.values(), 8)
    ):  # a few per write keeps up with arrivals
        if not expiry.expired(oldest, cutoff):
            break
        del records[oldest.key]
    records[record.key] = record
    return True
