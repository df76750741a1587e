"""End to end: the real server (waitress, in a subprocess) on a profiles file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from worker_runtime.testing import TERMINAL_EVENTS, wait_until

from .support.engine_support import alive, read_pids
from .support.openai_stub import run_stub
from .support.server import Server, serve


def wait_run_end(server: Server, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Follow ``GET /v1/events`` (long-poll) until ``run_id`` ends; its terminal event."""
    cursor, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = server.request("GET", f"/v1/events?cursor={cursor}&wait=5").json()
        for event in page["events"]:
            if event.get("run_id") == run_id and event["type"] in TERMINAL_EVENTS:
                return dict(event)
        cursor = page["cursor"]["next_event_id"]
    raise AssertionError(f"run {run_id} did not end within {timeout}s")


def create(server: Server, profile: str, **body: Any) -> str:
    resp = server.request(
        "POST", "/v1/workers", {"profile": {"kind": "named", "value": profile}, **body}
    )
    assert resp.status == 201, resp.body
    return str(resp.json()["worker"]["worker_id"])


def test_named_profiles_over_http(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    slow = f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; trap '' TERM; sleep 60; true"
    profiles = {
        "profiles": {
            "upper": {
                "engine": "command",
                "argv": ["tr", "a-z", "A-Z"],
                "capabilities": ["shout"],
                "env": {"HIDDEN": "do-not-show-me"},
            },
            "slow": {"engine": "command", "argv": ["sh", "-c", slow], "term_grace_s": 0.3},
        }
    }
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(profiles))
    with serve({"WORKER_RUNTIME_PROFILES": str(path)}) as server:
        runtime = server.request("GET", "/v1/runtime")
        assert runtime.status == 200
        info = runtime.json()["runtime"]
        assert {p["name"]: p["engine"] for p in info["profiles"]} == {
            "echo": "echo",
            "upper": "command",
            "slow": "command",
        }
        assert b"do-not-show-me" not in runtime.body and b"a-z" not in runtime.body

        worker = create(server, "upper", requested_capabilities=[{"name": "shout"}])
        sent = server.request("POST", f"/v1/workers/{worker}/input", {"content": "hello http"})
        assert sent.status == 202, sent.body
        run_id = sent.json()["ack"]["run_id"]
        assert wait_run_end(server, run_id)["type"] == "run_completed"
        transcript = server.request("GET", f"/v1/workers/{worker}/transcript").json()
        items = transcript["transcript"]["items"]
        assert [(e["role"], e["content"]) for e in items] == [
            ("user", "hello http"),
            ("assistant", "HELLO HTTP"),
        ]

        unknown = server.request(
            "POST", "/v1/workers", {"profile": {"kind": "named", "value": "x"}}
        )
        assert (unknown.status, unknown.json()["error"]["code"]) == (422, "unknown_profile")
        unsupported = server.request(
            "POST",
            "/v1/workers",
            {
                "profile": {"kind": "named", "value": "slow"},
                "requested_capabilities": [{"name": "shout"}],
            },
        )
        assert (unsupported.status, unsupported.json()["error"]["code"]) == (
            422,
            "unsupported_capability",
        )

        slow_worker = create(server, "slow")
        sent = server.request("POST", f"/v1/workers/{slow_worker}/input", {"content": "x"})
        slow_run = sent.json()["ack"]["run_id"]
        [pid] = read_pids(pidfile, 1)
        assert alive(pid)
        cancel = server.request(
            "POST", f"/v1/workers/{slow_worker}/cancel", {"run_id": slow_run, "reason": "test"}
        )
        assert cancel.status == 200, cancel.body
        assert cancel.json()["ack"]["run_status"] == "cancelled"
        wait_until(lambda: not alive(pid), what=f"the cancelled run's process {pid} to die")
        assert wait_run_end(server, slow_run)["type"] == "run_cancelled"


def test_openai_chat_profile_over_http(tmp_path: Path) -> None:
    key = "sk-e2e-0123456789SECRETKEY"
    with run_stub() as stub:
        toml = ""
        for name, model in (("llm", "echo"), ("llm-bad-key", "auth-echo")):
            toml += f'[profiles.{name}]\nengine = "openai_chat"\nmodel = "{model}"\n'
            toml += f'base_url = "{stub.base_url}"\napi_key_env = "E2E_LLM_KEY"\n'
        path = tmp_path / "profiles.toml"
        path.write_text(toml)
        with serve({"WORKER_RUNTIME_PROFILES": str(path), "E2E_LLM_KEY": key}) as server:
            worker = create(server, "llm")
            sent = server.request("POST", f"/v1/workers/{worker}/input", {"content": "hi there"})
            assert wait_run_end(server, sent.json()["ack"]["run_id"])["type"] == "run_completed"
            page = server.request("GET", f"/v1/workers/{worker}/transcript").json()
            items = page["transcript"]["items"]
            assert "".join(e["content"] for e in items if e["role"] == "assistant") == (
                "you said: hi there"
            )
            assert stub.requests[0].headers["authorization"] == f"Bearer {key}"

            # The endpoint echoes the key in its error: it is masked everywhere.
            bad = create(server, "llm-bad-key")
            sent = server.request("POST", f"/v1/workers/{bad}/input", {"content": "hi"})
            end = wait_run_end(server, sent.json()["ack"]["run_id"])
            assert end["type"] == "run_failed"
            assert end["data"]["error"].endswith("Incorrect API key provided: Bearer ***")
            for route in ("/v1/events?limit=1000", "/v1/diagnostics", f"/v1/workers/{bad}"):
                assert key.encode() not in server.request("GET", route).body
        assert key.encode() not in server.stderr
