"""Crash test for runs (SPEC section 7) over HTTP with the fs store.

A ``command`` run prints a first chunk, flushes and then sleeps, so it is active
with streamed output; three more inputs are enqueued behind it (``on_busy:
"enqueue"``). Once the active run's ``run_output`` event is visible the server is
killed with SIGKILL and restarted on the same data directory, the profile now
pointing at ``cat``. Then: every acknowledged input is in exactly one run; the
interrupted run's reply entry holds the streamed text rebuilt from its durable
``run_output`` events; the queued runs ran afterwards, in acknowledgement order;
and the transcript reads input, reply, input, reply.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .support.server import Server, serve

DEADLINE_S = 30.0
RUNTIME_ID = "rt-crash-runs"
WORKER = "w-crash"
QUEUED = ("second", "third", "fourth")

# Prints its first chunk once the file argv[1] exists (so the chunk is the last
# thing the runtime writes before the kill: no later ack syncs it by chance),
# then holds the run until the server dies (the program dies with it:
# PR_SET_PDEATHSIG, and recovery kills its group).
SLOW = (
    "import os, sys, time\n"
    "text = sys.stdin.read()\n"
    "deadline = time.monotonic() + 30\n"
    "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
    "    time.sleep(0.01)\n"
    "sys.stdout.write('partial:' + text + '\\n')\n"
    "sys.stdout.flush()\n"
    "time.sleep(60)\n"
)


def _env(data_dir: Path, profiles: Path) -> dict[str, str]:
    return {
        "WORKER_RUNTIME_STORE": "fs",
        "WORKER_RUNTIME_DATA_DIR": str(data_dir),
        "WORKER_RUNTIME_ID": RUNTIME_ID,
        "WORKER_RUNTIME_PROFILES": str(profiles),
    }


def _write_profile(profiles: Path, argv: list[str]) -> None:
    profiles.write_text(json.dumps({"profiles": {"p": {"engine": "command", "argv": argv}}}))


def _get(server: Server, path: str, timeout: float = 30.0) -> Any:
    response = server.request("GET", path, timeout=timeout)
    assert response.status == 200, response.body[:500]
    return response.json()


def _send(server: Server, content: str) -> dict[str, Any]:
    response = server.request(
        "POST", f"/v1/workers/{WORKER}/input", {"content": content, "on_busy": "enqueue"}
    )
    assert response.status == 202, response.body[:500]
    ack: dict[str, Any] = response.json()["ack"]
    return ack


def _worker_events(server: Server) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = _get(server, f"/v1/events?worker_id={WORKER}&cursor={cursor}&limit=1000")
        events += page["events"]
        cursor = page["cursor"]["next_event_id"]
        if not page["has_more"]:
            return events


def _await_output(server: Server, run_id: str) -> str:
    """The run's streamed text, once a ``run_output`` event of it is visible
    (long-polls on the worker's events, to a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    cursor = 0
    text = ""
    while not text:
        assert time.monotonic() < deadline, "no run_output event for the active run"
        page = _get(server, f"/v1/events?worker_id={WORKER}&cursor={cursor}&wait=2")
        cursor = page["cursor"]["next_event_id"]
        text += "".join(
            e["data"]["text"]
            for e in page["events"]
            if e["type"] == "run_output" and e["run_id"] == run_id
        )
    return text


def _await_terminal(server: Server, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        run: dict[str, Any] = _get(server, f"/v1/workers/{WORKER}/runs/{run_id}?wait=5")["run"]
        if run["status"] not in ("queued", "running"):
            return run
        assert time.monotonic() < deadline, run


def _runs(server: Server) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    query = "limit=2"  # small pages: the paging is part of what is checked
    while True:
        page = _get(server, f"/v1/workers/{WORKER}/runs?{query}")
        runs += page["runs"]
        if page["next_after"] is None:
            return runs
        query = f"limit=2&after={page['next_after']}"


def _transcript(server: Server) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = _get(server, f"/v1/workers/{WORKER}/transcript?start={start}&limit=256")
        items += page["transcript"]["items"]
        start = page["transcript"]["next_start"]
    return items


def _await_durable_output(data_dir: Path, run_id: str) -> str:
    """Wait, without a single request to the server, until the run's
    ``run_output`` event is in the store's files (written by a flush, so it
    survives a kill -9). A read over HTTP would not do: every command, reads
    included, syncs the store before it answers, which would hide a run_output
    event that only the next unrelated sync makes durable."""
    logs = [data_dir / "runtimes" / RUNTIME_ID / name for name in ("events.jsonl", "journal.jsonl")]
    deadline = time.monotonic() + 10.0  # output is flushed within ~50 ms
    while True:
        for log in logs:
            for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
                if '"run_output"' in line and run_id in line:
                    return "partial:first\n"
        assert time.monotonic() < deadline, (
            "the run_output event never reached the store's files: streamed output "
            "becomes durable only at the next sync, so a kill -9 now would lose it"
        )
        time.sleep(0.01)  # polling the files, to the deadline above


@pytest.mark.parametrize("witness", ["http", "disk"])
def test_kill_9_with_a_streaming_run_and_a_queue(tmp_path: Path, witness: str) -> None:
    """``witness``: the kill follows the run_output event seen over HTTP (a
    follower's view), or seen only in the store's files, no request in between."""
    data_dir, profiles = tmp_path / "data", tmp_path / "profiles.json"
    go = tmp_path / "go"
    _write_profile(profiles, [sys.executable, "-c", SLOW, str(go)])
    with serve(_env(data_dir, profiles)) as server:
        created = server.request(
            "POST", "/v1/workers", {"worker_id": WORKER, "profile": {"kind": "named", "value": "p"}}
        )
        assert created.status == 201, created.body
        first = _send(server, "first")
        assert first["run_status"] == "running"
        queued = [_send(server, content) for content in QUEUED]
        assert [a["run_status"] for a in queued] == ["queued"] * len(QUEUED)
        assert [a["transcript_sequence"] for a in queued] == [None] * len(QUEUED)
        go.touch()  # the program may print now: after every ack
        if witness == "http":
            streamed = _await_output(server, first["run_id"])
        else:
            streamed = _await_durable_output(data_dir, first["run_id"])
        assert streamed == "partial:first\n"
        server.kill()  # SIGKILL: the run is active, three are queued

    # The queued inputs now run through a quick program: the reply is the input.
    _write_profile(profiles, ["cat"])
    acks = [first, *queued]
    contents = ["first", *QUEUED]
    with serve(_env(data_dir, profiles)) as server:
        last = _await_terminal(server, queued[-1]["run_id"])
        assert last["status"] == "completed", last
        runs = _runs(server)
        transcript = _transcript(server)
        events = _worker_events(server)
        worker = _get(server, f"/v1/workers/{WORKER}")["worker"]

    # Every acknowledged input is in exactly one run, and no run came from nowhere.
    assert [r["run_id"] for r in runs] == [a["run_id"] for a in acks]
    by_id = {r["run_id"]: r for r in runs}
    interrupted = by_id[first["run_id"]]
    assert interrupted["status"] == "interrupted", interrupted
    assert [by_id[a["run_id"]]["status"] for a in queued] == ["completed"] * len(QUEUED)

    # The transcript reads input, reply, input, reply: one reply entry per run.
    assert [e["sequence"] for e in transcript] == list(range(2 * len(acks)))
    assert [e["role"] for e in transcript] == ["user", "assistant"] * len(acks)
    assert [e["run_id"] for e in transcript] == [a["run_id"] for a in acks for _ in "ab"]
    assert [e["content"] for e in transcript[0::2]] == contents
    for ack in acks:
        run = by_id[ack["run_id"]]
        assert transcript[run["input_sequence"]]["run_id"] == ack["run_id"]
        assert run["reply_sequence"] == run["input_sequence"] + 1

    # The interrupted run's reply was rebuilt from its durable run_output events.
    rebuilt = "".join(
        e["data"]["text"]
        for e in events
        if e["type"] == "run_output" and e["run_id"] == first["run_id"]
    )
    assert rebuilt == streamed, "the streamed output did not survive the kill"
    assert transcript[interrupted["reply_sequence"]]["content"] == streamed
    assert interrupted["output_chars"] == len(streamed)

    # The queued runs ran after the crash, one after another, in ack order.
    assert [transcript[by_id[a["run_id"]]["reply_sequence"]]["content"] for a in queued] == list(
        QUEUED
    )
    started = [by_id[a["run_id"]]["started_at"] for a in queued]
    finished = [by_id[a["run_id"]]["finished_at"] for a in queued]
    assert interrupted["finished_at"] <= started[0]
    for n in range(1, len(queued)):
        assert finished[n - 1] <= started[n], (finished, started)
    assert worker["status"] == "idle" and worker["transcript_len"] == len(transcript)
