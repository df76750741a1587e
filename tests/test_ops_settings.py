"""Operator settings: known variables and the did-you-mean warning, log and
waitress settings, ``--version``, the loopback rule read from waitress's argv,
and the waitress limits ``worker-runtime serve`` passes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from adapters import cli, remote_cli
from adapters.exposure import waitress_command
from adapters.settings import (
    CLIENT_VARIABLES,
    LogSettings,
    ServeSettings,
    known_variables,
    unknown_variables,
)
from worker_runtime import RuntimeConfig, __version__
from worker_runtime.config import env_variable
from worker_runtime.errors import ConfigError

from .support.http_helpers import TOKEN


def test_known_variables_cover_the_runtime_config_and_the_adapter() -> None:
    known = known_variables()
    for f in dataclasses.fields(RuntimeConfig):
        assert env_variable(f.name) in known
    assert {"WORKER_RUNTIME_TOKEN", "WORKER_RUNTIME_LOG_FORMAT", "WORKER_RUNTIME_STORE"} <= known


def test_the_client_commands_variables_are_known_too() -> None:
    """A shell that runs ``worker-runtime status`` (``WORKER_RUNTIME_URL``) and
    starts a server gets no warning for the client's variables."""
    assert remote_cli.URL_VAR in CLIENT_VARIABLES
    assert known_variables() >= CLIENT_VARIABLES
    root = Path(__file__).resolve().parent.parent
    texts = [(root / "adapters" / "remote_cli.py").read_text("utf-8")]
    texts.append((root / "docs" / "cli.md").read_text("utf-8"))
    named = {n for text in texts for n in re.findall(r"WORKER_RUNTIME_[A-Z0-9_]*[A-Z0-9]", text)}
    assert "WORKER_RUNTIME_URL" in named
    assert named <= known_variables(), named - known_variables()
    env = {name: "x" for name in named}
    assert unknown_variables(env) == []


def test_a_misspelt_variable_names_the_closest_known_one() -> None:
    env = {
        "WORKER_RUNTIME_STOR": "fs",
        "WORKER_RUNTIME_STORE": "memory",
        "WORKER_RUNTIME_QQQQQQQ": "1",
        "HOME": "/root",
    }
    assert unknown_variables(env) == [
        "unknown variable WORKER_RUNTIME_QQQQQQQ is ignored",
        "unknown variable WORKER_RUNTIME_STOR is ignored; did you mean WORKER_RUNTIME_STORE?",
    ]


def test_log_settings_from_env() -> None:
    assert LogSettings.from_env({}) == LogSettings(level="INFO", format="text")
    env = {"WORKER_RUNTIME_LOG_LEVEL": "debug", "WORKER_RUNTIME_LOG_FORMAT": "JSON"}
    assert LogSettings.from_env(env) == LogSettings(level="DEBUG", format="json")
    for name, raw in (("WORKER_RUNTIME_LOG_LEVEL", "LOUD"), ("WORKER_RUNTIME_LOG_FORMAT", "xml")):
        with pytest.raises(ConfigError, match=name):
            LogSettings.from_env({name: raw})


def test_serve_settings_from_env_and_waitress_kwargs() -> None:
    settings = ServeSettings.from_env(
        {"WORKER_RUNTIME_CONNECTION_LIMIT": "50", "WORKER_RUNTIME_CHANNEL_TIMEOUT_S": "7"}
    )
    assert (settings.connection_limit, settings.channel_timeout_s) == (50, 7)
    for raw in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="WORKER_RUNTIME_CONNECTION_LIMIT"):
            ServeSettings.from_env({"WORKER_RUNTIME_CONNECTION_LIMIT": raw})


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"worker-runtime {__version__}"


def test_serve_passes_waitress_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(app: object, **kwargs: Any) -> None:  # stands in for waitress.serve
        seen.update(kwargs)

    monkeypatch.setattr(cli.waitress, "serve", fake_serve)
    monkeypatch.setattr(cli.GracefulStop, "install", lambda self: True)
    args = cli.build_parser().parse_args(["serve", "--connection-limit=33"])
    env = {"WORKER_RUNTIME_CHANNEL_TIMEOUT_S": "9", "WORKER_RUNTIME_MAX_BODY_BYTES": "1000"}
    assert cli.serve(args, env) == 0
    assert seen["connection_limit"] == 33
    assert seen["channel_timeout"] == 9
    assert seen["max_request_body_size"] == 1000 + 1024 * 1024
    assert seen["threads"] == cli.DEFAULT_THREADS
    defaults = cli.build_parser().parse_args(["serve"])
    assert cli.serve(defaults, {}) == 0
    assert (seen["connection_limit"], seen["channel_timeout"]) == (500, 30)


@pytest.mark.parametrize(
    ("argv", "hosts"),
    [
        (["/venv/bin/waitress-serve", "adapters.falcon_app:app"], ["0.0.0.0"]),
        (["/venv/bin/waitress-serve", "--listen=127.0.0.1:0", "a:b"], ["127.0.0.1"]),
        (["/venv/bin/waitress-serve", "--host=10.1.2.3", "--port=0", "a:b"], ["10.1.2.3"]),
        (["/venv/bin/waitress-serve", "--unix-socket=/tmp/s", "a:b"], []),
        (["/venv/lib/waitress/__main__.py", "--listen=[::1]:0", "a:b"], ["::1"]),
    ],
)
def test_waitress_listen_hosts_come_from_its_own_parser(argv: list[str], hosts: list[str]) -> None:
    found = waitress_command(argv)
    assert found is not None
    assert found[0] == hosts


def test_other_command_lines_are_not_waitress() -> None:
    assert waitress_command(["/usr/bin/pytest", "-q"]) is None
    assert waitress_command([]) is None


def test_waitress_serve_refuses_a_generated_token_off_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.app import app_or_exit

    argv = ["/venv/bin/waitress-serve", "--listen=0.0.0.0:8780", "adapters.falcon_app:app"]
    with pytest.raises(SystemExit, match="not a loopback address"):
        app_or_exit({}, argv)
    # An explicit token is allowed; nothing is bound here (the app is only built).
    monkeypatch.setattr("adapters.app.GracefulStop.install", lambda self: True)
    app = app_or_exit({"WORKER_RUNTIME_TOKEN": TOKEN}, argv)
    assert app is not None
