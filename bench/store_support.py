"""Helpers for ``bench/store.py``: the SQLite baseline store, server processes and
HTTP load, and fixtures written straight in the fs store's file format."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.servers import ServerProcess, python_load
from worker_runtime.domain import (
    Diagnostic,
    Event,
    Run,
    RuntimeRecord,
    TranscriptEntry,
    WorkerRecord,
)
from worker_runtime.stores import IdempotencyRecord, MemoryStore
from worker_runtime.stores.fs.layout import Layout, dump, runtime_envelope, worker_envelope
from worker_runtime.testing import NOW, worker_record
from worker_runtime.wire import to_json

REPO = Path(__file__).resolve().parent.parent
_WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transcript (worker TEXT, seq INTEGER, data TEXT NOT NULL,
                                       PRIMARY KEY (worker, seq));
CREATE TABLE IF NOT EXISTS runs (worker TEXT, id TEXT, data TEXT NOT NULL,
                                 PRIMARY KEY (worker, id));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS diagnostics (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class SqliteStore(MemoryStore):
    """The baseline: the memory store for reads, and every write also committed to
    SQLite (WAL, ``synchronous=FULL``) by the thread that made it, in one
    transaction per ``sync`` (the runtime's commit points). Writers take turns,
    as SQLite allows one writer at a time; nobody commits for anybody else."""

    kind = "sqlite"

    def __init__(self, path: str, runtime_id: str) -> None:
        super().__init__(runtime_id)
        self._path = path
        self._local = threading.local()
        self._writer = threading.Lock()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def _stage(self, sql: str, *params: Any) -> None:
        pending: list[tuple[str, tuple[Any, ...]]] = self._local.__dict__.setdefault("pending", [])
        pending.append((sql, params))

    def put_runtime(self, record: RuntimeRecord) -> None:
        super().put_runtime(record)
        self._stage("INSERT OR REPLACE INTO runtime VALUES (?, ?)", record.runtime_id, record)

    def put_worker(self, record: WorkerRecord) -> None:
        super().put_worker(record)
        self._stage("INSERT OR REPLACE INTO workers VALUES (?, ?)", record.worker_id, record)

    def append_transcript(self, worker_id: str, entry: TranscriptEntry) -> None:
        super().append_transcript(worker_id, entry)
        self._stage("INSERT INTO transcript VALUES (?, ?, ?)", worker_id, entry.sequence, entry)

    def put_run(self, worker_id: str, run: Run) -> None:
        super().put_run(worker_id, run)
        self._stage("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", worker_id, run.run_id, run)

    def append_event(self, event: Event) -> None:
        super().append_event(event)
        self._stage("INSERT INTO events VALUES (?, ?)", event.event_id, event)

    def append_diagnostic(self, diagnostic: Diagnostic) -> None:
        super().append_diagnostic(diagnostic)
        self._stage("INSERT INTO diagnostics VALUES (?, ?)", diagnostic.id, diagnostic)

    def put_idempotency(self, record: IdempotencyRecord) -> None:
        super().put_idempotency(record)
        self._stage("INSERT OR IGNORE INTO idempotency VALUES (?, ?)", record.key, record)

    def sync(self) -> None:
        pending = self._local.__dict__.get("pending")
        if not pending:
            return
        # Encoded here, outside the runtime's lock, as the fs store's leader does.
        rows = [(sql, tuple(_encode(p) for p in params)) for sql, params in pending]
        pending.clear()
        conn = self._conn()
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in rows:
                conn.execute(sql, params)
            conn.execute("COMMIT")


def _encode(value: Any) -> Any:
    if isinstance(value, str | int):
        return value
    return json.dumps(to_json(value), separators=(",", ":"))


# -- fixtures in the fs store's format ----------------------------------------------


def write_runtime_fixture(data_dir: Path, runtime_id: str, workers: dict[str, int]) -> None:
    """A runtime directory with ``workers[worker_id]`` transcript entries each."""
    layout = Layout(str(data_dir), runtime_id)
    root = Path(layout.root)
    (root / "workers").mkdir(parents=True)
    record = RuntimeRecord(runtime_id=runtime_id, display_name=None, created_at=NOW)
    ends = {"events": 1, "events_base": 0, "diagnostics": 0, "idempotency": 0}
    (root / "runtime.json").write_bytes(dump(runtime_envelope(record, ends)))
    event = json.dumps({"event_id": 1, "type": "fixture", "created_at": NOW, "data": {}}) + "\n"
    _write_log(root / "events", [event.encode()])
    for seq, (worker_id, entries) in enumerate(workers.items()):
        directory = root / "workers" / worker_id
        directory.mkdir()
        worker = worker_record(
            worker_id, runtime_id=runtime_id, transcript_len=entries, last_event_id=1
        )
        ends = {"transcript": entries, "runs": 0}
        (directory / "worker.json").write_bytes(dump(worker_envelope(seq, worker, ends)))
        roles = ("user", "assistant")
        lines = [
            (
                f'{{"content":"entry {i} of a long conversation, long enough to be typical",'
                f'"created_at":"{NOW}","event_id":1,"role":"{roles[i % 2]}","sequence":{i}}}\n'
            ).encode()
            for i in range(entries)
        ]
        _write_log(directory / "transcript", lines)


def _write_log(stem: Path, lines: list[bytes]) -> None:
    offsets = array("Q")
    position = 0
    for line in lines:
        offsets.append(position)
        position += len(line)
    if sys.byteorder != "little":
        offsets.byteswap()
    stem.with_suffix(".jsonl").write_bytes(b"".join(lines))
    stem.with_suffix(".idx").write_bytes(offsets.tobytes())


# -- servers and HTTP load ------------------------------------------------------------


def waitress_server(env: dict[str, str], log: Path, threads: int = 16) -> ServerProcess:
    """``waitress-serve adapters.falcon_app:app`` on a kernel-chosen loopback port."""
    argv = [
        sys.executable,
        "-c",
        "import sys; from waitress.runner import run; run(argv=sys.argv)",
        "--listen=127.0.0.1:0",
        f"--threads={threads}",
        "adapters.falcon_app:app",
    ]
    return ServerProcess(argv, env, log, cwd=str(REPO))


def _wrk(port: int, token: str, seconds: float, connections: int, script: Path) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script),
         "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/v1/workers"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    match = _WRK_RATE.search(out)
    if not match or "Non-2xx" in out:
        raise RuntimeError("the benchmark saw errors or no rate:\n" + out)
    return float(match.group(1))


def http_creates(
    seconds: float, rounds: int, connections: int, tmp: str | None
) -> tuple[list[float], list[float]]:
    """Creates/s on a memory server and an fs server, measured alternately."""
    token = secrets.token_urlsafe(32)
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    base.update({"WORKER_RUNTIME_TOKEN": token, "PYTHONPATH": str(REPO)})
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        script = Path(work, "post.lua")
        script.write_text(
            'wrk.method = "POST"\nwrk.body = "{}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        load: Callable[[int], float]
        if shutil.which("wrk"):
            load = lambda port: _wrk(port, token, seconds, connections, script)  # noqa: E731
        else:
            create = ("POST", "/v1/workers", b"{}", 201)
            load = lambda port: python_load(port, create, token, seconds, connections)  # noqa: E731
        memory = waitress_server(base, Path(work, "memory.log"))
        fs_env = {**base, "WORKER_RUNTIME_STORE": "fs", "WORKER_RUNTIME_DATA_DIR": work}
        fs = waitress_server(fs_env, Path(work, "fs.log"))
        try:
            memory_rates, fs_rates = [], []
            for _ in range(rounds):
                memory_rates.append(load(memory.port))
                fs_rates.append(load(fs.port))
            return memory_rates, fs_rates
        finally:
            memory.stop()
            fs.stop()
