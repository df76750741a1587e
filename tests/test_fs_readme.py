"""The stores page (``docs/stores.md``) runs as written (its example uses a temp directory)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .support.helpers import examples, run_examples, section

pytestmark = pytest.mark.timeout(60)


def test_the_stores_example_runs_and_prints_what_the_docs_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its mkdtemp() lands here
    blocks = examples(section("stores", "docs/stores.md"))
    assert blocks, "the stores section lost its example"
    namespace: dict[str, object] = {"__name__": "readme"}
    run_examples(blocks, "stores", namespace, "docs/stores.md")
