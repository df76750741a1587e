"""``worker-runtime serve``: flags, refusals, and the real server in a subprocess
(started, served, stopped with SIGTERM, restarted on the same fs directory)."""

from __future__ import annotations

import io
import signal
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from adapters.cli import (
    DEFAULT_THREADS,
    build_parser,
    check_exposure,
    is_loopback,
    parse_listen,
    serve,
)
from adapters.settings import Token, generate_token
from worker_runtime.errors import ConfigError

from .support.http_helpers import cli_argv
from .support.server import TOKEN, Server
from .support.server import serve as run_server


def test_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.listen, args.threads) == ("127.0.0.1:8780", DEFAULT_THREADS)
    assert DEFAULT_THREADS >= 16


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8780", ("127.0.0.1", 8780)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8780", "host:", "host:http", "h:70000"])
def test_parse_listen_refuses_junk(listen: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(listen)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_needs_an_explicit_token() -> None:
    explicit = Token(value=TOKEN, explicit=True, source="WORKER_RUNTIME_TOKEN")
    check_exposure("0.0.0.0:8780", explicit)
    check_exposure("127.0.0.1:8780", None)
    for token in (None, generate_token()):
        with pytest.raises(ConfigError, match="not a loopback address"):
            check_exposure("0.0.0.0:8780", token)


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["serve"], {"WORKER_RUNTIME_STORE": "bogus"}, "WORKER_RUNTIME_STORE"),
        (["serve", "--listen=0.0.0.0:0"], {}, "not a loopback address"),
        (["serve", "--token-file=/nonexistent"], {}, "--token-file"),
        (["serve", "--store=fs"], {}, "data directory"),
        (["serve", "--runtime-id=bad id"], {}, "runtime id"),
    ],
)
def test_start_up_faults_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], needle: str
) -> None:
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        code = serve(build_parser().parse_args(argv), env)
    assert code == 2
    (line,) = stderr.getvalue().splitlines()
    assert needle in line


def test_serve_answers_and_stops_on_sigterm() -> None:
    with run_server(argv=cli_argv("--runtime-id=rt-cli")) as server:
        assert server.request("GET", "/v1/runtime").json()["runtime"]["runtime_id"] == "rt-cli"
        assert server.request("GET", "/v1/runtime", token=None).status == 401
        assert server.request("POST", "/v1/workers", {"worker_id": "w"}).status == 201
        assert stop(server) == 0
        assert b"closed" in server.stderr


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=20)


def test_fs_store_survives_a_restart_and_keeps_one_owner(tmp_path: Path) -> None:
    flags = cli_argv("--store=fs", f"--data-dir={tmp_path}", "--runtime-id=rt-disk")
    with run_server(argv=flags) as first:
        assert first.request("POST", "/v1/workers", {"worker_id": "kept"}).status == 201
        # A second process on the same directory must refuse to start, in one line.
        with pytest.raises(RuntimeError) as refused, run_server(argv=flags):
            pass
        assert "Traceback" not in str(refused.value)
        assert stop(first) == 0
    with run_server(argv=flags) as second:
        assert second.request("GET", "/v1/workers/kept").status == 200


def test_token_file_flag(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-a-file-0123456789abcdef\n")
    with run_server(argv=cli_argv(f"--token-file={path}"), token=None) as server:
        ok = server.request("GET", "/v1/runtime", token="from-a-file-0123456789abcdef")
        assert ok.status == 200
        assert b"generated API token" not in server.stderr
