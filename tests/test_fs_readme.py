"""The README's stores section runs as written (its example uses a temp directory)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest

from .test_readme import examples, matches, section

pytestmark = pytest.mark.timeout(60)


def test_the_stores_example_runs_and_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its mkdtemp() lands here
    blocks = examples(section("stores"))
    assert blocks, "the stores section lost its example"
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, (code, expected) in enumerate(blocks, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md stores block {number}", "exec"), namespace)
        if expected is not None:
            assert matches(expected, out.getvalue()), (
                f"block {number} printed:\n{out.getvalue()}\nthe README says:\n{expected}"
            )
