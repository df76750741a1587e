"""The README's in-process section runs: every ``python`` block is executed in
order in one namespace, and a ``text`` block right after one is its expected
output (``...`` matches any text, e.g. a generated id)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.timeout(60)


def section(name: str) -> str:
    text = README.read_text("utf-8")
    match = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.DOTALL)
    assert match, f"README.md has no {name} section"
    return match.group(1)


def examples(text: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each python block."""
    fences = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    pairs = []
    for i, (lang, body) in enumerate(fences):
        if lang == "python":
            following = fences[i + 1] if i + 1 < len(fences) else None
            pairs.append((body, following[1] if following and following[0] == "text" else None))
    return pairs


def matches(expected: str, actual: str) -> bool:
    pattern = ".+?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def test_the_in_process_example_runs_and_prints_what_the_readme_says() -> None:
    blocks = examples(section("in-process"))
    assert len(blocks) >= 3, "the in-process section lost its examples"
    namespace: dict[str, object] = {"__name__": "readme"}
    try:
        for number, (code, expected) in enumerate(blocks, 1):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"README.md in-process block {number}", "exec"), namespace)
            if expected is not None:
                assert matches(expected, out.getvalue()), (
                    f"block {number} printed:\n{out.getvalue()}\nthe README says:\n{expected}"
                )
    finally:
        rt = namespace.get("rt")
        close = getattr(rt, "close", None)
        if callable(close):
            close()


def test_the_output_matcher_is_not_an_accept_all() -> None:
    assert matches("Scout@rt-... 2\n", "Scout@rt-abc123 2\n")
    assert not matches("Scout@rt-... 2\n", "Scout@rt-abc123 3\n")
    assert not matches("idle\n", "running\n")
