"""Crash test: the real server on the fs store, ``kill -9`` under load, restart.

Several clients send inputs concurrently; every input the server acknowledged
(202) must be in its worker's transcript exactly once after the restart, at
the sequence the ack named, with its ``input_accepted`` event; event ids stay
unique and increasing. Repeated for several cycles on the same directory.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .support.server import Server, serve

CYCLES = 3
CLIENTS = 4
WORKERS_PER_CLIENT = 2
ACKS_BEFORE_KILL = 40  # per cycle; the kill lands while clients are still sending
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Ack:
    worker_id: str
    content: str
    run_id: str
    sequence: int
    event_id: int


class Client(threading.Thread):
    """Sends inputs to its own workers until the server goes away."""

    def __init__(self, server: Server, worker_ids: list[str], tag: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.worker_ids = worker_ids
        self.tag = tag
        self.acks: list[Ack] = []
        self.unexpected: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        for n in itertools.count():
            if time.monotonic() > deadline:
                return
            worker_id = self.worker_ids[n % len(self.worker_ids)]
            content = f"{self.tag}-{n}"  # unique per attempt: a lost attempt is never resent
            try:
                response = self.server.request(
                    "POST", f"/v1/workers/{worker_id}/input", {"content": content}, timeout=10
                )
            except (OSError, http.client.HTTPException):
                return  # the server was killed
            if response.status == 202:
                ack = response.json()["ack"]
                self.acks.append(
                    Ack(
                        worker_id,
                        content,
                        ack["run_id"],
                        ack["transcript_sequence"],
                        ack["event_id"],
                    )
                )
            elif response.status == 409 and response.json()["error"]["code"] == "worker_busy":
                continue  # its run has not finished yet: try the next worker
            elif response.status != 503:  # a server going down may answer 503
                self.unexpected.append(f"{response.status} {response.body[:200]!r}")


def _env(data_dir: Path) -> dict[str, str]:
    return {
        "WORKER_RUNTIME_STORE": "fs",
        "WORKER_RUNTIME_DATA_DIR": str(data_dir),
        "WORKER_RUNTIME_ID": "rt-crash",
    }


def _get(server: Server, path: str) -> Any:
    response = server.request("GET", path)
    assert response.status == 200, response.body[:500]
    return response.json()


def _transcript(server: Server, worker_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = _get(server, f"/v1/workers/{worker_id}/transcript?start={start}&limit=256")
        items += page["transcript"]["items"]
        start = page["transcript"]["next_start"]
    return items


def _events(server: Server) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = _get(server, f"/v1/events?cursor={cursor}&limit=1000")
        events += page["events"]
        cursor = page["cursor"]["next_event_id"]
        if not page["has_more"]:
            return events


def _load_until_killed(server: Server, worker_ids: list[str], cycle: int) -> list[Ack]:
    clients = [Client(server, worker_ids[i::CLIENTS], f"c{cycle}-t{i}") for i in range(CLIENTS)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + DEADLINE_S
    while sum(len(c.acks) for c in clients) < ACKS_BEFORE_KILL:
        assert time.monotonic() < deadline, "the clients got too few acks"
        assert all(c.is_alive() for c in clients), [c.unexpected for c in clients]
        clients[0].join(0.01)  # a short, bounded wait between progress checks
    server.kill()
    for client in clients:
        client.join(DEADLINE_S)
        assert not client.is_alive()
        assert client.unexpected == []
    return [ack for client in clients for ack in client.acks]


def _verify(server: Server, worker_ids: list[str], acked: list[Ack]) -> None:
    events = _events(server)
    ids = [e["event_id"] for e in events]
    assert ids == sorted(set(ids)), "event ids must be unique and increasing"
    by_id = {e["event_id"]: e for e in events}
    transcripts = {w: _transcript(server, w) for w in worker_ids}
    for worker_id, items in transcripts.items():
        assert [e["sequence"] for e in items] == list(range(len(items)))
        users = [e["content"] for e in items if e["role"] == "user"]
        assert len(users) == len(set(users)), f"an input was recorded twice in {worker_id}"
        worker = _get(server, f"/v1/workers/{worker_id}")["worker"]
        assert worker["status"] == "idle" and worker["transcript_len"] == len(items)
    for ack in acked:
        entry = transcripts[ack.worker_id][ack.sequence]
        assert (entry["content"], entry["run_id"], entry["role"]) == (
            ack.content,
            ack.run_id,
            "user",
        )
        event = by_id[ack.event_id]
        assert (event["type"], event["run_id"]) == ("input_accepted", ack.run_id)


def test_acknowledged_inputs_survive_kill_9(tmp_path: Path) -> None:
    worker_ids = [f"w{i}" for i in range(CLIENTS * WORKERS_PER_CLIENT)]
    acked: list[Ack] = []
    with serve(_env(tmp_path)) as server:
        for worker_id in worker_ids:
            response = server.request("POST", "/v1/workers", {"worker_id": worker_id})
            assert response.status == 201, response.body
        acked += _load_until_killed(server, worker_ids, 0)
    last_event = 0
    for cycle in range(1, CYCLES + 1):
        with serve(_env(tmp_path)) as server:
            _verify(server, worker_ids, acked)
            events = _events(server)
            assert events[0]["event_id"] == 1 and events[-1]["event_id"] > last_event
            last_event = events[-1]["event_id"]
            if cycle < CYCLES:
                acked += _load_until_killed(server, worker_ids, cycle)
    assert len(acked) >= ACKS_BEFORE_KILL * CYCLES
