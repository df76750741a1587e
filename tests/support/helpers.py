"""Test helpers: run the README's examples and check what they print.

(Waiting on events and the state lock are in ``worker_runtime.testing``.)"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# -- README examples --------------------------------------------------------------------


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


def run_examples(
    blocks: list[tuple[str, str | None]], name: str, namespace: dict[str, object]
) -> None:
    """Execute ``blocks`` (from :func:`examples` of section ``name``) in order in
    ``namespace``; each one's stdout must match its expected output, if it has one."""
    for number, (code, expected) in enumerate(blocks, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md {name} block {number}", "exec"), namespace)
        if expected is not None:
            assert matches(expected, out.getvalue()), (
                f"block {number} printed:\n{out.getvalue()}\nthe README says:\n{expected}"
            )
