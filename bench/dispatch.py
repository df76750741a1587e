"""Dispatch overhead and in-process throughput. Prints figures; asserts nothing.

    python bench/dispatch.py [--reps 15] [--calls 2000]

For each read command, the baseline is the command's handler called directly
(``HANDLERS[GetWorker].handler(rt.context, cmd)``): what a caller would pay without the
dispatcher. Both are timed in the same process, in interleaved repetitions
(direct, dispatched, direct, ...), and compared by their medians, so machine
noise hits both alike. The goal is a ratio of at most 1.3.

Remote dispatch: ``GetWorker`` through ``RemoteRuntime`` against a real server
(waitress, a child process on loopback) ÷ the same request sent by a bare
``http.client`` keep-alive loop (request, read the body) against the same
server, interleaved the same way. The goal is a ratio of at most 1.2: the
client's own cost (route table, JSON decoding into typed results, the
connection pool) should stay small beside the HTTP round trip.
"""

from __future__ import annotations

import sys

# Run as a script, bench/ comes first on sys.path, where bench/http.py would
# shadow the standard library's http package (which the engines import).
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    # ... and the repository root goes in its place, for ``bench.servers``.
    sys.path[0] = sys.path[0].rstrip("/").removesuffix("bench").rstrip("/") or "."

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.client import RemoteRuntime
from worker_runtime.handlers import HANDLERS
from worker_runtime.wire import encode_command

GOAL = 1.3
REMOTE_GOAL = 1.2
TERMINAL = {"run_completed", "run_failed", "run_cancelled", "run_timed_out", "run_interrupted"}


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def compare(rt: Runtime, command: c.Command[Any], reps: int, calls: int) -> dict[str, float]:
    """Median seconds per call: handler direct, ``dispatch``, ``dispatch_json``."""
    handler, ctx = HANDLERS[type(command)].handler, rt.context
    wire = encode_command(command)
    ways: dict[str, Callable[[], Any]] = {
        "direct": lambda: handler(ctx, command),
        "dispatch": lambda: rt.dispatch(command),
        "dispatch_json": lambda: rt.dispatch_json(wire),
    }
    return interleaved(ways, reps, calls)


def run_throughput(rt: Runtime, workers: int, rounds: int) -> float:
    """Inputs per second through the echo engine, each waited for to the end
    of its run (create, input, run, reply in the transcript)."""
    ids = [rt.dispatch(c.CreateWorker()).worker_id for _ in range(workers)]
    cursor = rt.dispatch(c.GetRuntime()).last_event_id + 1
    start = time.perf_counter()
    for _ in range(rounds):
        pending = {rt.dispatch(c.SendInput(worker_id=w, content="ping")).run_id for w in ids}
        while pending:
            page = rt.dispatch(c.ReadEvents(cursor=cursor, limit=1000, wait=5))
            pending -= {e.run_id for e in page.events if e.type in TERMINAL}
            cursor = page.cursor.next_event_id
    return workers * rounds / (time.perf_counter() - start)


def interleaved(ways: dict[str, Callable[[], Any]], reps: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each way, over interleaved repetitions (each
    warmed first: schemas, validators and caches are not what is measured)."""
    for fn in ways.values():
        per_call(fn, 50)
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(reps):
        order = list(ways) if rep % 2 == 0 else list(reversed(ways))
        for name in order:
            samples[name].append(per_call(ways[name], calls))
    return {name: statistics.median(times) for name, times in samples.items()}


def remote(reps: int, calls: int) -> None:
    """GetWorker over RemoteRuntime ÷ a bare http.client keep-alive loop."""
    from bench.servers import ServerProcess

    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    repo = str(Path(__file__).resolve().parents[1])
    env.update({"WORKER_RUNTIME_TOKEN": token, "PYTHONPATH": repo})
    exe = shutil.which("waitress-serve", path=os.path.dirname(sys.executable))
    argv = [exe] if exe else [sys.executable, "-m", "waitress"]
    argv += ["--listen=127.0.0.1:0", "--threads=4", "adapters.falcon_app:app"]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(argv, env, Path(tmp, "server.log"), cwd=repo)
        try:
            url = f"http://127.0.0.1:{server.port}"
            with RemoteRuntime(url, token=token) as rt:
                worker_id = rt.dispatch(c.CreateWorker(worker_id="bench")).worker_id
                command = c.GetWorker(worker_id=worker_id)
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
                path = f"/v1/workers/{worker_id}"

                def bare() -> bytes:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200:
                        raise RuntimeError(f"the benchmark saw status {response.status}")
                    return body

                assert json.loads(bare())["worker"]["worker_id"] == worker_id
                t = interleaved({"bare": bare, "remote": lambda: rt.dispatch(command)}, reps, calls)
                conn.close()
        finally:
            server.stop()
    ratio = t["remote"] / t["bare"]
    verdict = "meets" if ratio <= REMOTE_GOAL else "MISSES"
    print(f"remote GetWorker ({reps} interleaved reps x {calls} calls, medians)")
    print(
        f"  bare http.client {t['bare'] * 1e6:8.1f} µs   RemoteRuntime {t['remote'] * 1e6:8.1f} µs"
    )
    print(f"  ratio {ratio:.3f} ({verdict} the goal of <= {REMOTE_GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    parser.add_argument("--calls", type=int, default=2000, help="calls per repetition")
    parser.add_argument("--remote-only", action="store_true", help="only the remote figure")
    args = parser.parse_args()
    if args.remote_only:
        remote(args.reps, max(1, args.calls // 4))
        return

    with Runtime.open(RuntimeConfig(runtime_id="rt-bench")) as rt:
        worker = rt.dispatch(c.CreateWorker(worker_id="bench"))
        for i in range(10):
            ack = rt.dispatch(c.SendInput(worker_id=worker.worker_id, content=f"line {i}"))
            while rt.dispatch(c.GetWorker(worker_id="bench")).active_run is not None:
                rt.dispatch(c.ReadEvents(cursor=ack.event_id + 1, wait=1))
        cases = {
            "GetWorker": c.GetWorker(worker_id="bench"),
            "GetTranscript(limit=20)": c.GetTranscript(worker_id="bench", limit=20),
            "GetRuntime": c.GetRuntime(),
            "ReadEvents(limit=10)": c.ReadEvents(cursor=1, limit=10),
        }
        print(f"dispatch overhead ({args.reps} interleaved reps x {args.calls} calls, medians)")
        print(f"{'command':<26}{'direct µs':>11}{'dispatch µs':>13}{'ratio':>8}{'json µs':>10}")
        ratios = []
        for name, command in cases.items():
            t = compare(rt, command, args.reps, args.calls)
            ratio = t["dispatch"] / t["direct"]
            ratios.append(ratio)
            print(
                f"{name:<26}{t['direct'] * 1e6:>11.2f}{t['dispatch'] * 1e6:>13.2f}"
                f"{ratio:>8.3f}{t['dispatch_json'] * 1e6:>10.2f}"
            )
        verdict = "meets" if max(ratios) <= GOAL else "MISSES"
        print(f"worst ratio {max(ratios):.3f} ({verdict} the goal of <= {GOAL})")

        reads = 1 / compare(rt, cases["GetWorker"], 5, args.calls)["dispatch"]
        print(f"in-process reads: {reads:,.0f} GetWorker ops/s")
    with Runtime.open(RuntimeConfig(runtime_id="rt-bench-runs")) as rt:
        print(f"in-process runs: {run_throughput(rt, workers=20, rounds=50):,.0f} inputs/s")
    remote(args.reps, max(1, args.calls // 4))


if __name__ == "__main__":
    main()
