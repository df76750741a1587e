"""The README's in-process section runs: every ``python`` block is executed in
order in one namespace, and a ``text`` block right after one is its expected
output (``...`` matches any text, e.g. a generated id)."""

from __future__ import annotations

import pytest

from .support.helpers import examples, matches, run_examples, section

pytestmark = pytest.mark.timeout(60)


def test_the_in_process_example_runs_and_prints_what_the_readme_says() -> None:
    blocks = examples(section("in-process"))
    assert len(blocks) >= 3, "the in-process section lost its examples"
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        run_examples(blocks, "in-process", namespace)
    finally:
        rt = namespace.get("rt")
        close = getattr(rt, "close", None)
        if callable(close):
            close()


def test_the_output_matcher_is_not_an_accept_all() -> None:
    assert matches("Scout@rt-... 2\n", "Scout@rt-abc123 2\n")
    assert not matches("Scout@rt-... 2\n", "Scout@rt-abc123 3\n")
    assert not matches("idle\n", "running\n")
