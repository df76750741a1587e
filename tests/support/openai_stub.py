"""A loopback stub of an OpenAI-compatible chat-completions server, for tests.

The request's ``model`` picks the behaviour:

- ``echo``: replies ``you said: <last user message>``, streamed word by word as
  server-sent events (chunked) or as one JSON body, as the request asks;
- ``plain-json``: always one JSON body, even when a stream was asked for;
- ``error-500``, ``rate-limit`` (429 + ``Retry-After: 7``), ``auth-echo`` (401
  whose message echoes the ``Authorization`` header back, as careless providers do);
- ``stream-error``: a stream whose only event is an ``error`` object;
- ``drop``: starts a reply (streamed or not), then drops the connection;
- ``slow``: sends nothing until ``release`` is set; notices (``client_gone``)
  when the client abandons the request;
- ``slow-stream``: a ``Connection: close`` stream that stalls after its first
  event until ``release`` is set (``client_gone`` as for ``slow``);
- ``scripted``: answers each request with the next ``(status, headers)`` of
  ``script`` (an error body for a status other than 200), then as ``echo``;
- ``key-echo``: streams back the bearer token it was sent, cut across several
  events (as a careless or hostile model might), or as one JSON body.

Every request is recorded (path with its query, headers and JSON body) in ``requests``.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]
    path: str = ""


@dataclass
class Stub:
    port: int
    requests: list[Recorded] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.stub.requests.append(Recorded(headers, body, self.path))
        self.stub.received.set()
        model = body["model"]
        if model == "scripted" and self.stub.script:
            status, extra = self.stub.script.pop(0)
            if status != 200:
                self._json(status, {"error": {"message": f"scripted {status}"}}, extra)
                return
            model = "echo"
        last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        words = f"you said: {last}".split(" ")
        if model == "slow" and not self._wait_for_release():
            return
        if model == "slow":
            self._echo(words, bool(body.get("stream")))
        elif model == "plain-json":
            self._json(200, _completion(" ".join(words)))
        elif model == "error-500":
            self._json(500, {"error": {"message": "model   exploded\n(details)"}})
        elif model == "rate-limit":
            self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"})
        elif model == "auth-echo":
            given = self.headers.get("Authorization", "nothing")
            self._json(401, {"error": {"message": f"Incorrect API key provided: {given}"}})
        elif model == "stream-error":
            self._stream([{"error": {"message": "overloaded"}}], done=False)
        elif model == "slow-stream":
            self._slow_stream()
        elif model == "drop":
            self._drop_mid_reply(bool(body.get("stream")))
        elif model in ("echo", "scripted"):
            self._echo(words, bool(body.get("stream")))
        elif model == "key-echo":
            self._key_echo(bool(body.get("stream")))

    def _echo(self, words: list[str], stream: bool) -> None:
        if stream:
            self._stream([_delta(w if i == 0 else " " + w) for i, w in enumerate(words)])
        else:
            self._json(200, _completion(" ".join(words)))

    def _key_echo(self, stream: bool) -> None:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if not stream:
            self._json(200, _completion(f"your key is {key}, twice: {key}"))
            return
        cuts = [0, 3, 4, 11, len(key) - 1, len(key)]
        pieces = ["your key is ", key[:3]]
        pieces += [key[a:b] for a, b in itertools.pairwise(cuts[1:])]
        pieces += [", twice: " + key[:5], key[5:] + "."]
        self._stream([_delta(p) for p in pieces])

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, header in (headers or {}).items():
            self.send_header(name, header)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, events: list[dict[str, Any]], done: bool = True) -> None:
        self._start_stream()
        self._chunk(b": keep-alive comment\n\n")
        for event in events:
            self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        if done:
            self._chunk(b"data: " + json.dumps(_delta("", finish="stop")).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _slow_stream(self) -> None:
        # An HTTP/1.0-style stream (no chunking, ends at EOF) whose reply stalls midway.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"data: " + json.dumps(_delta("thinking")).encode() + b"\n\n")
        self.wfile.flush()
        if self._wait_for_release():
            self.wfile.write(b"data: [DONE]\n\n")

    def _drop_mid_reply(self, stream: bool) -> None:
        if stream:
            self._start_stream()
            self._chunk(b"data: " + json.dumps(_delta("partial")).encode() + b"\n\n")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.wfile.flush()
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _wait_for_release(self) -> bool:
        """Wait for ``release``; False if the client hung up first (EOF on the socket)."""
        while not self.stub.release.wait(0.01):
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable and not _peek(self.connection):
                self.stub.client_gone.set()
                self.close_connection = True
                return False
        return True


def _peek(conn: socket.socket) -> bytes:
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the client: gone as well
        return b""


def _delta(content: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


def _completion(content: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


KEY = "sk-test-0123456789abcdefSECRET"
"""The API key the engine tests give the engine (in ``KEY_ENV``)."""
KEY_ENV = "WR_TEST_OPENAI_KEY"


@contextmanager
def run_stub() -> Iterator[Stub]:
    """Serve the stub on ``127.0.0.1`` on a free port until the block ends."""
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    stub = Stub(port=server.server_address[1])
    handler.stub = stub
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield stub
    finally:
        stub.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
