"""HTTP settings, the token's sources, config errors naming the variable, and the
app built from the environment."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from falcon import testing

from adapters.app import TOKEN_FILE_NAME, app_from_env, app_or_exit, settle_token
from adapters.settings import (
    DEFAULT_MAX_BODY_BYTES,
    HttpSettings,
    generate_token,
    token_from_env,
)
from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.errors import ConfigError

from .support.http_helpers import TOKEN


def test_max_body_bytes_default_and_override() -> None:
    assert HttpSettings.from_env({}).max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    env = {"WORKER_RUNTIME_MAX_BODY_BYTES": "2048"}
    assert HttpSettings.from_env(env).max_body_bytes == 2048


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1.5"])
def test_bad_max_body_bytes_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="WORKER_RUNTIME_MAX_BODY_BYTES"):
        HttpSettings.from_env({"WORKER_RUNTIME_MAX_BODY_BYTES": raw})


def test_no_token_configured() -> None:
    assert token_from_env({}) is None


def test_token_from_the_variable() -> None:
    token = token_from_env({"WORKER_RUNTIME_TOKEN": TOKEN})
    assert token is not None
    assert (token.value, token.explicit) == (TOKEN, True)
    assert TOKEN not in repr(token)


def test_token_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    token = token_from_env({"WORKER_RUNTIME_TOKEN_FILE": str(path)})
    assert token is not None
    assert token.value == TOKEN


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WORKER_RUNTIME_TOKEN": "short"}, "WORKER_RUNTIME_TOKEN"),
        ({"WORKER_RUNTIME_TOKEN": "has a space in it, sixteen+"}, "WORKER_RUNTIME_TOKEN"),
        ({"WORKER_RUNTIME_TOKEN": "caf\u00e9-0123456789abcdef"}, "WORKER_RUNTIME_TOKEN"),
        ({"WORKER_RUNTIME_TOKEN_FILE": "/nonexistent/token"}, "WORKER_RUNTIME_TOKEN_FILE"),
        ({"WORKER_RUNTIME_TOKEN": TOKEN, "WORKER_RUNTIME_TOKEN_FILE": "/x"}, "only one"),
    ],
)
def test_bad_token_configuration_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        token_from_env(env)


def test_generated_tokens_are_long_and_fresh() -> None:
    tokens = {generate_token().value for _ in range(20)}
    assert len(tokens) == 20
    # 32 random bytes in URL-safe base64 are 43 characters.
    assert all(len(t) >= 43 for t in tokens)
    assert not any(generate_token().explicit for _ in range(3))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WORKER_RUNTIME_STORE": "bogus"}, "WORKER_RUNTIME_STORE"),
        ({"WORKER_RUNTIME_STORE": "fs"}, "WORKER_RUNTIME_DATA_DIR"),
        ({"WORKER_RUNTIME_RUN_TIMEOUT_S": "nan"}, "WORKER_RUNTIME_RUN_TIMEOUT_S"),
        ({"WORKER_RUNTIME_OPERATION_TIMEOUT_S": "inf"}, "WORKER_RUNTIME_OPERATION_TIMEOUT_S"),
        ({"WORKER_RUNTIME_MAX_TRANSCRIPT_PAGE": "many"}, "WORKER_RUNTIME_MAX_TRANSCRIPT_PAGE"),
        ({"WORKER_RUNTIME_RUN_TIMEOUT_S": "-1", "WORKER_RUNTIME_NAME": "ok"}, "RUN_TIMEOUT_S"),
        ({"WORKER_RUNTIME_ID": "not an id"}, "WORKER_RUNTIME_ID"),
    ],
)
def test_runtime_config_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        RuntimeConfig.from_env(env)


def test_runtime_config_from_a_good_environment() -> None:
    config = RuntimeConfig.from_env({"WORKER_RUNTIME_ID": "rt-x", "WORKER_RUNTIME_NAME": "X"})
    assert (config.runtime_id, config.display_name) == ("rt-x", "X")


def test_settle_token_keeps_a_configured_token() -> None:
    runtime = Runtime.open()
    stream = io.StringIO()
    try:
        configured = token_from_env({"WORKER_RUNTIME_TOKEN": TOKEN})
        assert settle_token(runtime, configured, stream) is configured
    finally:
        runtime.close()
    assert stream.getvalue() == ""


def test_settle_token_shows_a_generated_token_once() -> None:
    runtime = Runtime.open()
    stream = io.StringIO()
    try:
        token = settle_token(runtime, None, stream)
    finally:
        runtime.close()
    assert stream.getvalue().count(token.value) == 1
    assert not token.explicit


def test_generated_token_is_written_0600_with_the_fs_store(tmp_path: Path) -> None:
    pytest.importorskip("worker_runtime.stores.fs")
    runtime = Runtime.open(RuntimeConfig(runtime_id="rt-fs", store="fs", data_dir=str(tmp_path)))
    try:
        token = settle_token(runtime, None, io.StringIO())
    finally:
        runtime.close()
    path = tmp_path / "runtimes" / "rt-fs" / TOKEN_FILE_NAME
    assert path.read_text().strip() == token.value
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_app_from_env_serves_with_the_configured_token() -> None:
    app = app_from_env({"WORKER_RUNTIME_TOKEN": TOKEN, "WORKER_RUNTIME_ID": "rt-env"})
    c = testing.TestClient(app)
    ok = c.simulate_get("/v1/runtime", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json["runtime"]["runtime_id"] == "rt-env"
    assert c.simulate_get("/v1/runtime").status_code == 401


def test_app_from_env_applies_the_body_limit() -> None:
    app = app_from_env({"WORKER_RUNTIME_TOKEN": TOKEN, "WORKER_RUNTIME_MAX_BODY_BYTES": "10"})
    result = testing.TestClient(app).simulate_post(
        "/v1/workers",
        json={"display_name": "longer than ten bytes"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert result.status_code == 413


def test_app_or_exit_turns_a_config_error_into_one_line() -> None:
    with pytest.raises(SystemExit) as exited:
        app_or_exit({"WORKER_RUNTIME_STORE": "bogus"})
    message = str(exited.value.code)
    assert "WORKER_RUNTIME_STORE" in message and "\n" not in message
