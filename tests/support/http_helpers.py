"""Helpers for the HTTP adapter's tests: an in-process client and a conformance check.

``conforms`` checks a response against the served OpenAPI document: a success
must match its operation's schema, an error must be the JSON envelope with a
code the spec's table allows for that status. The table below is copied from
SPEC.md section 5 on purpose: the tests check the adapter against the spec,
not against itself.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from typing import Any

import jsonschema
from falcon import testing

from adapters.app import create_app
from adapters.settings import HttpSettings
from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.engines import Emit, Engine, RunContext
from worker_runtime.profiles import Profile, ProfileRegistry

TOKEN = "test-token-0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

SPEC_CODES: dict[int, set[str]] = {
    400: {
        "invalid_json",
        "invalid_request",
        "invalid_worker_id",
        "invalid_query",
        "limit_too_large",
    },
    401: {"unauthorized"},
    403: {"browser_origin_forbidden"},
    404: {"worker_not_found", "run_not_found", "not_found"},
    405: {"method_not_allowed"},
    409: {
        "worker_busy",
        "worker_exists",
        "worker_stopped",
        "worker_not_stopped",
        "cursor_ahead",
        "idempotency_key_reused",
    },
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    422: {"unknown_profile", "unsupported_capability", "unsupported_operation"},
    503: {"runtime_unavailable", "store_corrupt"},
    504: {"operation_timeout"},
}

# (method, path template) of every route but /healthz; {w} is a worker id.
ROUTES: list[tuple[str, str]] = [
    ("GET", "/v1/runtime"),
    ("GET", "/v1/workers"),
    ("POST", "/v1/workers"),
    ("GET", "/v1/workers/{worker_id}"),
    ("POST", "/v1/workers/{worker_id}/input"),
    ("POST", "/v1/workers/{worker_id}/stop"),
    ("POST", "/v1/workers/{worker_id}/cancel"),
    ("GET", "/v1/workers/{worker_id}/transcript"),
    ("GET", "/v1/workers/{worker_id}/runs"),
    ("GET", "/v1/workers/{worker_id}/runs/{run_id}"),
    ("DELETE", "/v1/workers/{worker_id}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/diagnostics"),
    ("GET", "/v1/openapi.json"),
]


def cli_argv(*flags: str) -> list[str]:
    """``worker-runtime serve --listen=127.0.0.1:0 FLAGS`` (the console script when
    it is installed beside this Python, else the same module with ``-m``)."""
    exe = shutil.which("worker-runtime", path=os.path.dirname(sys.executable))
    base = [exe] if exe else [sys.executable, "-m", "adapters.cli"]
    return [*base, "serve", "--listen=127.0.0.1:0", *flags]


class HoldEngine(Engine):
    """Holds every run until it is aborted (cancel, stop, timeout) or released."""

    name = "hold"

    def __init__(self) -> None:
        self.released = threading.Event()

    def run(self, ctx: RunContext, emit: Emit) -> None:
        while not self.released.is_set():
            if ctx.signal.wait(0.01):
                return
        emit("released")


def hold_runtime(**config: Any) -> Runtime:
    """A memory runtime with a named profile ``hold`` whose runs wait to be cancelled."""
    engine = HoldEngine()
    registry = ProfileRegistry(
        [Profile(name="hold", kind="named", engine="hold")], engines={"hold": lambda _: engine}
    )
    config.setdefault("runtime_id", "rt-http")
    return Runtime.open(RuntimeConfig(**config), profiles=registry)


def client(runtime: Runtime, *, max_body_bytes: int | None = None) -> testing.TestClient:
    """A falcon test client for an app around ``runtime`` that accepts ``TOKEN``."""
    settings = HttpSettings(max_body_bytes=max_body_bytes) if max_body_bytes else None
    return testing.TestClient(create_app(runtime, token=TOKEN, settings=settings))


def error_code(result: Any) -> str:
    body = result.json
    assert set(body) == {"error"}, body
    code: str = body["error"]["code"]
    return code


class Conformance:
    """Validates responses against an OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def _validator(self, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(
            {**schema, "components": self.document["components"]}
        )

    def _response(self, method: str, template: str, status: int) -> dict[str, Any]:
        operation = self.document["paths"][template][method.lower()]
        response = operation["responses"][str(status)]
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].split("/")[-1]]
        schema: dict[str, Any] = response["content"]["application/json"]["schema"]
        return schema

    def check_error(self, status: int, body: Any) -> None:
        """An error envelope whose code the spec allows for ``status``."""
        envelope = self.document["components"]["schemas"]["ErrorEnvelope"]
        self._validator(envelope).validate(body)
        assert body["error"]["code"] in SPEC_CODES[status], (status, body)

    def check(self, method: str, template: str | None, status: int, body: Any) -> None:
        """``body`` is what the document promises for this operation and status."""
        assert status < 500, (status, body)
        if status >= 400:
            self.check_error(status, body)
            return
        assert template is not None, "a success on an unknown route"
        self._validator(self._response(method, template, status)).validate(body)
