"""The HTTP documentation: the README's curl walkthrough runs against a real server,
``docs/http-api.md`` names every error code, ``docs/operations.md`` every variable,
and every ``waitress-serve`` line anywhere passes enough threads."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from adapters.cli import build_parser
from adapters.settings import CLIENT_VARIABLES, known_variables
from worker_runtime import RuntimeConfig
from worker_runtime.config import ENV_PREFIX

from .support.helpers import section
from .support.http_helpers import SPEC_CODES
from .support.server import TOKEN, Server, serve

ROOT = Path(__file__).resolve().parent.parent
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def serve_parser() -> argparse.ArgumentParser:
    """The ``worker-runtime serve`` sub-command's parser."""
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = commands.choices["serve"]
    return parser


def http_section() -> str:
    return section("http", "docs/http-api.md")


def every_document() -> str:
    return "\n".join(
        p.read_text("utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    )


def test_says_browsers_go_through_the_backend() -> None:
    assert "Browsers must go through the Backend" in http_section()


def test_waitress_command_passes_threads() -> None:
    commands = [b for b in SH_BLOCK.findall(every_document()) if "waitress-serve" in b]
    assert len(commands) >= 2, "the README and http-api.md both start waitress-serve"
    assert commands and all("--threads=16" in b for b in commands)


def test_waitress_command_bounds_connections_and_bodies() -> None:
    commands = [b for b in SH_BLOCK.findall(every_document()) if "waitress-serve" in b]
    for flag in ("--connection-limit=", "--channel-timeout=", "--max-request-body-size="):
        assert commands and all(flag in b for b in commands), flag


def test_configuration_table_names_every_variable() -> None:
    section_text = section("configuration", "docs/operations.md")
    renamed = {"runtime_id": "ID", "display_name": "NAME", "profiles_path": "PROFILES"}
    core = {renamed.get(f.name, f.name.upper()) for f in dataclasses.fields(RuntimeConfig)}
    for suffix in core | {"TOKEN", "TOKEN_FILE", "MAX_BODY_BYTES"}:
        assert f"`{ENV_PREFIX}{suffix}`" in section_text, suffix
    # Every variable the server reads, from the list its unknown-variable warning
    # uses (a hand-kept list missed the waitress limits added later), and no other.
    table = set(re.findall(r"^\| `(WORKER_RUNTIME_\w+)` \|", section_text, re.MULTILINE))
    assert table == known_variables() - CLIENT_VARIABLES


def test_configuration_table_names_every_serve_flag() -> None:
    section_text = section("configuration", "docs/operations.md")
    flags = {
        option
        for action in serve_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    table = set(re.findall(r"^\|[^|\n]*\| `(--[\w-]+)` \|", section_text, re.MULTILINE))
    assert table == flags


def test_error_table_names_every_code_with_its_status() -> None:
    rows = re.findall(r"^\| (\d{3}) \| (.+?) \|", http_section(), re.MULTILINE)
    listed = {
        (int(status), code) for status, codes in rows for code in re.findall(r"`(\w+)`", codes)
    }
    for status, codes in SPEC_CODES.items():
        for code in codes:
            assert (status, code) in listed, (status, code)


def wait_for_idle(server: Server, worker_id: str) -> None:
    """Long-poll the event log until the worker's run has ended (a reader would
    have watched the events too)."""
    cursor = 0
    for _ in range(20):
        page = server.request("GET", f"/v1/events?cursor={cursor}&wait=5").json()
        for event in page["events"]:
            if event["type"] == "run_completed" and event["worker_ref"]["worker_id"] == worker_id:
                return
        cursor = page["cursor"]["next_event_id"]
    raise AssertionError("the walkthrough's run never completed")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_walkthrough_runs(tmp_path: Path) -> None:
    blocks = [b for b in SH_BLOCK.findall(section("curl")) if "curl " in b]
    assert len(blocks) >= 4, "the walkthrough lost its examples"
    out = []
    with serve() as server:
        base = f"http://127.0.0.1:{server.port}"
        env = {
            "PATH": "/usr/bin:/bin",
            "WORKER_RUNTIME_TOKEN": TOKEN,
            "BASE": base,
            "AUTH": f"Authorization: Bearer {TOKEN}",
        }
        for block in blocks:
            result = subprocess.run(
                [
                    "bash",
                    "-c",
                    "set -euo pipefail\n" + block.replace("http://127.0.0.1:8780", base),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert result.returncode == 0, (block, result.stderr)
            out.append(result.stdout)
            if "/input" in block:
                wait_for_idle(server, "scout-1")
    text = "\n".join(out)
    assert '"worker_id":"scout-1"' in text
    assert '"role":"assistant","content":"hello"' in text
    assert '"status":"stopped"' in text
