"""Benchmark: does a request cost the same at 20,000 workers as at 200?

For each store, two runtimes are filled in child processes, one with ``--small``
workers and one with ``--large`` (each create also writes an event and a
diagnostic, so those logs grow with them), and then the same read commands are timed on both,
interleaved: GetWorker, a ListWorkers page of 100 (also filtered by status),
GetRuntime and a ReadEvents page. Each figure is large ÷ small (goal ≤ 1.2).
The resident memory per idle worker is measured in the same children: RSS after
filling minus RSS before, divided by the number of workers (goal ≤ 2 KB on the
memory store).

    python bench/scale.py [--small 200] [--large 20000] [--fs-large 5000] [--reps 9]

Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import sys

# Run as a script, bench/ comes first on sys.path, where bench/http.py would
# shadow the standard library's http package.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import gc
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.domain import WorkerStatus

GOAL_RATIO = 1.2
GOAL_RSS_BYTES = 2048
CALLS = 300


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def fill(rt: Runtime, count: int, threads: int) -> str:
    """Create ``count`` workers, in ``threads`` threads (the fs store commits in
    groups; the memory store needs none, and each extra thread would leave an
    allocator arena in the RSS figure). Returns a worker id in the middle."""

    def create(i: int) -> None:
        rt.dispatch(c.CreateWorker(worker_id=f"w{i:06d}"))

    if threads == 1:
        for i in range(count):
            create(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, range(count)))
    return f"w{count // 2:06d}"


def per_call(fn: Callable[[], Any], calls: int = CALLS) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def child(store: str, count: int, reps: int) -> None:
    """Fill one runtime and print its per-call medians and RSS per worker as JSON."""
    with tempfile.TemporaryDirectory() as data_dir:
        config = RuntimeConfig(runtime_id="scale", store=store, data_dir=data_dir)
        rt = Runtime.open(config)
        gc.collect()
        before = rss_bytes()
        middle = fill(rt, count, 1 if store == "memory" else 16)
        gc.collect()
        per_worker = (rss_bytes() - before) / count
        last_event = rt.dispatch(c.GetRuntime()).last_event_id
        reads: dict[str, Callable[[], Any]] = {
            "GetWorker": lambda: rt.dispatch(c.GetWorker(worker_id=middle)),
            "ListWorkers (100)": lambda: rt.dispatch(c.ListWorkers(limit=100, after=middle)),
            "ListWorkers idle (100)": lambda: rt.dispatch(
                c.ListWorkers(limit=100, after=middle, status=WorkerStatus.IDLE)
            ),
            "GetRuntime": lambda: rt.dispatch(c.GetRuntime()),
            "ReadEvents (100)": lambda: rt.dispatch(
                c.ReadEvents(cursor=max(last_event - 150, 1), limit=100)
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in reads}
        for _ in range(reps):
            for name, fn in reads.items():
                samples[name].append(per_call(fn))
        rt.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(json.dumps({"medians": medians, "rss_per_worker": per_worker}))


def measure(store: str, count: int, reps: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", store, str(count), str(reps)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=20_000)
    parser.add_argument("--fs-large", type=int, default=5_000)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        store, count, reps = args.child
        child(store, int(count), int(reps))
        return
    for store, large in (("memory", args.large), ("fs", args.fs_large)):
        small_run = measure(store, args.small, args.reps)
        large_run = measure(store, large, args.reps)
        print(f"{store} store: {large} workers ÷ {args.small} workers (goal ≤ {GOAL_RATIO})")
        for name, small_s in small_run["medians"].items():
            large_s = large_run["medians"][name]
            print(
                f"  {name:24s} {large_s * 1e6:9.1f} µs ÷ {small_s * 1e6:9.1f} µs"
                f" = {large_s / small_s:5.2f}"
            )
        rss = large_run["rss_per_worker"]
        goal = f" (goal ≤ {GOAL_RSS_BYTES} B)" if store == "memory" else ""
        print(f"  RSS per idle worker at {large}: {rss:,.0f} B{goal}")


if __name__ == "__main__":
    main()
