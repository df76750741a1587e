"""Benchmark: encoding a page ÷ ``json.dumps`` of the same data already as dicts.

A 100-entry transcript page and a 100-event page are made by a real runtime
(echo engine). For each, three ways are timed in interleaved repetitions:

- ``dumps``: ``json.dumps`` of the page's JSON data, already plain dicts (the floor);
- ``encode``: ``to_json`` (the generated per-class encoders) then ``json.dumps``,
  what the HTTP adapter does for an answer that is not cached;
- ``generic``: the old generic ``to_json`` walk (kept as
  ``worker_runtime.testing.reference_to_json``) then ``json.dumps``, for the
  before/after comparison.

The figure is encode ÷ dumps (goal ≤ 1.5), printed with generic ÷ dumps.

    python bench/encode.py [--reps 15] [--calls 300]

Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime import commands as c
from worker_runtime.codec import to_json
from worker_runtime.testing import reference_to_json

GOAL = 1.5


def dumps(data: Any) -> bytes:
    """What the HTTP adapter's ``send`` does with an answer's data."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def encode(page: Any) -> bytes:
    return dumps(to_json(page))


def generic(page: Any) -> bytes:
    return dumps(reference_to_json(page))


def pages() -> dict[str, Any]:
    """A 100-entry transcript page and a 100-event page from a real runtime."""
    with Runtime.open(RuntimeConfig(runtime_id="rt-encode")) as rt:
        rt.dispatch(c.CreateWorker(worker_id="bench"))
        cursor = 1
        for i in range(50):
            text = f"input {i}: the quick brown fox jumps over the lazy dog, now and again"
            ack = rt.dispatch(c.SendInput(worker_id="bench", content=text))
            while rt.dispatch(c.GetWorker(worker_id="bench")).active_run is not None:
                rt.dispatch(c.ReadEvents(cursor=ack.event_id + 1, wait=1))
        transcript = rt.dispatch(c.GetTranscript(worker_id="bench", limit=100))
        events = rt.dispatch(c.ReadEvents(cursor=cursor, limit=100))
    assert len(transcript.items) == 100 and len(events.events) == 100
    return {"transcript page (100)": transcript, "event page (100)": events}


def per_call(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(f"encode ÷ json.dumps of the same dicts ({args.reps} interleaved reps, medians)")
    header = f"{'dumps µs':>10}{'encode µs':>11}{'ratio':>7}{'generic µs':>12}{'ratio':>7}"
    print(f"{'page':<24}{header}")
    for name, page in pages().items():
        data = to_json(page)
        assert dumps(data) == dumps(reference_to_json(page))
        ways: dict[str, Callable[[], Any]] = {
            "dumps": functools.partial(dumps, data),
            "encode": functools.partial(encode, page),
            "generic": functools.partial(generic, page),
        }
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for rep in range(args.reps):
            for way in ways if rep % 2 == 0 else reversed(ways):
                samples[way].append(per_call(ways[way], args.calls))
        t = {way: statistics.median(s) for way, s in samples.items()}
        print(
            f"{name:<24}{t['dumps'] * 1e6:>10.1f}{t['encode'] * 1e6:>11.1f}"
            f"{t['encode'] / t['dumps']:>7.2f}{t['generic'] * 1e6:>12.1f}"
            f"{t['generic'] / t['dumps']:>7.2f}"
        )
    print(f"goal: encode ÷ dumps ≤ {GOAL}")


if __name__ == "__main__":
    main()
