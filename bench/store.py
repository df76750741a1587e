"""Benchmark: the fs store against baselines measured in the same run.

1. Durable in-process inputs/s (SendInput acknowledged, echo runs) with the fs
   store, as a ratio to the same runtime on a SQLite store (WAL,
   ``synchronous=FULL``) that commits the same records, each thread its own
   transactions (goal >= 1.5, thanks to group commit).
2. Worker creates/s over HTTP at 16 connections, fs store as a ratio to the
   memory store (goal >= 0.8).
3. Transcript page time at 100k entries as a ratio to 10 entries (goal <= 1.2).
4. Reopen time for 1k workers x 1k entries as a ratio to 1k x 10 (goal <= 2).

Large fixtures are written straight to files in the store's format (going
through the API would take minutes); they are always read back through the
real code.

    python bench/store.py [--seconds 3] [--rounds 3] [--threads 16] [--quick]

Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/store.py``: make the repository importable, and keep this
# directory from shadowing standard modules (bench/http.py).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
sys.path.insert(0, _REPO)

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.store_support import SqliteStore, http_creates, write_runtime_fixture  # noqa: E402
from worker_runtime import Runtime, RuntimeConfig, commands  # noqa: E402
from worker_runtime.errors import WorkerBusy  # noqa: E402
from worker_runtime.stores import Store  # noqa: E402

WORKERS_PER_CLIENT = 4  # so a client rarely waits for its own runs to be recorded


def inputs_per_second(store: Store, config: RuntimeConfig, threads: int, seconds: float) -> float:
    """Acknowledged inputs/s from ``threads`` clients, each on workers of its own."""
    rt = Runtime.open(config, store=store)
    try:
        owned = [
            [rt.dispatch(commands.CreateWorker()).worker_id for _ in range(WORKERS_PER_CLIENT)]
            for _ in range(threads)
        ]
        counts = [0] * threads
        start = threading.Barrier(threads + 1)
        deadline = [0.0]

        def client(i: int) -> None:
            start.wait()
            n = 0
            while time.monotonic() < deadline[0]:
                worker_id = owned[i][n % WORKERS_PER_CLIENT]
                n += 1
                try:
                    rt.dispatch(commands.SendInput(worker_id=worker_id, content=f"input {n}"))
                    counts[i] += 1
                except WorkerBusy:
                    # Its echo run is not recorded yet. Sleep briefly rather than spin:
                    # sixteen spinning threads would starve the flush of the GIL.
                    time.sleep(0.0005)

        pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        deadline[0] = time.monotonic() + seconds
        start.wait()
        for thread in pool:
            thread.join()
        return sum(counts) / seconds
    finally:
        rt.close()


def bench_inputs(args: argparse.Namespace) -> float:
    print(f"1. durable in-process inputs/s, {args.threads} threads, {args.rounds} rounds")
    fs_rates, sqlite_rates = [], []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            sqlite = SqliteStore(str(Path(tmp, "bench.sqlite")), "rt-bench")
            sqlite_rates.append(
                inputs_per_second(
                    sqlite, RuntimeConfig(runtime_id="rt-bench"), args.threads, args.seconds
                )
            )
            config = RuntimeConfig(store="fs", data_dir=tmp, runtime_id="rt-bench")
            fs_rates.append(inputs_per_second(_fs(config), config, args.threads, args.seconds))
        print(f"   round {n + 1}: fs {fs_rates[-1]:7.0f}/s   sqlite {sqlite_rates[-1]:7.0f}/s")
    ratio = statistics.median(fs_rates) / statistics.median(sqlite_rates)
    print(f"   ratio fs/sqlite (medians): {ratio:.2f}  (goal >= 1.5)")
    return ratio


def _fs(config: RuntimeConfig) -> Store:
    from worker_runtime.clock import new_id
    from worker_runtime.stores.fs import FsStore

    assert config.data_dir is not None
    return FsStore.open(config.data_dir, config.runtime_id, new_id)


def bench_http(args: argparse.Namespace) -> float:
    print(f"2. HTTP worker creates/s at {args.connections} connections, {args.rounds} rounds")
    memory, fs = http_creates(args.seconds, args.rounds, args.connections, args.tmp)
    for n, (m, f) in enumerate(zip(memory, fs, strict=True)):
        print(f"   round {n + 1}: fs {f:7.0f}/s   memory {m:7.0f}/s")
    ratio = statistics.median(fs) / statistics.median(memory)
    print(f"   ratio fs/memory (medians): {ratio:.2f}  (goal >= 0.8)")
    return ratio


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def bench_pages(args: argparse.Namespace) -> float:
    big = 10_000 if args.quick else 100_000
    print(f"3. transcript page (limit 10) at {big} entries vs 10 entries")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        write_runtime_fixture(Path(tmp), "rt-bench", {"small": 10, "big": big})
        config = RuntimeConfig(store="fs", data_dir=tmp, runtime_id="rt-bench")
        with Runtime.open(config) as rt:
            times = {}
            for worker_id, starts in (("small", [0]), ("big", [0, big // 2, big - 10])):
                per_start = []
                for start in starts:
                    page = commands.GetTranscript(worker_id=worker_id, start=start, limit=10)
                    assert len(rt.dispatch(page).items) == 10
                    per_start.append(_median_time(lambda p=page: rt.dispatch(p), 2000))
                times[worker_id] = statistics.mean(per_start)
    ratio = times["big"] / times["small"]
    big_us, small_us = times["big"] * 1e6, times["small"] * 1e6
    print(f"   {big} entries: {big_us:6.1f} us   10 entries: {small_us:6.1f} us")
    print(f"   ratio (mean over start, middle and end pages): {ratio:.2f}  (goal <= 1.2)")
    return ratio


def bench_reopen(args: argparse.Namespace) -> float:
    workers = 200 if args.quick else 1000
    print(f"4. reopen of {workers} workers x 1000 entries vs {workers} x 10")
    times = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for entries in (10, 1000):
            data_dir = Path(tmp, str(entries))
            write_runtime_fixture(
                data_dir, "rt-bench", {f"w{i:04d}": entries for i in range(workers)}
            )
            config = RuntimeConfig(store="fs", data_dir=str(data_dir), runtime_id="rt-bench")

            def reopen(config: RuntimeConfig = config) -> None:
                Runtime.open(config).close()

            reopen()  # a first open settles nothing by design, but warms the page cache
            times[entries] = _median_time(reopen, 5)
    ratio = times[1000] / times[10]
    print(f"   x1000: {times[1000] * 1e3:6.1f} ms   x10: {times[10] * 1e3:6.1f} ms")
    print(f"   ratio: {ratio:.2f}  (goal <= 2)")
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16, help="in-process client threads")
    parser.add_argument("--connections", type=int, default=16, help="HTTP connections")
    parser.add_argument("--tmp", default=None, help="directory for the stores (default: TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="smaller fixtures, for a smoke run")
    parser.add_argument(
        "--only", choices=("inputs", "http", "pages", "reopen"), action="append", default=None
    )
    args = parser.parse_args(argv)
    benches = {
        "inputs": bench_inputs,
        "http": bench_http,
        "pages": bench_pages,
        "reopen": bench_reopen,
    }
    results = {
        name: bench(args) for name, bench in benches.items() if name in (args.only or benches)
    }
    print("summary: " + "  ".join(f"{name}={ratio:.2f}" for name, ratio in results.items()))


if __name__ == "__main__":
    main()
