"""Test helpers: run the examples of the README and of ``docs/*.md`` and check what
they print.

(Waiting on events and the state lock are in ``worker_runtime.testing``.)"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# -- README and docs examples -----------------------------------------------------------


def section(name: str, document: str = "README.md") -> str:
    """The text between ``<!-- section:NAME -->`` markers of ``document`` (a path
    from the repository root, e.g. ``docs/stores.md``)."""
    text = (ROOT / document).read_text("utf-8")
    match = re.search(rf"<!-- section:{name} -->(.*?)<!-- /section:{name} -->", text, re.DOTALL)
    assert match, f"{document} has no {name} section"
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
    blocks: list[tuple[str, str | None]],
    name: str,
    namespace: dict[str, object],
    document: str = "README.md",
) -> None:
    """Execute ``blocks`` (from :func:`examples` of section ``name`` of ``document``)
    in order in ``namespace``; each one's stdout must match its expected output, if
    it has one."""
    for number, (code, expected) in enumerate(blocks, 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{document} {name} block {number}", "exec"), namespace)
        if expected is not None:
            assert matches(expected, out.getvalue()), (
                f"block {number} printed:\n{out.getvalue()}\n{document} says:\n{expected}"
            )
