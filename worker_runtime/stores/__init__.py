"""Stores behind one interface: ``memory`` (the default) and ``fs``."""

from __future__ import annotations

from collections.abc import Callable

from ..config import RuntimeConfig
from .base import IdempotencyRecord, Store, StoreState
from .memory import MemoryStore

__all__ = ["IdempotencyRecord", "MemoryStore", "Store", "StoreState", "open_store"]


def open_store(config: RuntimeConfig, new_id: Callable[[str], str]) -> Store:
    """The store ``config`` asks for; ``new_id`` makes a runtime id when none is set."""
    if config.store == "fs":
        from .fs import FsStore

        assert config.data_dir is not None  # RuntimeConfig checks this
        return FsStore.open(
            config.data_dir,
            config.runtime_id,
            new_id,
            idempotency_ttl_s=config.idempotency_ttl_s,
        )
    return MemoryStore(config.runtime_id or new_id("rt"))
