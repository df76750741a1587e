"""The in-process examples run: the README's one example, then every ``python`` block
of ``docs/library.md``'s two sections, each executed in order in one namespace; a ``text`` block
right after one is its expected output (``...`` matches any text, e.g. a generated id)."""

from __future__ import annotations

import pytest

from .support.helpers import examples, matches, run_examples, section

pytestmark = pytest.mark.timeout(60)


def run_closing_rt(name: str, document: str, minimum: int) -> None:
    blocks = examples(section(name, document))
    assert len(blocks) >= minimum, f"the {name} section of {document} lost its examples"
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        run_examples(blocks, name, namespace, document)
    finally:
        rt = namespace.get("rt")
        close = getattr(rt, "close", None)
        if callable(close):
            close()


def test_the_readme_example_runs_and_prints_what_the_readme_says() -> None:
    run_closing_rt("in-process", "README.md", 1)


def test_the_in_process_examples_run_and_print_what_the_docs_say() -> None:
    run_closing_rt("in-process", "docs/library.md", 3)


def test_the_runs_examples_run_and_print_what_the_docs_say() -> None:
    run_closing_rt("runs", "docs/library.md", 3)


def test_the_output_matcher_is_not_an_accept_all() -> None:
    assert matches("Scout@rt-... 2\n", "Scout@rt-abc123 2\n")
    assert not matches("Scout@rt-... 2\n", "Scout@rt-abc123 3\n")
    assert not matches("idle\n", "running\n")
