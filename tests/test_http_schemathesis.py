"""schemathesis against the OpenAPI document the real server serves.

Runs in ``tox -e schemathesis`` (CI uses a small example budget, set with
``SCHEMATHESIS_MAX_EXAMPLES``); skipped where schemathesis is not installed,
as in the main test env. The checks: no server error, every response matches
its documented schema, status, content type and headers, and documented-invalid
requests are refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .support.server import TOKEN, serve

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
    ]
)
EXECUTABLE = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which(
    "schemathesis"
)


@pytest.mark.skipif(
    EXECUTABLE is None, reason="schemathesis is not installed (tox -e schemathesis)"
)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    assert EXECUTABLE is not None, "schemathesis is not installed"
    budget = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10")
    # Long-polls are capped at 1 s (the document's maximum follows), so generated
    # waits do not stretch the run.
    with serve({"WORKER_RUNTIME_MAX_EVENT_WAIT_S": "1"}) as server:
        result = subprocess.run(
            [
                EXECUTABLE,
                "run",
                f"{server.base_url}/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                budget,
                "--request-timeout",
                "40",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "NO_COLOR": "1"},
            cwd=tmp_path,  # schemathesis keeps a cache directory in its working directory
        )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report
