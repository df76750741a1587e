"""Idempotency records expire after ``idempotency_ttl_s`` (SPEC section 10), by the
runtime's clock, and are compacted away in both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.clock import new_id
from worker_runtime.errors import ConfigError, IdempotencyKeyReused
from worker_runtime.stores import MemoryStore
from worker_runtime.stores.fs import FsStore

from .support.fs_support import RUNTIME_ID, ShiftedClock, runtime_dir

DAY = 86400.0


@pytest.fixture(params=["memory", "fs"])
def opened(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Runtime, ShiftedClock]]:
    clock = ShiftedClock()
    if request.param == "fs":
        config = RuntimeConfig(store="fs", data_dir=str(tmp_path), runtime_id=RUNTIME_ID)
    else:
        config = RuntimeConfig(runtime_id=RUNTIME_ID)
    with Runtime.open(config, clock=clock) as rt:
        yield rt, clock


def test_an_expired_key_is_treated_as_new(opened: tuple[Runtime, ShiftedClock]) -> None:
    rt, clock = opened
    first = rt.dispatch(c.CreateWorker(worker_id="a"), idempotency_key="k")
    clock.offset = timedelta(seconds=DAY - 60)  # still fresh: replayed, or refused
    assert rt.dispatch(c.CreateWorker(worker_id="a"), idempotency_key="k") == first
    with pytest.raises(IdempotencyKeyReused):
        rt.dispatch(c.CreateWorker(worker_id="b"), idempotency_key="k")
    clock.offset = timedelta(seconds=DAY + 60)  # expired: the key is unknown again
    second = rt.dispatch(c.CreateWorker(worker_id="b"), idempotency_key="k")
    assert second.worker_id == "b"
    assert rt.dispatch(c.CreateWorker(worker_id="b"), idempotency_key="k") == second


def test_memory_drops_expired_records() -> None:
    clock = ShiftedClock()
    with Runtime.open(RuntimeConfig(idempotency_ttl_s=60), clock=clock) as rt:
        for i in range(20):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"), idempotency_key=f"k{i}")
        clock.offset = timedelta(seconds=120)
        for i in range(20, 40):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"), idempotency_key=f"k{i}")
        store = rt.store
        assert isinstance(store, MemoryStore)
        assert sorted(store._idempotency) == sorted(f"k{i}" for i in range(20, 40))


def _keys_on_disk(data_dir: Path) -> list[str]:
    text = (runtime_dir(data_dir) / "idempotency.jsonl").read_text()
    return [json.loads(line)["key"] for line in text.splitlines()]


def test_fs_compacts_the_idempotency_log(tmp_path: Path) -> None:
    clock = ShiftedClock()
    config = RuntimeConfig(store="fs", data_dir=str(tmp_path), runtime_id=RUNTIME_ID)
    with Runtime.open(config, clock=clock) as rt:
        for i in range(3):
            rt.dispatch(c.CreateWorker(worker_id=f"old{i}"), idempotency_key=f"old{i}")
        clock.offset = timedelta(days=2)
        rt.dispatch(c.CreateWorker(worker_id="again"), idempotency_key="old0")  # expired
        rt.dispatch(c.CreateWorker(worker_id="new"), idempotency_key="new")
    assert _keys_on_disk(tmp_path) == ["old0", "new"]  # rewritten at close
    with Runtime.open(config, clock=clock) as rt:
        assert rt.dispatch(c.CreateWorker(worker_id="new"), idempotency_key="new").worker_id == (
            "new"
        )
        with pytest.raises(IdempotencyKeyReused):
            rt.dispatch(c.CreateWorker(worker_id="other"), idempotency_key="old0")
        assert not [d for d in rt.dispatch(c.GetDiagnostics()).diagnostics if "store" in d.code]


def test_an_fs_compaction_interrupted_after_the_log_was_replaced(tmp_path: Path) -> None:
    # The runtime record announces the compacted length, the log is replaced,
    # then the process dies before the record says that length alone.
    clock = ShiftedClock()
    config = RuntimeConfig(store="fs", data_dir=str(tmp_path), runtime_id=RUNTIME_ID)
    with Runtime.open(config, clock=clock) as rt:
        for i in range(4):
            rt.dispatch(c.CreateWorker(worker_id=f"w{i}"), idempotency_key=f"k{i}")
    root = runtime_dir(tmp_path)
    record = json.loads((root / "runtime.json").read_bytes())
    assert record["ends"]["idempotency"] == 4
    lines = (root / "idempotency.jsonl").read_bytes().splitlines(keepends=True)
    (root / "idempotency.jsonl").write_bytes(b"".join(lines[2:]))
    (root / "idempotency.idx").unlink()
    record["compacting"] = {"idempotency": 2}
    (root / "runtime.json").write_text(json.dumps(record))
    store = FsStore.open(str(tmp_path), RUNTIME_ID, new_id)
    try:
        problems = [p for p in store.load().new_diagnostics if p[0] == "store_corrupt"]
        assert problems == []
        assert store.get_idempotency("k3") is not None and store.get_idempotency("k0") is None
    finally:
        store.close()
    assert "compacting" not in json.loads((root / "runtime.json").read_bytes())


def test_the_ttl_is_configured_from_the_environment() -> None:
    env = {"WORKER_RUNTIME_IDEMPOTENCY_TTL_S": "3600"}
    assert RuntimeConfig.from_env(env).idempotency_ttl_s == 3600
    assert RuntimeConfig().idempotency_ttl_s == DAY
    with pytest.raises(ConfigError, match="WORKER_RUNTIME_IDEMPOTENCY_TTL_S"):
        RuntimeConfig.from_env({"WORKER_RUNTIME_IDEMPOTENCY_TTL_S": "0"})
