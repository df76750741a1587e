"""Every error code the HTTP adapter answers has its class in ``worker_runtime.errors``,
so a remote caller can catch it by class, as it catches the runtime's own."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.errors import status_of_code
from adapters.settings import HttpSettings
from worker_runtime import Runtime, RuntimeConfig, errors
from worker_runtime import commands as c
from worker_runtime.client import RemoteRuntime
from worker_runtime.client.codec import decode_error, error_class

from .support.served import Served, served, serving
from .support.server import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}

# (code, method, path, headers, body): one request the adapter refuses itself.
REFUSALS = [
    ("unauthorized", "GET", "/v1/runtime", {}, None),
    ("browser_origin_forbidden", "GET", "/v1/runtime", {**AUTH, "Origin": "http://x"}, None),
    ("not_found", "GET", "/v1/nowhere", AUTH, None),
    ("method_not_allowed", "PUT", "/v1/runtime", AUTH, None),
    ("payload_too_large", "POST", "/v1/workers", JSON, b"{}" + b" " * 2048),
    ("unsupported_media_type", "POST", "/v1/workers", {**AUTH, "Content-Type": "text/plain"}, b"x"),
    ("invalid_json", "POST", "/v1/workers", JSON, b"{"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    with (
        Runtime.open(RuntimeConfig(runtime_id="rt-errors")) as rt,
        serving(rt, settings=HttpSettings(max_body_bytes=1024)) as running,
    ):
        yield running


@pytest.mark.parametrize(("code", "method", "path", "headers", "body"), REFUSALS)
def test_each_adapter_refusal_decodes_to_the_class_of_its_code(
    server: Served,
    code: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
) -> None:
    conn = http.client.HTTPConnection(
        "127.0.0.1", int(server.base_url.rsplit(":", 1)[1]), timeout=10
    )
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        status, data = response.status, response.read()
    finally:
        conn.close()
    error = decode_error(status, data)
    assert (type(error).code, error.code) == (code, code)
    assert error_class(code) is type(error) is not errors.WorkerRuntimeError
    assert status_of_code(code) == status


def test_a_wrong_token_raises_unauthorized(server: Served) -> None:
    with (
        RemoteRuntime(server.base_url, token="wrong-token-0123456789") as rt,
        pytest.raises(errors.Unauthorized) as refused,
    ):
        rt.dispatch(c.GetRuntime())
    assert refused.value.code == "unauthorized"


def test_content_past_the_body_limit_is_payload_too_large_an_invalid_request() -> None:
    """In-process the runtime's own limit refuses the content; remotely the
    adapter's body limit may refuse it first. Both are ``InvalidRequest``s."""
    config = RuntimeConfig(max_input_chars=2000)
    big = c.SendInput(worker_id="w", content="é" * 1500)  # 1500 characters, 3000 bytes
    with Runtime.open(config) as rt:
        rt.dispatch(c.CreateWorker(worker_id="w"))
        with served(rt, settings=HttpSettings(max_body_bytes=2048)) as remote:
            with pytest.raises(errors.PayloadTooLarge) as too_large:
                remote.dispatch(big)
            assert isinstance(too_large.value, errors.InvalidRequest)
            assert too_large.value.details == {"maximum": 2048}
            with pytest.raises(errors.InvalidRequest) as too_long:
                remote.dispatch(c.SendInput(worker_id="w", content="x" * 2001))
            assert too_long.value.details == {"field": "content", "maximum": 2000}
        ack = rt.dispatch(big)  # within the runtime's own limit: accepted in-process
        assert ack.worker_ref.worker_id == "w"


def test_library_docs_name_each_adapter_only_code() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "library.md").read_text("utf-8")
    for code, *_ in REFUSALS:
        assert f"`{code}`" in text, code
